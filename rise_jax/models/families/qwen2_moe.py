"""Qwen2-MoE (``qwen2_moe``, e.g. Qwen1.5-MoE-A2.7B, the RISE reference's third model): q/k/v
biases (none on o_proj), a dense shared expert whose output is scaled by
``sigmoid(x · w_gate)`` and added to the routed output, ``norm_topk_prob`` from the config,
``mlp_only_layers`` / ``decoder_sparse_step``, sliding windows per ``layer_types``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rise_jax.models.config import (
    ModelConfig,
    common_fields,
    common_to_hf,
    get_int,
    layer_types_to_hf,
    parse_layer_types,
)
from rise_jax.models.families import Family, HFNames
from rise_jax.models.families.fields import moe_layer_ids, moe_layers_to_hf


def parse(d: Mapping[str, Any], source: str) -> ModelConfig:
    f = common_fields(d, source, experts_key="num_experts", default_theta=1e4, eps=1e-6)
    n = f["num_layers"]
    use_window = bool(d.get("use_sliding_window", False))
    max_window = get_int(d, "max_window_layers", source, 28, minimum=0)
    default_types = [
        "sliding_attention" if (i + 1) % 2 and i < max_window and use_window else "full_attention" for i in range(n)
    ]
    sliding = parse_layer_types(d, n, source, default_types)
    window = get_int(d, "sliding_window", source, 4096) if use_window and any(sliding) else None
    return ModelConfig(
        **f,
        moe_intermediate_size=get_int(d, "moe_intermediate_size", source, 1408),
        intermediate_size=get_int(d, "intermediate_size", source, 5632),
        moe_layer_ids=moe_layer_ids(d, n, source),
        qkv_bias=bool(d.get("qkv_bias", True)),
        sliding_window=window,
        sliding_layers=sliding if window is not None else None,
        shared_expert_size=get_int(d, "shared_expert_intermediate_size", source, 5632),
    )


def to_hf(cfg: ModelConfig, dtype: str) -> dict[str, Any]:
    return {
        **common_to_hf(cfg, dtype),
        "num_experts": cfg.num_experts,
        "moe_intermediate_size": cfg.moe_intermediate_size,
        "shared_expert_intermediate_size": cfg.shared_expert_size,
        **moe_layers_to_hf(cfg),
        "qkv_bias": cfg.qkv_bias,
        "use_sliding_window": cfg.sliding_window is not None,
        "sliding_window": cfg.sliding_window,
        "max_window_layers": cfg.num_layers,
        "layer_types": layer_types_to_hf(cfg),
    }


FAMILY = Family("qwen2_moe", "Qwen2MoeForCausalLM", parse, to_hf, HFNames(shared_expert="mlp.shared_expert"))
