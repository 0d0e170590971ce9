"""bench/gpu_suite.py: its smoke mode runs every part at tiny sizes on the CPU (so the GPU script
cannot rot between GPU sessions), and its runner reports a failing or overrunning part and goes on."""

import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))

import gpu_suite  # noqa: E402


def test_the_gpu_suites_smoke_mode_runs_every_part(tmp_path):
    # Two full-size step parts left out for time: their code runs in the others (frozen bf16 in
    # rise_lora and lora, the expert masters in step_int8); `--smoke` from the command line runs all.
    skip = ("step_bfloat16", "step_float8_e4m3fn")
    doc = gpu_suite.main(["--smoke", "--out", str(tmp_path), "--skip", ",".join(skip)])
    ran = [n for n in gpu_suite.PARTS if n not in skip]
    assert {name: rec["status"] for name, rec in doc["parts"].items()} == dict.fromkeys(ran, "ok")
    assert json.loads((tmp_path / "gpu_suite.json").read_text())["parts"].keys() == doc["parts"].keys()
    rows = {name: rec["rows"] for name, rec in doc["parts"].items()}
    assert doc["parts"]["env"]["notes"]["backend"] == "cpu" and "cpu" in doc["parts"]["env"]["notes"]

    # Parity on the CPU against HF: fp32 to round-off, bf16 to its precision, two families.
    assert {(r["family"], r["dtype"]) for r in rows["parity"]} == {
        (f, d) for f in ("qwen3_moe", "deepseek_v2") for d in ("float32", "bfloat16")
    }
    for r in rows["parity"]:
        assert r["rel_max_error"] < (1e-5 if r["dtype"] == "float32" else 5e-2)
    # Gradients: the fp32 dense reference first, bf16 blocked near it.
    grads = {(r["dispatch"], r["dtype"]): r for r in rows["grad_norms"]}
    assert list(grads) == [("dense", "float32"), ("blocked", "bfloat16")]
    assert grads[("dense", "float32")]["rel_error_vs_fp32_dense"] == 0
    bf16 = grads[("blocked", "bfloat16")]
    assert 0 < bf16["rel_error_vs_fp32_dense"] <= bf16["worst_expert_rel_error"] < 1e-1
    # HF ratios: the same greedy tokens; every implementation timed.
    assert set(doc["parts"]["decode_vs_hf"]["notes"]["agreement"].values()) == {1.0}
    assert all(r["s_per_step"] > 0 for r in rows["train_vs_hf"]) and len(rows["train_vs_hf"]) == 3
    # Full-size steps (tiny here) on each frozen format and trainable method: finite losses, no
    # allocator statistics on the CPU.
    steps = [rows[n][0] for n in ("step_int8", "rise_lora", "lora")]
    assert [(r["frozen"], r["method"]) for r in steps] == [
        ("int8", "experts (K = 4)"),
        ("bfloat16", "rise_lora"),
        ("bfloat16", "lora"),
    ]
    assert all(math.isfinite(r["loss"]) and r["grad_norm"] > 0 and r["peak_gib"] is None for r in steps)
    notes = {n: doc["parts"][n]["notes"] for n in ("step_int8", "lora")}
    assert notes["step_int8"]["weights_gib"] < 0.7 * notes["lora"]["weights_gib"]  # int8 kernels, bf16 rest
    # Continuous batching gives the static batches' tokens.
    assert [r["same_answers"] for r in rows["continuous"]] == ["4/4", "4/4"]
    md = (tmp_path / "gpu_suite.md").read_text()
    assert "| grad_norms | ok |" in md and "#### step_int8 (ok)" in md and "SMOKE RUN" in md


def test_a_failing_or_overrunning_part_is_reported_and_the_others_run(tmp_path, monkeypatch):
    def failing(ctx):
        ctx.row(measured=1)
        raise ValueError("no such kernel")

    def overrunning(ctx):
        ctx.row(measured=2)
        time.sleep(0.2)
        ctx.check()
        ctx.row(measured=3)  # never reached

    def fine(ctx):
        ctx.note(done=True)

    parts = {"failing": (failing, 1), "overrunning": (overrunning, 1), "fine": (fine, 1)}
    monkeypatch.setattr(gpu_suite, "PARTS", parts)
    monkeypatch.setattr(gpu_suite, "SMOKE_BUDGET_S", 0.1)
    doc = gpu_suite.main(["--smoke", "--out", str(tmp_path)])
    on_disk = json.loads((tmp_path / "gpu_suite.json").read_text())["parts"]
    assert {n: r["status"] for n, r in on_disk.items()} == {
        "failing": "error",
        "overrunning": "timed out",
        "fine": "ok",
    }
    assert on_disk["failing"]["error"] == "ValueError: no such kernel" and on_disk["failing"]["rows"] == [
        {"measured": 1}
    ]
    assert on_disk["overrunning"]["rows"] == [{"measured": 2}] and doc["parts"]["fine"]["notes"] == {"done": True}
    md = (tmp_path / "gpu_suite.md").read_text()
    assert "| overrunning | timed out |" in md and "Error: `ValueError: no such kernel`" in md


def test_parts_run_in_their_own_process_by_default(tmp_path):
    doc = gpu_suite.main(["--only", "env", "--out", str(tmp_path)])
    env = doc["parts"]["env"]
    assert env["status"] == "ok" and env["notes"]["backend"] == "cpu" and env["notes"]["jax"]
