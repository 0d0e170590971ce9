"""Routing-statistics replay: rise_jax vs HF torch with forward hooks on the routers.

    python bench/replay.py [--samples 200] [--languages en,bn,sw,zh]
    python bench/replay.py --packing [--batch-size 8]   # packed vs unpacked rows, real text lengths

The reference is how the paper's code collects statistics: a full HF forward per padded batch
with a forward hook on every router, top-k indices counted over real tokens. Both sides replay
the same FLoRes sentences through the real Qwen3 tokenizer in the same length-bucketed batches,
on the mid-size config of bench/forward.py (vocabulary 151,936 to match the tokenizer). Prints
tokens/s and the ratio; checks that both count the same experts.

``--packing``: our replay with packed rows (``stats.pack``: several sequences a row, segment ids)
against one sequence a row (length-bucketed), on the real lengths of FLoRes sentences and XQuAD
question + context (tests/data, the Qwen3 tokenizer; ids folded into the mid-size model's 4,096):
useful (non-padding) tokens/s of each after a compiling pass, the ratio, the padding share of
the computed positions, and how far the statistics agree (same tokens and sequences; expert
assignments differ only where fp32 round-off from other matmul shapes flips a near-tied router
choice of the random model, as between any two batch sizes).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import HF_SETTINGS, MID_QWEN, cpu_line, load_hf, real_text_sequences, set_threads, write_hf_qwen  # noqa: E402

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


def bench_packing(batch_size: int) -> None:
    import rise_jax
    from rise_jax.data.batching import TokenizedCorpus
    from rise_jax.routing.stats import replay, replay_batches

    tmp = write_hf_qwen(MID_QWEN)
    model, params = rise_jax.load_model(tmp, dtype="float32", progress=False)
    texts = {
        "FLoRes sentences (en, zh, sw, bn dev)": ("flores", ["en", "zh", "sw", "bn"]),
        "XQuAD question + context (en, zh)": ("qa", ["en", "zh"]),
    }
    print(f"replay, packed vs unpacked rows: MID_QWEN (fp32), batch {batch_size} rows, CPU 2 threads")
    print(
        f"{'text':40s} {'seqs':>5s} {'tokens':>7s} {'rows':>10s} {'padding':>15s} {'useful tok/s':>17s} {'ratio':>6s}"
    )
    for label, (kind, langs) in texts.items():
        seqs = real_text_sequences(kind, langs, 512, MID_QWEN["vocab_size"])
        corpus = [TokenizedCorpus("en", seqs, [str(i) for i in range(len(seqs))], 0, len(seqs))]
        useful = sum(len(x) for x in seqs)
        rate, pad, rows, stats = {}, {}, {}, {}
        for pack in (False, True):
            computed = sum(ids.size for ids, _, _ in replay_batches(seqs, batch_size, 32, 0, pack)[1])
            rows[pack] = replay_batches(seqs, batch_size, 32, 0, pack)[0] * batch_size
            pad[pack] = 1 - useful / computed
            kw = dict(batch_size=batch_size, pack=pack, seq_probs_languages=["en"], progress=False)
            replay(model, params, corpus, **kw)  # compiles every shape
            t0 = time.perf_counter()
            stats[pack] = replay(model, params, corpus, **kw)
            rate[pack] = useful / (time.perf_counter() - t0)
        a, b = stats[False], stats[True]
        assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.sequences, b.sequences)
        moved = np.abs(a.counts - b.counts).sum() / 2 / a.counts.sum()  # assignments that differ
        seq_err = float(np.abs(a.seq_probs["en"] - b.seq_probs["en"]).max())
        print(
            f"{label:40s} {len(seqs):5d} {useful:7d} {rows[False]:4d}->{rows[True]:<5d} "
            f"{pad[False]:6.1%}->{pad[True]:<6.1%} {rate[False]:7.0f}->{rate[True]:<7.0f} "
            f"{rate[True] / rate[False]:5.2f}x  (expert assignments differing {moved:.4%}, seq_probs max diff {seq_err:.1e})"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--languages", default="en,bn,sw,zh")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--packing", action="store_true", help="packed vs unpacked replay on real text lengths")
    args = ap.parse_args()
    if args.packing:
        bench_packing(args.batch_size)
        return

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
