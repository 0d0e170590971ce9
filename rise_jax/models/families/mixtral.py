"""Mixtral (``mixtral``): softmax router, top-k, always renormalised over the k; one sliding
window for every layer when configured. (The router's training-time input jitter is not
modelled: rise_jax never trains Mixtral's router with jitter.)"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rise_jax.models.config import ModelConfig, common_fields, common_to_hf, get_int
from rise_jax.models.families import Family, HFNames


def parse(d: Mapping[str, Any], source: str) -> ModelConfig:
    f = common_fields(d, source, experts_key="num_local_experts", default_theta=1e6, eps=1e-5)
    f["norm_topk_prob"] = True  # MixtralTopKRouter always renormalises the top-k probabilities
    inter = get_int(d, "intermediate_size", source, 14336)
    window = d.get("sliding_window")
    return ModelConfig(
        **f,
        moe_intermediate_size=inter,
        intermediate_size=inter,
        moe_layer_ids=tuple(range(f["num_layers"])),
        sliding_window=None if window is None else get_int(d, "sliding_window", source),
    )


def to_hf(cfg: ModelConfig, dtype: str) -> dict[str, Any]:
    return {
        **common_to_hf(cfg, dtype),
        "num_local_experts": cfg.num_experts,
        "head_dim": cfg.head_dim,
        "sliding_window": cfg.sliding_window,
    }


FAMILY = Family(
    "mixtral",
    "MixtralForCausalLM",
    parse,
    to_hf,
    HFNames(
        moe_prefix="block_sparse_moe",
        router="block_sparse_moe.gate.weight",
        router_alt="mlp.gate.weight",
        experts={"gate_proj": "w1", "up_proj": "w3", "down_proj": "w2"},
    ),
)
