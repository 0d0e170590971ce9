"""Sweeps over selection settings: each point is a set of config overrides run in its own workdir.

python -m rise_jax.sweep --config=configs/qwen3_30b_a3b.py --sweep=alpha --workdir=/tmp/sweep_alpha

Points share the routing statistics (replayed once, then linked into every point's workdir).
"""

SWEEPS = {
    # Composite-score weight alpha of Spec / Ovlp (DESIGN §3).
    "alpha": [{"select.alpha": a} for a in (0.0, 1.0, 5.0, 10.0, 20.0)],
    # Zone budget ratios (shallow, middle, deep).
    "ratios": [
        {"select.ratios": r}
        for r in ((1 / 3, 1 / 3, 1 / 3), (0.35, 0.25, 0.40), (0.5, 0.0, 0.5), (0.125, 0.6875, 0.1875), (0.2, 0.2, 0.6))
    ],
    "k": [{"select.k": k} for k in (16, 32, 64, 128, 256)],
    # Layer-group ablations: select only in some zones (their budgets spill to the zones kept).
    "zones": [
        {"select.zones": z}
        for z in ("shallow", "middle", "deep", "shallow,middle", "middle,deep", "shallow,deep", "shallow,middle,deep")
    ],
    "methods": [{"select.method": m} for m in ("rise", "random", "topk", "esft_gate", "esft_token")],
    # RISE+LoRA ranks (alpha = rank: scale 1), next to full fine-tuning of the same experts.
    "lora_rank": [{"train.method": "experts"}]
    + [{"train.method": "rise_lora", "train.lora_rank": r, "train.lora_alpha": float(r)} for r in (4, 8, 16, 64)],
    # Does aligning the router add to RISE, replace it, or hurt it? On one target language: RISE
    # (its eval also scores steering at inference, the companion study's router edit of eval.steer),
    # RISE + the routing-alignment term, the middle-zone routers + the term. Add routing_divergence
    # to eval.run for the divergence before / after; sweep.md then ends with the comparison
    # (rise_jax/reporting/alignment.py).
    "routing_alignment": [
        {"train.method": "experts", "train.align_weight": 0.0, "eval.variants": "base,trained,steered"},
        {"train.method": "experts", "train.align_weight": 1.0, "eval.variants": "base,trained"},
        {"train.method": "routers", "train.align_weight": 1.0, "eval.variants": "base,trained"},
    ],
    # The controlled testbed (configs/testbed.py, python -m rise_jax.study): one pretraining per
    # point, the study stages on each saved checkpoint. Imbalance: the low-resource ciphers (qac,
    # qae) at 1x, 1/10 and 1/100 of the others' mix weight.
    "testbed_imbalance": [{"pretrain.mix": m} for m in ("100,100,100,100,100", "100,100,10,100,10", "100,100,1,100,1")],
    "testbed_experts": [{"pretrain.num_experts": e} for e in (8, 16, 32)],
    "testbed_top_k": [{"pretrain.top_k": k} for k in (1, 2, 4)],
    "testbed_balance": [{"pretrain.balance_weight": w} for w in (0.0, 0.0025, 0.025)],
}


def get_sweep(name: str) -> list[dict]:
    if name not in SWEEPS:
        raise ValueError(f"unknown sweep {name!r}; choose one of {', '.join(SWEEPS)}")
    return SWEEPS[name]
