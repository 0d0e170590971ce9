"""Qwen3.5-MoE's language model (``qwen3_5_moe_text``: ``Qwen3_5MoeForCausalLM``), the text part
of the Qwen3.5 MoE checkpoints (e.g. Qwen3.5-35B-A3B): Qwen3-Next's blocks
(:mod:`rise_jax.models.families.qwen3_next`: Gated DeltaNet mixed with gated softmax attention by
``layer_types``, ``(1 + w)`` RMSNorms, a shared expert behind a sigmoid gate) with Qwen3.5's
layout: the linear attention's four input projections ``in_proj_qkv`` (``[all q, all k, all v]``),
``in_proj_z``, ``in_proj_b``, ``in_proj_a``; every layer MoE; the router always renormalises its
top-k (the config has no ``norm_topk_prob``). The rotary embedding is the multimodal one (MRoPE,
``mrope_section``): for text, whose three position axes are equal, it is the ordinary partial
rotary embedding, which is what this family computes. The hub's ``mtp.*`` tensors and a vision
tower (``model.visual.*``) are skipped when loading and carried over unchanged by an export.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rise_jax.models.config import ModelConfig, common_to_hf, get_int
from rise_jax.models.families import Family, HFNames
from rise_jax.models.families.fields import every_layer_moe
from rise_jax.models.families.qwen3_next import MTP, hybrid_fields, hybrid_to_hf, with_hybrid_defaults

VISION = r"^model\.visual\."


def parse(d: Mapping[str, Any], source: str) -> ModelConfig:
    d = with_hybrid_defaults(d)
    f = hybrid_fields(d, source, "split")
    f["norm_topk_prob"] = True  # Qwen3_5MoeTopKRouter always renormalises
    return ModelConfig(**f, **every_layer_moe(f, get_int(d, "moe_intermediate_size", source, 512)))


def to_hf(cfg: ModelConfig, dtype: str) -> dict[str, Any]:
    out = {**common_to_hf(cfg, dtype), **hybrid_to_hf(cfg)}
    out.pop("intermediate_size")  # Qwen3_5MoeTextConfig has none (every layer is MoE)
    return out


NAMES = HFNames(shared_expert="mlp.shared_expert", skipped=(MTP, VISION))
FAMILY = Family("qwen3_5_moe_text", "Qwen3_5MoeForCausalLM", parse, to_hf, NAMES)
