"""PhiMoE (``phimoe``, Phi-3.5-MoE): LayerNorm with bias, the sparsemixer router (always top-2),
longrope, optional lm_head bias and router/input jitter."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rise_jax.models.config import ConfigError, ModelConfig, common_fields, common_to_hf, get_int
from rise_jax.models.families import Family
from rise_jax.models.families.fields import (
    attention_biases,
    block_sparse_moe_names,
    every_layer_moe,
    experts_key,
    optional_int,
)


def parse(d: Mapping[str, Any], source: str) -> ModelConfig:
    f = common_fields(
        d, source, experts_key=experts_key(d, source, "num_experts", "num_local_experts"), default_theta=1e6, eps=1e-5
    )
    if f["top_k"] != 2:
        raise ConfigError(
            f"{source}: phimoe's sparsemixer router always selects exactly 2 experts; num_experts_per_tok={f['top_k']}"
        )
    inter = get_int(d, "intermediate_size", source)
    return ModelConfig(
        **f,
        **every_layer_moe(f, inter),
        norm="layer",
        **attention_biases(d),
        lm_head_bias=bool(d.get("lm_head_bias", False)),
        sliding_window=optional_int(d, "sliding_window", source),
        router="sparsemixer",
        router_jitter_noise=float(d.get("router_jitter_noise", 0.0) or 0.0),
        input_jitter_noise=float(d.get("input_jitter_noise", 0.0) or 0.0),
    )


def to_hf(cfg: ModelConfig, dtype: str) -> dict[str, Any]:
    d = {
        **common_to_hf(cfg, dtype),
        "num_local_experts": cfg.num_experts,
        "attention_bias": cfg.qkv_bias,
        "lm_head_bias": cfg.lm_head_bias,
        "router_jitter_noise": cfg.router_jitter_noise,
        "input_jitter_noise": cfg.input_jitter_noise,
        "sliding_window": cfg.sliding_window,
    }
    if cfg.rope.rope_type == "longrope":
        d["original_max_position_embeddings"] = cfg.rope.original_max_position_embeddings
    return d


# vLLM knows PhiMoE only by the hub's spelling ("PhiMoEForCausalLM", not transformers'
# "PhimoeForCausalLM", which sends vLLM to its generic Transformers fallback).
FAMILY = Family("phimoe", "PhiMoEForCausalLM", parse, to_hf, block_sparse_moe_names(router_alt="mlp.router.weight"))
