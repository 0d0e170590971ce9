"""OLMoE (``olmoe``, OLMoE-1B-7B): q/k RMSNorm over the whole projection width (not per head),
optional ``clip_qkv``, softmax router with ``norm_topk_prob`` from the config (false for
OLMoE-1B-7B), full causal attention (no sliding window)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rise_jax.models.config import ModelConfig, common_fields, common_to_hf, get_float, get_int
from rise_jax.models.families import Family
from rise_jax.models.families.fields import attention_biases, every_layer_moe


def parse(d: Mapping[str, Any], source: str) -> ModelConfig:
    f = common_fields(d, source, experts_key="num_experts", default_theta=1e4, eps=1e-5)
    inter = get_int(d, "intermediate_size", source, 2048)
    clip = d.get("clip_qkv")
    return ModelConfig(
        **f,
        **every_layer_moe(f, inter),
        qk_norm="full",
        clip_qkv=None if clip is None else get_float(d, "clip_qkv", source),
        **attention_biases(d),
    )


def to_hf(cfg: ModelConfig, dtype: str) -> dict[str, Any]:
    return {
        **common_to_hf(cfg, dtype),
        "num_experts": cfg.num_experts,
        "norm_topk_prob": cfg.norm_topk_prob,
        "attention_bias": cfg.qkv_bias,
        "clip_qkv": cfg.clip_qkv,
    }


FAMILY = Family("olmoe", "OlmoeForCausalLM", parse, to_hf)
