"""Mixtral (``mixtral``): softmax router, top-k, always renormalised over the k; one sliding
window for every layer when configured. (The router's training-time input jitter is not
modelled: rise_jax never trains Mixtral's router with jitter.)"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rise_jax.models.config import ModelConfig, common_fields, common_to_hf, get_int
from rise_jax.models.families import Family
from rise_jax.models.families.fields import block_sparse_moe_names, every_layer_moe, optional_int


def parse(d: Mapping[str, Any], source: str) -> ModelConfig:
    f = common_fields(d, source, experts_key="num_local_experts", default_theta=1e6, eps=1e-5)
    f["norm_topk_prob"] = True  # MixtralTopKRouter always renormalises the top-k probabilities
    inter = get_int(d, "intermediate_size", source, 14336)
    return ModelConfig(**f, **every_layer_moe(f, inter), sliding_window=optional_int(d, "sliding_window", source))


def to_hf(cfg: ModelConfig, dtype: str) -> dict[str, Any]:
    return {
        **common_to_hf(cfg, dtype),
        "num_local_experts": cfg.num_experts,
        "head_dim": cfg.head_dim,
        "sliding_window": cfg.sliding_window,
    }


FAMILY = Family("mixtral", "MixtralForCausalLM", parse, to_hf, block_sparse_moe_names(router_alt="mlp.gate.weight"))
