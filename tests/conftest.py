"""Session-wide test set-up: JAX's persistent compilation cache for the run, shared tiny checkpoints.

The tests build many tiny models whose programs are the same HLO again and again (every test that
loads a fresh model object re-traces it; every ``python -m rise_jax.launch`` subprocess starts with
an empty in-memory cache), so one on-disk compilation cache for the whole run — this process,
pytest-xdist workers and the subprocesses the tests start, which inherit the environment — turns
most compilations after the first into a read. The cache lives in a temporary directory made for
the run (or ``RISE_JAX_TEST_JAX_CACHE`` when set, to keep one across runs) and never changes a
result: a cached executable is the one XLA would compile again.
"""

import os
import shutil
import sys
import tempfile

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # set before anything imports jax
    _OWN_CACHE = os.environ.get("RISE_JAX_TEST_JAX_CACHE") or tempfile.mkdtemp(prefix="rise_jax_test_jax_cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
    if os.environ.get("RISE_JAX_TEST_JAX_CACHE"):
        _OWN_CACHE = None  # the user's: kept
else:
    _OWN_CACHE = None  # a cache set by the caller (or by the xdist controller): not ours to remove

# XLA's LLVM code generation at -O0 for the run (and, through the environment, the subprocesses
# the tests start; those that set XLA_FLAGS append to it): the suite's tiny models spend their time
# compiling, not running, and -O0 compiles a whole tiny pipeline in about 60 % of the time (a CLI
# pipeline test: 30 s -> 19 s). The HLO programs, their fusion and every library call (matmuls)
# are the same; only the generated loops differ, by floating-point round-off (measured on a tiny
# Qwen3-MoE: logits 1.5e-7, routing weights 1.2e-7, gradients 7.6e-6 of 80 apart from the default
# build), far inside every tolerance against HF, and the suite's bitwise comparisons are between
# programs built alike (subprocesses inherit the flag). RISE_JAX_TEST_FULL_OPT=1 keeps XLA's default.
# Tests that run their programs many times compile at -O1 instead (marker `runs_long`,
# tests/compile_level.py).
#
# XLA's CPU loop emitters instead of its MLIR fusion emitters (--xla_cpu_use_fusion_emitters=false)
# for the same reason: a tiny model's backend compilation takes about a third of the time (a CLI
# pipeline test: 15.2 s -> 4.6 s of compilation; a tiny Mixtral's gradient: 2.0 s -> 1.0 s), the
# fused computations are the same, and only the generated loops differ.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compile_level import FAST_COMPILE, optimized  # noqa: E402

if not os.environ.get("RISE_JAX_TEST_FULL_OPT"):
    _flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = " ".join([_flags, *(f for f in FAST_COMPILE if f.split("=")[0] not in _flags)]).strip()

# The file-hash memo (rise_jax.content_hash) of the run: the user's own ~/.cache is left alone.
if "RISE_JAX_CACHE" not in os.environ:
    os.environ["RISE_JAX_CACHE"] = tempfile.mkdtemp(prefix="rise_jax_test_hash_memo-")
    _OWN_MEMO = os.environ["RISE_JAX_CACHE"]
else:
    _OWN_MEMO = None

import pytest  # noqa: E402
from hf_reference import make_hf_model, save_hf_model  # noqa: E402


def pytest_unconfigure(config):
    """Remove the run's compilation cache and hash memo (only the process that made them)."""
    if _OWN_CACHE and not hasattr(config, "workerinput"):
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)
    if _OWN_MEMO and not hasattr(config, "workerinput"):
        shutil.rmtree(_OWN_MEMO, ignore_errors=True)


def pytest_configure(config):
    # pytest's unraisable-exception plugin runs gc.collect() five times when the session ends, to
    # find exceptions raised in __del__; with JAX's and torch's heaps each pass takes over a second
    # here (7 s per worker at the end of the run). One pass: an exception in the __del__ of an
    # object only a later pass would free goes unreported (none seen in this suite).
    try:
        from _pytest.unraisableexception import gc_collect_iterations_key
    except ImportError:  # another pytest: its own default
        pass
    else:
        config.stash[gc_collect_iterations_key] = 1
    config.addinivalue_line(
        "markers",
        "runs_long: runs its programs many times (training loops): compiled at XLA's -O1, not the suite's -O0 "
        "(tests/compile_level.py)",
    )


@pytest.fixture(autouse=True)
def _runs_long_compiles_at_o1(request):
    """A test marked ``runs_long`` compiles at -O1 in this process (its subprocesses: pass them
    ``compile_level.runs_long_env()``)."""
    if request.node.get_closest_marker("runs_long") is None:
        yield
        return
    with optimized():
        yield


@pytest.fixture(scope="session")
def qwen_dir(tmp_path_factory):
    """A tiny Qwen3-MoE checkpoint in hub layout."""
    return save_hf_model(make_hf_model("qwen3_moe"), str(tmp_path_factory.mktemp("qwen")))


@pytest.fixture(scope="session")
def phi_dir(tmp_path_factory):
    """A tiny PhiMoE checkpoint in hub layout."""
    return save_hf_model(make_hf_model("phimoe"), str(tmp_path_factory.mktemp("phi")))
