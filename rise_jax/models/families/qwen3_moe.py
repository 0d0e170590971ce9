"""Qwen3-MoE (``qwen3_moe``): per-head q/k RMSNorm, softmax router with optional renormalisation,
optional dense ``mlp_only_layers`` / ``decoder_sparse_step`` layers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rise_jax.models.config import ConfigError, ModelConfig, common_fields, common_to_hf, get_int
from rise_jax.models.families import Family


def experts_key(d: Mapping[str, Any], source: str, *keys: str) -> str:
    """The first of ``keys`` the config sets (checkpoints spell the expert count differently)."""
    for key in keys:
        if d.get(key) is not None:
            return key
    raise ConfigError(f"{source}: neither {' nor '.join(repr(k) for k in keys)} is set")


def moe_layer_ids(d: Mapping[str, Any], num_layers: int, source: str) -> tuple[int, ...]:
    """Layers with an MoE block: not in ``mlp_only_layers`` and ``(i + 1) % decoder_sparse_step == 0``."""
    mlp_only = set(d.get("mlp_only_layers") or [])
    step = get_int(d, "decoder_sparse_step", source, 1)
    return tuple(i for i in range(num_layers) if i not in mlp_only and (i + 1) % step == 0)


def parse(d: Mapping[str, Any], source: str) -> ModelConfig:
    f = common_fields(
        d, source, experts_key=experts_key(d, source, "num_experts", "num_local_experts"), default_theta=1e4, eps=1e-6
    )
    moe_inter = get_int(d, "moe_intermediate_size", source)
    bias = bool(d.get("attention_bias", False))
    return ModelConfig(
        **f,
        moe_intermediate_size=moe_inter,
        intermediate_size=get_int(d, "intermediate_size", source, moe_inter),
        moe_layer_ids=moe_layer_ids(d, f["num_layers"], source),
        qk_norm="per_head",
        qkv_bias=bias,
        o_bias=bias,
        sliding_window=get_int(d, "sliding_window", source) if d.get("use_sliding_window", False) else None,
    )


def to_hf(cfg: ModelConfig, dtype: str) -> dict[str, Any]:
    return {
        **common_to_hf(cfg, dtype),
        "num_experts": cfg.num_experts,
        "head_dim": cfg.head_dim,
        "moe_intermediate_size": cfg.moe_intermediate_size,
        "norm_topk_prob": cfg.norm_topk_prob,
        "mlp_only_layers": [i for i in range(cfg.num_layers) if i not in set(cfg.moe_layer_ids)],
        "decoder_sparse_step": 1,
        "attention_bias": cfg.qkv_bias,
        "use_sliding_window": cfg.sliding_window is not None,
        "sliding_window": cfg.sliding_window,
    }


FAMILY = Family("qwen3_moe", "Qwen3MoeForCausalLM", parse, to_hf)
