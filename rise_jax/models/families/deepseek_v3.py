"""DeepSeek-V3 (``deepseek_v3``: DeepSeek-V3 / R1), as transformers'
modeling_deepseek_v3 computes it: DeepSeek-V2's Multi-head Latent Attention (rotary pairs
interleaved when ``rope_interleave``, the default), and the sigmoid router with the
``e_score_correction_bias`` used for **selection only** (see :mod:`rise_jax.models.routers`,
``docs/ROUTING.md``): group-limited top-k over ``n_group`` groups (a group scores the sum of its
two best biased scores, ``topk_group`` groups kept), weights the unbiased sigmoid scores,
renormalised when ``norm_topk_prob``, times ``routed_scaling_factor``; shared experts; the
first ``first_k_dense_replace`` layers dense. The hub's multi-token-prediction layers
(``model.layers.{num_hidden_layers + j}``, as many as ``num_nextn_predict_layers``) are not part
of the model and are skipped when loading (``checkpoints.hf_load.mtp_layers``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rise_jax.models.config import ModelConfig, common_fields, common_to_hf
from rise_jax.models.families import Family
from rise_jax.models.families.fields import (
    DEEPSEEK_NAMES,
    check_choice,
    deepseek_moe_fields,
    deepseek_moe_to_hf,
    mla_fields,
    mla_to_hf,
)


def sigmoid_router_fields(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The router keys DeepSeek-V3 and GLM-4.5 share (``scoring_func`` / ``topk_method``, which
    transformers ignores, are checked to be the sigmoid ``noaux_tc`` router it implements)."""
    check_choice(d, "scoring_func", source, ("sigmoid",))
    check_choice(d, "topk_method", source, ("noaux_tc",))
    return dict(router="sigmoid_topk", router_selection_bias=True, norm_topk_prob=bool(d.get("norm_topk_prob", True)))


def parse(d: Mapping[str, Any], source: str) -> ModelConfig:
    d = {"n_group": 8, "topk_group": 4, "routed_scaling_factor": 2.5, **{k: v for k, v in d.items() if v is not None}}
    f = common_fields(d, source, experts_key="n_routed_experts", default_theta=1e4, eps=1e-6)
    f = {**f, **sigmoid_router_fields(d, source)}
    moe = deepseek_moe_fields(d, f, source, first_k_default=3)
    return ModelConfig(**{**f, **mla_fields(d, f, source)}, **moe, rope_interleave=bool(d.get("rope_interleave", True)))


def to_hf(cfg: ModelConfig, dtype: str) -> dict[str, Any]:
    return {
        **common_to_hf(cfg, dtype),
        **deepseek_moe_to_hf(cfg),
        **mla_to_hf(cfg),
        "rope_interleave": cfg.rope_interleave,
    }


FAMILY = Family("deepseek_v3", "DeepseekV3ForCausalLM", parse, to_hf, DEEPSEEK_NAMES)
