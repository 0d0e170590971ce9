"""XLA's backend optimisation level for the suite: -O0 for what compiles much, -O1 for what runs long.

The suite's tiny models spend most of their time compiling, so ``tests/conftest.py`` builds every
program at ``--xla_backend_optimization_level=0``. A few tests run their programs many times (the
demo's pretraining and training loops, multi-process training): there the unoptimised loops cost
more than the compile time they save. Measured on the test-size demo's training step (8 layers x
16 experts, 8 x 64 tokens): 244 ms per step at -O0, 69 ms at -O1, 65 ms at XLA's default; its
first call (trace + compile + run) 2.1 s, 2.8 s and 5.1 s. So such tests compile at -O1:

* in this process, inside :func:`optimized` (tests marked ``runs_long``, and module fixtures that
  wrap their work in it), and
* in the subprocesses they start, through :func:`runs_long_env`.

Either way only the generated loops differ, by floating-point round-off, and the persistent
compilation cache keys programs by their compile options, so the two builds never share an entry.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

FAST_COMPILE = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")
RUNS_LONG_LEVEL = 1


@contextlib.contextmanager
def optimized(level: int = RUNS_LONG_LEVEL) -> Iterator[None]:
    """Compile at XLA's backend optimisation ``level`` inside the block (this process).

    JAX builds every compilation's options in ``jax._src.compiler.get_compile_options`` (a
    private function: the one place to set a debug option per compilation, since XLA reads
    ``XLA_FLAGS`` once at start-up); the block wraps it. Programs compiled before the block and
    cached in memory keep their level. A no-op unless this process compiles at -O0 (the suite's
    default; ``RISE_JAX_TEST_FULL_OPT=1`` keeps XLA's own level everywhere)."""
    if not _at_o0():
        yield
        return
    from jax._src import compiler

    original = compiler.get_compile_options

    def with_level(*args, **kwargs):
        options = original(*args, **kwargs)
        options.executable_build_options.debug_options.xla_backend_optimization_level = level
        return options

    compiler.get_compile_options = with_level
    try:
        yield
    finally:
        compiler.get_compile_options = original


def runs_long_env(level: int = RUNS_LONG_LEVEL) -> dict[str, str]:
    """This process's environment with ``XLA_FLAGS`` at backend optimisation ``level`` (for a
    subprocess that runs long); the loop emitters and any other flag are kept. Unchanged unless
    this process compiles at -O0."""
    if not _at_o0():
        return dict(os.environ)
    key = "--xla_backend_optimization_level"
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if f.split("=")[0] != key]
    return {**os.environ, "XLA_FLAGS": " ".join([*flags, f"{key}={level}"])}


def _at_o0() -> bool:
    return FAST_COMPILE[0] in os.environ.get("XLA_FLAGS", "").split()
