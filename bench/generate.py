"""Decode throughput of rise_jax vs HF ``generate`` on the mid-size Qwen3-MoE config.

    python bench/generate.py            # batch 8, 128-token prompts, 64 new tokens, fp32, 2 threads
    python bench/generate.py --quick    # batch 2, 32-token prompts, 8 new tokens
    python bench/generate.py --gpu      # HF on CUDA, JAX on its GPU backend (both fp32, no TF32)

Both decode greedily with a KV cache, no stop token (every row generates all new tokens), so the
work is identical; the script checks the generated tokens agree. Prints new tokens/s of each
and the ratio against HF's fastest setting in the same run (medians of ``--repeats`` runs), end to
end (prefill included, as ``generate`` is called) and split into prefill (+ first token) and the
per-step decode time after it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    HF_SETTINGS,
    MID_QWEN,
    device_label,
    load_hf,
    median_time,
    set_threads,
    torch_sync,
    use_gpu,
    write_hf_qwen,
)

set_threads(2)

import numpy as np  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--gpu", action="store_true", help="HF on CUDA and JAX on its GPU backend")
    args = ap.parse_args()
    dev = use_gpu(args.gpu)
    batch, prompt, new = (2, 32, 8) if args.quick else (8, 128, 64)

    import torch

    import rise_jax
    from rise_jax.evaluation.generate import generate

    cfg = dict(MID_QWEN)
    tmp = write_hf_qwen(cfg)
    ids = np.random.RandomState(0).randint(1, cfg["vocab_size"], (batch, prompt)).astype(np.int32)
    mask = np.ones_like(ids)

    results: dict[str, float] = {}  # end to end: prefill + all new tokens
    prefill: dict[str, float] = {}  # prefill + the first new token only
    outputs: dict[str, np.ndarray] = {}
    t_ids = torch.tensor(ids, dtype=torch.long, device=dev)
    t_mask = torch.tensor(mask, dtype=torch.long, device=dev)
    for name, attn, experts in HF_SETTINGS:
        m = load_hf(tmp, attn, experts).eval().to(dev)

        def hf_run(n=new, m=m):
            with torch.no_grad():
                out = m.generate(
                    input_ids=t_ids,
                    attention_mask=t_mask,
                    max_new_tokens=n,
                    min_new_tokens=n,
                    do_sample=False,
                    pad_token_id=0,
                    eos_token_id=None,
                )
            torch_sync(dev)
            return out

        outputs[name] = hf_run()[:, prompt:].cpu().numpy()
        results[name] = median_time(hf_run, repeats=args.repeats, warmup=0)
        prefill[name] = median_time(lambda: hf_run(1), repeats=args.repeats, warmup=0)
        del m

    model, params = rise_jax.load_model(tmp, dtype="float32", progress=False)

    def ours(n=new):
        return generate(model, params, ids, mask, max_new_tokens=n, stop_ids=[], pad_id=0)

    t0 = time.perf_counter()
    outputs["rise_jax"] = np.asarray(ours())
    ours(1)
    print(f"(rise_jax first calls incl. compile: {time.perf_counter() - t0:.1f} s)")
    results["rise_jax (dispatch auto)"] = median_time(ours, repeats=args.repeats, warmup=0)
    prefill["rise_jax (dispatch auto)"] = median_time(lambda: ours(1), repeats=args.repeats, warmup=0)

    agree = {k: float(np.mean(v == outputs["rise_jax"])) for k, v in outputs.items() if k != "rise_jax"}
    best_hf = min(v for k, v in results.items() if k.startswith("hf"))
    # Decode only: the time of the new-1 tokens after the first, per token (prefill subtracted).
    step = {k: (results[k] - prefill[k]) / (new - 1) for k in results}
    best_step = min(v for k, v in step.items() if k.startswith("hf"))
    best_pre = min(v for k, v in prefill.items() if k.startswith("hf"))
    print(
        f"\nmid-size Qwen3-MoE greedy decoding: batch {batch}, {prompt}-token prompts, {new} new tokens, fp32, "
        + device_label(args.gpu)
    )
    print(
        f"{'implementation':34s} {'new tok/s':>10s} {'vs best HF':>10s} {'prefill s':>10s} {'vs HF':>6s}"
        f" {'ms/step':>8s} {'decode tok/s':>12s} {'vs HF':>6s}"
    )
    for name, t in results.items():
        print(
            f"{name:34s} {batch * new / t:10.1f} {best_hf / t:9.2f}x {prefill[name]:10.3f} {best_pre / prefill[name]:5.2f}x"
            f" {1e3 * step[name]:8.1f} {batch / step[name]:12.1f} {best_step / step[name]:5.2f}x"
        )
    print("token agreement with rise_jax: " + ", ".join(f"{k} {v:.3f}" for k, v in agree.items()))


if __name__ == "__main__":
    main()
