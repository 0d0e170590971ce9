"""GLM's "lite" MoE (``glm4_moe_lite``), as transformers' modeling_glm4_moe_lite computes it:
DeepSeek-V3's blocks under GLM's names — Multi-head Latent Attention (interleaved rotary pairs
when ``rope_interleave``), the sigmoid router with the selection-only ``e_score_correction_bias``
and expert groups, ungated shared experts — with the dense / MoE layers listed per layer in
``mlp_layer_types`` (``"dense"`` / ``"sparse"``; default: layer 0 dense) instead of
``first_k_dense_replace``. The hub's multi-token-prediction layer is skipped when loading.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rise_jax.models.config import ConfigError, ModelConfig, common_fields
from rise_jax.models.families import Family
from rise_jax.models.families.deepseek_v3 import sigmoid_router_fields
from rise_jax.models.families.deepseek_v3 import to_hf as deepseek_v3_to_hf
from rise_jax.models.families.fields import DEEPSEEK_NAMES, deepseek_moe_fields, mla_fields

MLP_LAYER_TYPES = ("dense", "sparse")


def parse(d: Mapping[str, Any], source: str) -> ModelConfig:
    d = {"n_group": 1, "topk_group": 1, "routed_scaling_factor": 1.8, **{k: v for k, v in d.items() if v is not None}}
    f = common_fields(d, source, experts_key="n_routed_experts", default_theta=1e4, eps=1e-5)
    f = {**f, **sigmoid_router_fields(d, source)}
    n = f["num_layers"]
    types = d.get("mlp_layer_types") or ["dense"] + ["sparse"] * (n - 1)
    if not isinstance(types, list | tuple) or len(types) != n or any(t not in MLP_LAYER_TYPES for t in types):
        raise ConfigError(
            f"{source}: mlp_layer_types must list 'dense' or 'sparse' for each of the {n} layers, got {types!r}"
        )
    if "sparse" not in types:
        raise ConfigError(f"{source}: mlp_layer_types has no 'sparse' (MoE) layer")
    moe = {**deepseek_moe_fields({**d, "first_k_dense_replace": 0}, f, source, first_k_default=0)}
    moe["moe_layer_ids"] = tuple(i for i, t in enumerate(types) if t == "sparse")
    return ModelConfig(**{**f, **mla_fields(d, f, source)}, **moe, rope_interleave=bool(d.get("rope_interleave", True)))


def to_hf(cfg: ModelConfig, dtype: str) -> dict[str, Any]:
    out = deepseek_v3_to_hf(cfg, dtype)
    del out["first_k_dense_replace"]
    moe = set(cfg.moe_layer_ids)
    return {**out, "mlp_layer_types": ["sparse" if i in moe else "dense" for i in range(cfg.num_layers)]}


FAMILY = Family("glm4_moe_lite", "Glm4MoeLiteForCausalLM", parse, to_hf, DEEPSEEK_NAMES)
