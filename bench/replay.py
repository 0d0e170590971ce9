"""Routing-statistics replay: rise_jax vs HF torch with forward hooks on the routers.

    python bench/replay.py [--samples 200] [--languages en,bn,sw,zh]

The reference is how the paper's code collects statistics: a full HF forward per padded batch
with a forward hook on every router, top-k indices counted over real tokens. Both sides replay
the same FLoRes sentences through the real Qwen3 tokenizer in the same length-bucketed batches,
on the mid-size config of bench/forward.py (vocabulary 151,936 to match the tokenizer). Prints
tokens/s and the ratio; checks that both count the same experts.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import HF_SETTINGS, MID_QWEN, cpu_line, load_hf, set_threads, write_hf_qwen  # noqa: E402

set_threads(2)

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared", "data"))


def hf_replay(model, batches, num_layers: int, num_experts: int) -> np.ndarray:
    import torch

    captured = {}
    hooks = []
    for i, layer in enumerate(model.model.layers):
        hooks.append(layer.mlp.gate.register_forward_hook(lambda m, inp, out, i=i: captured.__setitem__(i, out[2])))
    counts = torch.zeros(num_layers, num_experts, dtype=torch.int64)
    with torch.no_grad():
        for ids, mask, _ in batches:
            model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask))
            flat_mask = torch.tensor(mask).reshape(-1).bool()
            for i in range(num_layers):
                idx = captured[i][flat_mask]  # [tokens, k]
                counts[i] += torch.bincount(idx.reshape(-1), minlength=num_experts)
    for h in hooks:
        h.remove()
    return counts.numpy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--languages", default="en,bn,sw,zh")
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()

    import rise_jax
    from rise_jax.data.batching import bucketed_batches, tokenize_examples
    from rise_jax.data.sources import SourceSpec, load_examples
    from rise_jax.routing.stats import replay

    cfg = {**MID_QWEN, "vocab_size": 151936}
    tmp = write_hf_qwen(cfg)
    tok = rise_jax.load_tokenizer(os.path.join(SHARED, "tokenizers", "qwen3"))
    spec = SourceSpec("flores", os.path.join(SHARED, "flores200"), split="train")
    langs = args.languages.split(",")
    corpora = [tokenize_examples(lang, load_examples(spec, lang), tok, 512, args.samples) for lang in langs]
    n_tokens = sum(c.num_tokens for c in corpora)
    layers, experts = cfg["num_hidden_layers"], cfg["num_experts"]

    results = {}
    for name, attn, exp in HF_SETTINGS:
        name = f"{name} + hooks"
        hf = load_hf(tmp, attn, exp).eval()
        t0 = time.perf_counter()
        hf_counts = [
            hf_replay(hf, bucketed_batches(c.sequences, args.batch_size, 32, 0), layers, experts) for c in corpora
        ]
        results[name] = time.perf_counter() - t0
        del hf

    model, params = rise_jax.load_model(tmp, dtype="float32", progress=False)
    t0 = time.perf_counter()
    stats = replay(model, params, corpora, batch_size=args.batch_size, progress=False)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    stats = replay(model, params, corpora, batch_size=args.batch_size, progress=False)
    results["rise_jax replay (compiled)"] = time.perf_counter() - t0

    ours, ref = stats.counts, np.stack(hf_counts)
    moved = np.abs(ours - ref).sum() / 2 / ref.sum()  # share of token-expert assignments that differ
    best_hf = min(v for k, v in results.items() if k.startswith("hf"))
    print(
        f"\nreplay: {len(langs)} languages x {args.samples} FLoRes sentences, {n_tokens} tokens, batch {args.batch_size}"
    )
    print(f"CPU: {cpu_line()}")
    print(f"{'implementation':32s} {'tokens/s':>10s} {'vs best HF':>10s}")
    for name, t in results.items():
        print(f"{name:32s} {n_tokens / t:10.0f} {best_hf / t:9.2f}x")
    print(f"rise_jax first run incl. compilation of every bucket shape: {n_tokens / first:.0f} tokens/s")
    print(
        f"expert assignments differing from the HF hook reference: {moved:.4%} "
        "(fp32 round-off flips near-tied router probabilities of the random model)"
    )


if __name__ == "__main__":
    main()
