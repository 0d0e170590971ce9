"""The whole tiny pipeline through the CLI for ``deepseek_v3`` — run by hand, not in the suite.

    python bench/deepseek_v3_pipeline.py [WORKDIR]     # builds the checkpoint, runs the CLI, checks
    python -m rise_jax.launch --config=bench/deepseek_v3_pipeline.py:CHECKPOINT --workdir=WORKDIR

The test suite runs whole pipelines for ``deepseek_v2`` and ``glm4_moe`` only (time budget):
``deepseek_v3``'s blocks are deepseek_v2's MLA plus glm4_moe's sigmoid router. This script closes
that gap by hand: a tiny random DeepSeek-V3 (tests/hf_reference.make_hf_model: YaRN with
``mscale_all_dim``, ``q_lora_rank``, groups, a dense first layer, a correction bias big enough to
change selections), the tests' tiny config (tests/pipeline_run.py: stats, analyze, select, train,
export, eval, report; three FLoRes languages, K = 4), trained with ``train.method`` (default
``experts``; ``RISE_BENCH_METHOD=rise_lora|lora`` for the others) through
``python -m rise_jax.launch`` in a subprocess. Then it checks what the pipeline test checks for the
other two families: stages completed, the export loads in transformers with logits within 1e-4
of ours, only selected routed experts moved, router / correction bias / shared experts did not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")
sys.path.insert(0, TESTS)

METHOD = os.environ.get("RISE_BENCH_METHOD", "experts")


def get_config(checkpoint: str):
    from pipeline_run import config

    c = config(checkpoint)
    c.train.method = METHOD
    return c


def build_checkpoint(path: str) -> str:
    from fixture_data import TINY_VOCAB
    from hf_reference import make_hf_model, save_hf_model, yarn

    hf = make_hf_model(
        "deepseek_v3",
        seed=21,
        vocab_size=TINY_VOCAB,
        num_hidden_layers=4,
        q_lora_rank=10,
        rope_parameters=yarn(8.0, 16, 1.0, 0.8),
    )
    return save_hf_model(hf, path)


def check(ckpt: str, wd: str) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from fixture_data import TINY_VOCAB
    from hf_reference import hf_forward, load_hf_model, padded_batch

    import rise_jax
    from rise_jax.models.layout import layer_runs

    summary = json.load(open(os.path.join(wd, "routing_stats", "summary.json")))
    assert summary["model"]["model_type"] == "deepseek_v3", summary["model"]
    train = json.load(open(os.path.join(wd, "train", "summary.json")))
    assert train["status"] == "completed", train
    results = json.load(open(os.path.join(wd, "eval", "results.json")))
    assert "trained" in json.dumps(results) and "pruned" in json.dumps(results)
    exported = os.path.join(wd, "export", "hf")
    model, params = rise_jax.load_model(exported, dtype="float32", progress=False)
    ids, mask = padded_batch(TINY_VOCAB, [10, 7], 10, [False, True], seed=1)
    ref, _ = hf_forward(load_hf_model(exported), ids, mask)
    ours = np.asarray(rise_jax.forward(model, params, jnp.asarray(ids), jnp.asarray(mask)).logits)
    err = float(np.abs(ours - ref)[mask.astype(bool)].max())
    assert err < 1e-4, err
    print(f"export loads in transformers: max |logit difference| vs ours {err:.2e}")
    _, base = rise_jax.load_model(ckpt, dtype="float32", progress=False)
    sel = {(s["layer"], s["expert"]) for s in json.load(open(os.path.join(wd, "selection.json")))["experts"]}
    moved = set()
    for run in layer_runs(model.cfg):
        if not run.is_moe:
            continue
        new, orig = params[run.name]["moe"], base[run.name]["moe"]
        for key in ("shared_expert", "router", "router_selection_bias"):
            for a, b in zip(
                jax.tree_util.tree_leaves(new.get(key)), jax.tree_util.tree_leaves(orig.get(key)), strict=True
            ):
                assert np.array_equal(np.asarray(a), np.asarray(b)), (run.name, key)
        diff = np.asarray(new["experts"]["gate_proj"]) != np.asarray(orig["experts"]["gate_proj"])
        moved |= {(run.moe_start + int(li), int(e)) for li, e in zip(*np.nonzero(diff.any(axis=(2, 3))), strict=True)}
    if METHOD in ("experts", "rise_lora"):
        assert moved and moved <= sel, (moved, sel)
    print(f"selected (MoE layer, expert): {sorted(sel)}; moved: {sorted(moved)}")
    print("router, e_score_correction_bias and shared experts unchanged")
    print(f"eval/results.json: {json.dumps(results)[:600]}")


def main() -> None:
    wd = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="dsv3_pipeline_")
    ckpt = build_checkpoint(os.path.join(wd + "_ckpt"))
    cmd = [sys.executable, "-m", "rise_jax.launch", f"--config={os.path.abspath(__file__)}:{ckpt}", f"--workdir={wd}"]
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT)
    print(f"CLI exit status {r.returncode} after {time.perf_counter() - t0:.0f} s")
    if r.returncode:
        raise SystemExit(r.returncode)
    check(ckpt, wd)
    print("deepseek_v3 whole pipeline through the CLI: OK")


if __name__ == "__main__":
    main()
