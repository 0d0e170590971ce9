"""One MoE layer's experts per dispatch implementation vs HF's Qwen3-MoE experts module.

    python bench/moe_dispatch.py                      # mid-size layer, CPU, fp32
    python bench/moe_dispatch.py --gpu --size full    # a Qwen3-30B-A3B layer on the GPU
    python bench/moe_dispatch.py --gpu --dtype bfloat16
    python bench/moe_dispatch.py --size tiny          # 256-token batch: a quick CPU check

Times (medians) the routed experts of one layer — sort by expert, expert MLP, weighted combine —
for the same tokens, top-k indices and weights: forward at a prefill/training batch and at a
decode batch, and forward + backward in the training setting (gradients for the input and for K
trainable experts, the rest frozen: the ``SubstitutedExperts`` weight source for ours, ``requires_grad``
on the fused expert tensors for HF). This is the benchmark behind ``dispatch.default_impl``.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import MID_QWEN, QWEN3_30B_A3B, device_label, median_time, set_threads, torch_sync, use_gpu  # noqa: E402

set_threads(2)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

SIZES = {
    "mid": (MID_QWEN, 4096),
    "full": (QWEN3_30B_A3B, 1024),
    "tiny": (MID_QWEN, 256),
}  # (config, large-batch tokens)
K_TRAINABLE = 16


def _problem(cfg, n, seed=0):
    rng = np.random.default_rng(seed)
    e, h, i, k = cfg["num_experts"], cfg["hidden_size"], cfg["moe_intermediate_size"], cfg["num_experts_per_tok"]
    x = rng.standard_normal((n, h), np.float32)
    w = {
        p: rng.standard_normal((e, *s), np.float32) * np.float32(0.02)
        for p, s in (("g", (h, i)), ("u", (h, i)), ("d", (i, h)))
    }
    idx = np.argsort(rng.random((n, e)), -1)[:, :k].astype(np.int32)
    wt = rng.random((n, k)).astype(np.float32)
    return x, w, idx, wt / wt.sum(-1, keepdims=True)


def _loss_fn(impl, g, u, d, slots, idx, wt):
    """The training-setting loss: experts with a slot use trainable fp32 copies (cast to ``dt``)."""
    from rise_jax.models import dispatch as D
    from rise_jax.models.expert_weights import StackedExperts, SubstitutedExperts

    def loss(x, trained):  # the model's training path: the substituted source
        y = D.dispatch(x, D.ExpertChoice(idx, wt), SubstitutedExperts(StackedExperts(g, u, d), trained, slots), impl)
        return jnp.sum(y.astype(jnp.float32) ** 2), y

    return loss


def ours(impl, x, w, idx, wt, dtype, repeats, ref=None):
    """(forward s, forward+backward s, relative errors of (y, dx, d trained) against ``ref``, outputs)."""
    from rise_jax.models import dispatch as D

    dt = jnp.dtype(dtype)
    xj, idxj, wtj = jnp.asarray(x, dt), jnp.asarray(idx), jnp.asarray(wt)
    g, u, d = (jnp.asarray(w[p], dt) for p in "gud")
    from rise_jax.models.expert_weights import StackedExperts

    fwd = jax.jit(lambda x: D.dispatch(x, D.ExpertChoice(idxj, wtj), StackedExperts(g, u, d), impl))
    fwd(xj).block_until_ready()
    t_fwd = median_time(lambda: fwd(xj).block_until_ready(), repeats=repeats)

    e = g.shape[0]
    slots = jnp.asarray(np.where(np.arange(e) < K_TRAINABLE, np.arange(e), -1), jnp.int32)
    trained = tuple(jnp.asarray(w[p][:K_TRAINABLE], jnp.float32) for p in "gud")
    bwd = jax.jit(jax.grad(_loss_fn(impl, g, u, d, slots, idxj, wtj), argnums=(0, 1), has_aux=True))
    (gx, gt), y = jax.block_until_ready(bwd(xj, trained))
    t_bwd = median_time(lambda: jax.block_until_ready(bwd(xj, trained)), repeats=repeats)
    outs = [np.asarray(a, np.float32) for a in (y, gx, *gt)]
    errs = None
    if ref is not None:
        errs = [float(np.linalg.norm(a - b) / np.linalg.norm(b)) for a, b in zip(outs, ref, strict=True)]
        errs = (errs[0], errs[1], max(errs[2:]))
    return t_fwd, t_bwd, errs, outs


def hf(impl, cfg, x, w, idx, wt, dtype, dev, repeats, skip_bwd=False):
    import torch
    import transformers
    from transformers.models.qwen3_moe import modeling_qwen3_moe

    hf_cfg = transformers.Qwen3MoeConfig(
        **{k: v for k, v in cfg.items() if k not in ("model_type", "architectures", "vocab_size")}
    )
    hf_cfg._experts_implementation = impl
    tdt = getattr(torch, dtype)
    ex = modeling_qwen3_moe.Qwen3MoeExperts(hf_cfg)
    with torch.no_grad():  # HF layout: gate_up [E, 2I, H], down [E, H, I]
        ex.gate_up_proj.copy_(torch.from_numpy(np.concatenate([w["g"], w["u"]], -1).transpose(0, 2, 1).copy()))
        ex.down_proj.copy_(torch.from_numpy(w["d"].transpose(0, 2, 1).copy()))
    ex = ex.to(dev, tdt)
    tx, tidx = torch.tensor(x, device=dev, dtype=tdt), torch.tensor(idx, device=dev, dtype=torch.long)
    twt = torch.tensor(wt, device=dev, dtype=tdt)

    def fwd():
        with torch.no_grad():
            ex(tx, tidx, twt)
        torch_sync(dev)

    t_fwd = median_time(fwd, repeats=repeats)
    if skip_bwd:
        return t_fwd, float("nan")
    sel = (torch.arange(cfg["num_experts"], device=dev) < K_TRAINABLE).view(-1, 1, 1)
    for p in ex.parameters():
        p.requires_grad_(True)
        p.register_hook(lambda g: g * sel.to(g.dtype))
    xg = tx.clone().requires_grad_(True)

    def bwd():
        ex.zero_grad(set_to_none=True)
        xg.grad = None
        (ex(xg, tidx, twt).float() ** 2).sum().backward()
        torch_sync(dev)

    t_bwd = median_time(bwd, repeats=repeats)
    return t_fwd, t_bwd


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--size", choices=list(SIZES), default="mid")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--impls", default="", help="comma-separated; default all (without ragged on CPU: emulated densely)"
    )
    args = ap.parse_args()
    dev = use_gpu(args.gpu)
    cfg, n = SIZES[args.size]
    impls = args.impls.split(",") if args.impls else ["dense", "grouped_scan", "blocked"]
    if not args.impls and args.gpu:
        impls.insert(1, "ragged")

    rows: dict[str, dict[str, float]] = {}
    for label, tokens in (("batch", n), ("decode", 8)):
        x, w, idx, wt = _problem(cfg, tokens)
        for impl in ("eager", "grouped_mm"):
            # HF eager's backward walks experts one by one with hooks: minutes at full size.
            skip_bwd = impl == "eager" and args.size == "full"
            f, b = hf(impl, cfg, x, w, idx, wt, args.dtype, dev, args.repeats, skip_bwd)
            rows.setdefault(f"hf {impl}", {}).update({f"{label} fwd": f, f"{label} fwd+bwd": b})
            print(f"  hf {impl} {label}: fwd {1e3 * f:.3f} ms, fwd+bwd {1e3 * b:.3f} ms", flush=True)
        # Accuracy reference: dense in fp32 (full-precision matmuls) on the same inputs.
        ref = ours("dense", x, w, idx, wt, "float32", 1)[3]
        for impl in impls:
            f, b, errs, _ = ours(impl, x, w, idx, wt, args.dtype, args.repeats, ref)
            rows.setdefault(f"rise_jax {impl}", {}).update({f"{label} fwd": f, f"{label} fwd+bwd": b})
            print(
                f"  rise_jax {impl} {label}: fwd {1e3 * f:.3f} ms, fwd+bwd {1e3 * b:.3f} ms; relative error vs fp32"
                f" dense: y {errs[0]:.1e}, dx {errs[1]:.1e}, d(trained) {errs[2]:.1e}",
                flush=True,
            )

    cols = ["batch fwd", "batch fwd+bwd", "decode fwd", "decode fwd+bwd"]
    best = {c: np.nanmin([v[c] for k, v in rows.items() if k.startswith("hf")]) for c in cols}
    e, h, i, k = (cfg[key] for key in ("num_experts", "hidden_size", "moe_intermediate_size", "num_experts_per_tok"))
    print(
        f"\none MoE layer's experts ({args.size}: E={e} top-{k}, H={h}, I={i}), batch {n} tokens / decode 8 tokens,"
        f" {args.dtype}, {device_label(args.gpu)}; fwd+bwd: grads for x and {K_TRAINABLE} trainable experts"
    )
    print(f"{'implementation':24s}" + "".join(f" {c + ' ms':>17s} {'vs HF':>6s}" for c in cols))
    for name, v in rows.items():
        print(f"{name:24s}" + "".join(f" {1e3 * v[c]:17.3f} {best[c] / v[c]:5.2f}x" for c in cols))


if __name__ == "__main__":
    main()
