"""The suite's per-test XLA level (tests/compile_level.py): -O1 inside ``optimized()`` and in
``runs_long_env()``, the run's own level outside."""

import os

import jax
import jax.numpy as jnp
import pytest
from compile_level import FAST_COMPILE, optimized, runs_long_env
from jax._src import compiler

LEVEL = "--xla_backend_optimization_level"
pytestmark = pytest.mark.skipif(
    FAST_COMPILE[0] not in os.environ.get("XLA_FLAGS", "").split(), reason="the run keeps XLA's default level"
)


def _level() -> int:
    return compiler.get_compile_options(1, 1).executable_build_options.debug_options.xla_backend_optimization_level


def test_optimized_compiles_at_o1_inside_the_block_only_and_the_environment_says_so():
    assert _level() == 0
    with optimized():
        assert _level() == 1
        assert float(jax.jit(lambda x: jnp.sin(x) * 2)(jnp.float32(1.0))) == pytest.approx(2 * 0.8414709848)
    assert _level() == 0
    flags = runs_long_env()["XLA_FLAGS"].split()
    assert f"{LEVEL}=1" in flags and not any(f.startswith(f"{LEVEL}=0") for f in flags)
    assert FAST_COMPILE[1] in flags  # the loop emitters stay


@pytest.mark.runs_long
def test_a_runs_long_test_compiles_at_o1():
    assert _level() == 1
