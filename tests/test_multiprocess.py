"""A multi-process job equals one process (issue: multi-host for real). The tiny whole pipeline
(stats -> analyze -> select -> train -> export -> eval -> report, ``tests/multiprocess_config.py``)
runs through the CLI as 1 process x 4 CPU devices and as 2 processes x 2 CPU devices joined by
JAX's distributed runtime (gloo), with the same (data 2 x model 2) mesh: the 2-process job is
SIGKILLed (both processes) during training and relaunched, and must end where the uninterrupted
one-process run does. Then: a process that fails validation, and a process killed mid-stage,
end the job with a non-zero status and the failing process's error, in bounded time."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from fixture_data import TINY_VOCAB
from hf_reference import make_hf_model, save_hf_model
from safetensors.numpy import load_file

from rise_jax.training.artefacts import load_trained_experts

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
SCRIPT = os.path.join(ROOT, "launch", "local_processes.sh")
CONFIG = os.path.join(TESTS, "multiprocess_config.py")


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COORDINATOR", "JAX_NUM_PROC", "JAX_PROCESS"))}
    env.update(JAX_PLATFORMS="cpu", PYTHON=sys.executable, RISE_JAX_GRACE="2", **extra)
    return env


def _job(ckpt, wd, *args, **env):
    """``launch/local_processes.sh 2 ...`` started in its own session (so that a test can kill it whole)."""
    return subprocess.Popen(
        ["bash", SCRIPT, "2", f"{CONFIG}:{ckpt}", wd, *args],
        cwd=ROOT,
        env=_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    model = make_hf_model("qwen3_moe", seed=9, vocab_size=TINY_VOCAB, hidden_size=32, num_hidden_layers=4)
    return save_hf_model(model, str(tmp_path_factory.mktemp("mp_ckpt")))


def _records(wd):
    return {s: json.load(open(os.path.join(wd, ".rise", f"{s}.json"))) for s in ("stats", "train", "eval", "report")}


def test_two_processes_killed_in_training_and_relaunched_end_equal_to_one_process(ckpt, tmp_path):
    one = str(tmp_path / "one")
    r = subprocess.run(
        [sys.executable, "-m", "rise_jax.launch", f"--config={CONFIG}:{ckpt}", f"--workdir={one}"],
        cwd=ROOT,
        env=_env(XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]

    two = str(tmp_path / "two")
    job = _job(ckpt, two)
    ckpts = os.path.join(two, "train", "checkpoints")
    deadline = time.time() + 400
    while time.time() < deadline and job.poll() is None:  # the first finished checkpoint: kill both
        if os.path.isdir(ckpts) and any(d.isdigit() and int(d) >= 2 for d in os.listdir(ckpts)):
            break
        time.sleep(0.05)
    assert job.poll() is None, job.communicate()[1][-3000:]
    os.killpg(job.pid, signal.SIGKILL)
    job.wait(timeout=30)
    killed = json.load(open(os.path.join(two, ".rise", "train.json")))
    assert killed["status"] == "running"  # killed inside training, not after it
    killed_at = max(int(d) for d in os.listdir(ckpts) if d.isdigit())
    assert killed_at < 18

    job = _job(ckpt, two)
    out, err = job.communicate(timeout=600)
    assert job.returncode == 0, err[-3000:]
    assert "[1/7 stats] up to date" in out and "[4/7 train] resuming an unfinished run" in out
    # Process 0 alone shows the run's messages, each once (the other processes' go nowhere).
    assert out.count("[4/7 train] done") == out.count("[7/7 report] done") == 1
    steps = [json.loads(x)["step"] for x in open(os.path.join(two, "train", "metrics.jsonl")) if '"loss"' in x]
    assert steps == list(range(1, 19))  # resumed after killed_at; no row twice (one writer)

    # Statistics: equal up to fp32 summation order (measured: bitwise on this machine).
    a, b = (
        np.load(os.path.join(one, "routing_stats", "stats.npz")),
        np.load(os.path.join(two, "routing_stats", "stats.npz")),
    )
    assert a.files == b.files
    for key in a.files:
        if a[key].dtype.kind in "iu" or a[key].dtype.kind in "US":
            assert np.array_equal(a[key], b[key]), key
        else:
            np.testing.assert_allclose(b[key], a[key], rtol=1e-6, atol=1e-6, err_msg=key)
    sel = [json.load(open(os.path.join(w, "selection.json"))) for w in (one, two)]
    assert sel[0]["experts"] == sel[1]["experts"]
    ta, tb = load_trained_experts(os.path.join(one, "train")), load_trained_experts(os.path.join(two, "train"))
    for x, y in zip(jax.tree_util.tree_leaves(ta.slots), jax.tree_util.tree_leaves(tb.slots), strict=True):
        assert np.array_equal(x, y)
    for x, y in zip(jax.tree_util.tree_leaves(ta.weights), jax.tree_util.tree_leaves(tb.weights), strict=True):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=0, atol=1e-5)
    configs = [json.load(open(os.path.join(w, "export", "hf", "config.json"))) for w in (one, two)]
    assert configs[0] == configs[1]  # written once, by process 0, as one process writes it
    ea, eb = (load_file(os.path.join(w, "export", "hf", "model.safetensors")) for w in (one, two))
    assert sorted(ea) == sorted(eb)
    for name in ea:
        np.testing.assert_allclose(eb[name], ea[name], rtol=0, atol=1e-5, err_msg=name)
    ra, rb = (json.load(open(os.path.join(w, "eval", "results.json")))["results"] for w in (one, two))
    assert ra.keys() == rb.keys() == {"base", "trained"}
    for variant, tasks in ra.items():
        for task, langs in tasks.items():
            for lang, scores in langs.items():
                other = rb[variant][task][lang]
                for metric, value in scores.items():
                    if isinstance(value, float):
                        assert other[metric] == pytest.approx(value, rel=1e-6), (variant, task, lang, metric)
                    elif metric != "generations":
                        assert other[metric] == value
                if "generations" in scores:  # the generated text, row for row
                    ga, gb = (open(os.path.join(w, s["generations"])).read() for w, s in ((one, scores), (two, other)))
                    assert ga == gb
    # One writer: each record written once per stage run, no temp file left anywhere.
    assert all(r["status"] == "done" for r in _records(two).values())
    leftovers = [os.path.join(d, f) for d, _, fs in os.walk(two) for f in fs if ".tmp" in f]
    assert leftovers == []


def test_a_process_that_fails_validation_ends_the_job_with_its_error(ckpt, tmp_path):
    t0 = time.time()
    job = _job(ckpt, str(tmp_path / "wd"), RISE_JAX_TEST_BROKEN_PROCESS="1")
    out, err = job.communicate(timeout=300)
    assert job.returncode != 0
    assert time.time() - t0 < 120
    assert "[process 1] error: process 1/2: " in err and "missing_on_this_host" in err
    assert "[process 0] error: process 0/2: process 1 failed validation: " in err
    assert not os.path.exists(os.path.join(tmp_path, "wd", ".rise", "stats.json"))  # no work started


def test_a_process_killed_mid_stage_ends_the_others(ckpt, tmp_path):
    """No launcher script here: two processes started by hand, process 1 killed while the stats
    stage runs (a lost host); process 0 must stop on its own, with an error, in bounded time."""
    wd = str(tmp_path / "wd")
    port = subprocess.run(
        [
            sys.executable,
            "-c",
            "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])",
        ],
        capture_output=True,
        text=True,
    ).stdout.strip()
    procs = []
    for i in range(2):
        env = _env(
            JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
            JAX_NUM_PROCESSES="2",
            JAX_PROCESS_ID=str(i),
            XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2",
        )
        cmd = [sys.executable, "-m", "rise_jax.launch", f"--config={CONFIG}:{ckpt}", f"--workdir={wd}"]
        procs.append(
            subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    record = os.path.join(wd, ".rise", "stats.json")
    deadline = time.time() + 300
    while not os.path.exists(record) and time.time() < deadline and procs[0].poll() is None:
        time.sleep(0.05)
    procs[1].kill()
    t0 = time.time()
    out, err = procs[0].communicate(timeout=180)
    assert procs[0].returncode not in (0, None)
    assert time.time() - t0 < 120
    assert "error: process 0/2: " in err, err[-3000:]


# -- cheap checks of the parts ------------------------------------------------------------------


def test_importing_the_package_starts_no_backend():
    """``jax.distributed.initialize`` must run before any backend starts: importing the launcher,
    the pipeline and every stage must not start one (a class default once asked for the backend)."""
    code = (
        "import rise_jax.launch, rise_jax.pipeline, rise_jax.stages, rise_jax.api\n"
        "from jax._src import xla_bridge\n"
        "assert not xla_bridge.backends_are_initialized()\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.parametrize(
    "env, message",
    [
        ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, "JAX_NUM_PROCESSES, JAX_PROCESS_ID are not set"),
        ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"}, "must be in [0, "),
        ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"}, "whole numbers"),
        ({"JAX_COORDINATOR_ADDRESS": "h", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}, "host:port"),
    ],
)
def test_a_half_described_job_is_refused_naming_the_variable(env, message):
    from rise_jax.distributed import DistributedError, job_from_environment

    with pytest.raises(DistributedError, match=message.replace("[", r"\[")):
        job_from_environment(env)


def test_the_job_is_read_from_the_environment():
    from rise_jax.distributed import Job, job_from_environment

    generic = {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    assert job_from_environment(generic) == Job("generic", "h:1", 4, 3)
    assert job_from_environment({**generic, "JAX_NUM_PROCESSES": "1", "JAX_PROCESS_ID": "0"}) is None
    assert job_from_environment({"SLURM_NTASKS": "8"}) == Job("slurm")
    assert job_from_environment({"SLURM_NTASKS": "8", "SLURM_STEP_NUM_TASKS": "1"}) is None
    assert job_from_environment({"TPU_WORKER_HOSTNAMES": "a,b"}) == Job("tpu")
    assert job_from_environment({}) is None


def test_a_process_that_is_not_the_writer_writes_nothing(tmp_path, monkeypatch):
    """What keeps a multi-process job's artefacts single: every writer asks ``is_writer``."""
    import rise_jax.distributed as distributed
    from rise_jax import io_utils
    from rise_jax.reporting import plots
    from rise_jax.routing.stats import RoutingStats

    monkeypatch.setattr(distributed, "process_index", lambda: 1)
    assert not distributed.is_writer()
    src = tmp_path / "src.txt"
    src.write_text("x")
    io_utils.write_text_atomic(str(tmp_path / "a.txt"), "a")
    io_utils.write_json_atomic(str(tmp_path / "b.json"), {"b": 1})
    io_utils.write_jsonl_atomic(str(tmp_path / "c.jsonl"), [1])
    io_utils.copy_atomic(str(src), str(tmp_path / "d.txt"))
    tmp = tmp_path / "t.tmp"
    tmp.write_text("t")
    io_utils.publish(str(tmp), str(tmp_path / "e.txt"))
    plots.overlap_heatmap(np.eye(2), ["a", "b"], str(tmp_path / "f.png"), "t")
    ones = np.ones((1, 2, 4))
    stats = RoutingStats(["en"], ones.astype(np.int64), np.ones(1, np.int64), ones, ones, np.ones((1, 2)), {})
    stats.save(str(tmp_path / "stats"))
    assert sorted(os.listdir(tmp_path)) == ["src.txt"]


def test_a_bad_heartbeat_timeout_is_refused_before_the_job_starts():
    from rise_jax.distributed import DistributedError, initialize

    job = {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}
    with pytest.raises(DistributedError, match="RISE_JAX_HEARTBEAT_TIMEOUT='soon'"):
        initialize({**job, "RISE_JAX_HEARTBEAT_TIMEOUT": "soon"})
