"""Fault injection: a whole tiny pipeline (tests/pipeline_run.py) killed at random moments and
rerun ends bit-identical to an uninterrupted run. Its own module so that a parallel test run can
place it beside the demo pipeline tests."""

import json
import os
import sys
import time

import jax
import numpy as np


def _final_artefacts(wd):
    """Every final artefact of tests/pipeline_run.py's workdir, as comparable values."""
    from safetensors.numpy import load_file

    from rise_jax.training.artefacts import load_trained_experts

    stats = np.load(os.path.join(wd, "routing_stats", "stats.npz"))
    experts = load_trained_experts(os.path.join(wd, "train"))
    return {
        "stats": {k: stats[k].tobytes() for k in stats.files},
        "analysis": json.load(open(os.path.join(wd, "analysis", "analysis.json"))),
        "selection": json.load(open(os.path.join(wd, "selection.json"))),
        "experts": [np.asarray(a).tobytes() for a in jax.tree_util.tree_leaves(experts)],
        "export": {k: v.tobytes() for k, v in load_file(os.path.join(wd, "export", "hf", "model.safetensors")).items()},
        "eval": json.load(open(os.path.join(wd, "eval", "results.json")))["results"],
    }


def test_killed_at_random_moments_a_rerun_ends_bit_identical_to_an_uninterrupted_run(tmp_path):
    """kill -9 at a random moment of a whole tiny pipeline, then the same command again: every
    final artefact equals an uninterrupted run's, bit for bit, and nothing temporary is left."""
    import random
    import signal
    import subprocess

    from fixture_data import TINY_VOCAB
    from hf_reference import make_hf_model, save_hf_model

    ckpt = save_hf_model(
        make_hf_model("qwen3_moe", seed=9, vocab_size=TINY_VOCAB, hidden_size=32, num_hidden_layers=4),
        str(tmp_path / "ckpt"),
    )
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pipeline_run.py")
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}

    def run(wd, kill_after=None):
        proc = subprocess.Popen(
            [sys.executable, script, ckpt, wd], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        if kill_after is not None:
            time.sleep(kill_after)
            proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=600)
        if kill_after is None:
            assert proc.returncode == 0, err[-3000:]

    reference = str(tmp_path / "reference")
    t0 = time.perf_counter()
    second_launch_refused(reference, ckpt, run)
    duration = time.perf_counter() - t0
    want = _final_artefacts(reference)  # the first launch's results, intact beside the refused second
    for seed in (0, 1):
        wd = str(tmp_path / f"killed{seed}")
        run(wd, kill_after=random.Random(seed).uniform(0.15, 0.85) * duration)
        run(wd)
        got = _final_artefacts(wd)
        for key in want:
            assert got[key] == want[key], (seed, key)
        left = [os.path.join(d, n) for d, dirs, _ in os.walk(wd) for n in dirs if ".tmp-" in n or n == "kept"]
        assert not left, left


def second_launch_refused(wd, ckpt, run):
    """Run the pipeline in ``wd`` (a process of its own) and, while it runs, launch it again in
    this process: the second launch is refused in one line naming the first, touching nothing."""
    import threading

    import pytest
    from pipeline_run import config

    from rise_jax import launch
    from rise_jax.workdir_lock import WorkdirBusy, lock_path

    first = threading.Thread(target=run, args=(wd,))
    first.start()
    deadline = time.time() + 300
    holder = {}
    while first.is_alive() and time.time() < deadline and not holder:
        try:
            holder = json.load(open(lock_path(wd)))
        except (OSError, ValueError):
            time.sleep(0.05)
    assert holder, "the first launch never took the workdir lock"
    with pytest.raises(WorkdirBusy, match=f"in use by process {holder['pid']} on host "):
        launch.run(config(ckpt), wd)
    first.join()
