"""GLM-4.5 (``glm4_moe``: GLM-4.5, GLM-4.5-Air), as transformers' modeling_glm4_moe
computes it: grouped-query attention with q/k/v biases (``attention_bias``; none on o_proj),
per-head q/k RMSNorm when ``use_qk_norm``, partial rotary (``partial_rotary_factor``, 0.5 when
the config omits it, on the first half of each head in rotate-half layout); DeepSeek-V3's
sigmoid router with the selection-only ``e_score_correction_bias`` and expert groups
(:mod:`rise_jax.models.families.deepseek_v3`), ``n_shared_experts`` ungated shared experts, the
first ``first_k_dense_replace`` layers dense. The hub's multi-token-prediction layer is skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rise_jax.models.config import ModelConfig, common_fields, common_to_hf
from rise_jax.models.families import Family
from rise_jax.models.families.deepseek_v3 import sigmoid_router_fields
from rise_jax.models.families.fields import DEEPSEEK_NAMES, deepseek_moe_fields, deepseek_moe_to_hf


def parse(d: Mapping[str, Any], source: str) -> ModelConfig:
    d = dict(d)
    rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
    if "partial_rotary_factor" not in rope and d.get("partial_rotary_factor") is None:
        d["partial_rotary_factor"] = 0.5  # Glm4MoeConfig's default
    f = common_fields(d, source, experts_key="n_routed_experts", default_theta=1e4, eps=1e-5)
    f = {**f, **sigmoid_router_fields(d, source)}
    return ModelConfig(
        **f,
        **deepseek_moe_fields(d, f, source, first_k_default=1),
        qkv_bias=bool(d.get("attention_bias", False)),
        qk_norm="per_head" if d.get("use_qk_norm") else None,
    )


def to_hf(cfg: ModelConfig, dtype: str) -> dict[str, Any]:
    return {
        **common_to_hf(cfg, dtype),
        **deepseek_moe_to_hf(cfg),
        "head_dim": cfg.head_dim,
        "attention_bias": cfg.qkv_bias,
        "use_qk_norm": cfg.qk_norm is not None,
    }


FAMILY = Family("glm4_moe", "Glm4MoeForCausalLM", parse, to_hf, DEEPSEEK_NAMES)
