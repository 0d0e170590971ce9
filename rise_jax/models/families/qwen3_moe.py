"""Qwen3-MoE (``qwen3_moe``): per-head q/k RMSNorm, softmax router with optional renormalisation,
optional dense ``mlp_only_layers`` / ``decoder_sparse_step`` layers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rise_jax.models.config import ModelConfig, common_fields, common_to_hf, get_int
from rise_jax.models.families import Family
from rise_jax.models.families.fields import attention_biases, experts_key, moe_layer_ids, moe_layers_to_hf


def parse(d: Mapping[str, Any], source: str) -> ModelConfig:
    f = common_fields(
        d, source, experts_key=experts_key(d, source, "num_experts", "num_local_experts"), default_theta=1e4, eps=1e-6
    )
    moe_inter = get_int(d, "moe_intermediate_size", source)
    return ModelConfig(
        **f,
        moe_intermediate_size=moe_inter,
        intermediate_size=get_int(d, "intermediate_size", source, moe_inter),
        moe_layer_ids=moe_layer_ids(d, f["num_layers"], source),
        qk_norm="per_head",
        **attention_biases(d),
        sliding_window=get_int(d, "sliding_window", source) if d.get("use_sliding_window", False) else None,
    )


def to_hf(cfg: ModelConfig, dtype: str) -> dict[str, Any]:
    return {
        **common_to_hf(cfg, dtype),
        "num_experts": cfg.num_experts,
        "head_dim": cfg.head_dim,
        "moe_intermediate_size": cfg.moe_intermediate_size,
        **moe_layers_to_hf(cfg),
        "attention_bias": cfg.qkv_bias,
        "use_sliding_window": cfg.sliding_window is not None,
        "sliding_window": cfg.sliding_window,
    }


FAMILY = Family("qwen3_moe", "Qwen3MoeForCausalLM", parse, to_hf)
