"""Qwen3-Next (``qwen3_next``, e.g. Qwen3-Next-80B-A3B), as transformers' modeling_qwen3_next
computes it: a hybrid decoder whose ``layer_types`` mix Gated DeltaNet linear attention
(:mod:`rise_jax.models.linear_attention`; ``linear_*`` keys, the fused ``in_proj_qkvz`` /
``in_proj_ba`` projections) with gated softmax attention (``q_proj`` twice as wide: each head's
output scaled by ``sigmoid(gate)``; per-head q/k norm; partial rotary, ``partial_rotary_factor``
0.25 by default), zero-centred ``(1 + w)`` RMSNorms everywhere, and Qwen2-MoE's MoE block:
a softmax top-k router (renormalised by default) plus a shared expert scaled by
``sigmoid(x · w)``. The hub's multi-token-prediction tensors (``mtp.*``) are not part of the
model: loading skips them (transformers does too) and an export from the source checkpoint
carries them over unchanged.

The helpers here are shared with Qwen3.5 (:mod:`rise_jax.models.families.qwen3_5_moe`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rise_jax.models.config import (
    ConfigError,
    LinearAttentionConfig,
    ModelConfig,
    common_fields,
    common_to_hf,
    get_int,
)
from rise_jax.models.families import Family, HFNames
from rise_jax.models.families.fields import attention_biases, moe_layer_ids, moe_layers_to_hf

HYBRID_LAYER_TYPES = ("linear_attention", "full_attention")
MTP = r"^mtp\."  # the multi-token-prediction head the hub checkpoints publish beside the model


def with_hybrid_defaults(d: Mapping[str, Any]) -> dict[str, Any]:
    """``d`` with transformers' defaults for the keys its config classes fill in themselves:
    ``head_dim`` 256 (not ``hidden / heads``), ``partial_rotary_factor`` 0.25."""
    out = {k: v for k, v in d.items() if v is not None}
    out.setdefault("head_dim", 256)
    rope = out.get("rope_parameters") or out.get("rope_scaling") or {}
    if "partial_rotary_factor" not in out and "partial_rotary_factor" not in rope:
        out["partial_rotary_factor"] = 0.25
    return out


def linear_layers(d: Mapping[str, Any], num_layers: int, source: str) -> tuple[bool, ...]:
    """Per layer: Gated DeltaNet (True) or softmax attention, from ``layer_types``, else every
    ``full_attention_interval``-th layer (default 4) softmax attention, as transformers fills it."""
    types = d.get("layer_types")
    if types is None:
        interval = get_int(d, "full_attention_interval", source, 4)
        return tuple(bool((i + 1) % interval) for i in range(num_layers))
    if not isinstance(types, list | tuple) or len(types) != num_layers:
        raise ConfigError(f"{source}: layer_types must list one entry per layer ({num_layers}), got {types!r}")
    unknown = sorted({t for t in types if t not in HYBRID_LAYER_TYPES})
    if unknown:
        raise ConfigError(
            f"{source}: layer_types entry {unknown[0]!r} is not known (known: {', '.join(HYBRID_LAYER_TYPES)})"
        )
    return tuple(t == "linear_attention" for t in types)


def hybrid_fields(d: Mapping[str, Any], source: str, projection: str) -> dict[str, Any]:
    """The ``ModelConfig`` fields Qwen3-Next and Qwen3.5 share (``d`` already through
    :func:`with_hybrid_defaults`): the blocks, the linear-attention widths, the shared expert."""
    f = common_fields(d, source, experts_key="num_experts", default_theta=1e4, eps=1e-6)
    lin = LinearAttentionConfig(
        num_k_heads=get_int(d, "linear_num_key_heads", source, 16),
        num_v_heads=get_int(d, "linear_num_value_heads", source, 32),
        k_head_dim=get_int(d, "linear_key_head_dim", source, 128),
        v_head_dim=get_int(d, "linear_value_head_dim", source, 128),
        conv_kernel=get_int(d, "linear_conv_kernel_dim", source, 4),
        projection=projection,
    )
    return dict(
        **f,
        linear_layers=linear_layers(d, f["num_layers"], source),
        linear=lin,
        norm="rms_offset",
        qk_norm="per_head",
        attn_output_gate=True,
        **attention_biases(d),
        shared_expert_size=get_int(d, "shared_expert_intermediate_size", source, 512),
    )


def hybrid_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    lin = cfg.linear
    return {
        "num_experts": cfg.num_experts,
        "head_dim": cfg.head_dim,
        "moe_intermediate_size": cfg.moe_intermediate_size,
        "shared_expert_intermediate_size": cfg.shared_expert_size,
        "attention_bias": cfg.qkv_bias,
        "layer_types": [HYBRID_LAYER_TYPES[0] if x else HYBRID_LAYER_TYPES[1] for x in cfg.is_linear_layer],
        "linear_num_key_heads": lin.num_k_heads,
        "linear_num_value_heads": lin.num_v_heads,
        "linear_key_head_dim": lin.k_head_dim,
        "linear_value_head_dim": lin.v_head_dim,
        "linear_conv_kernel_dim": lin.conv_kernel,
    }


def parse(d: Mapping[str, Any], source: str) -> ModelConfig:
    d = with_hybrid_defaults(d)
    f = hybrid_fields(d, source, "qkvz")
    f["norm_topk_prob"] = bool(d.get("norm_topk_prob", True))
    return ModelConfig(
        **f,
        moe_intermediate_size=get_int(d, "moe_intermediate_size", source, 512),
        intermediate_size=get_int(d, "intermediate_size", source, 5632),
        moe_layer_ids=moe_layer_ids(d, f["num_layers"], source),
    )


def to_hf(cfg: ModelConfig, dtype: str) -> dict[str, Any]:
    return {**common_to_hf(cfg, dtype), **hybrid_to_hf(cfg), **moe_layers_to_hf(cfg)}


FAMILY = Family(
    "qwen3_next", "Qwen3NextForCausalLM", parse, to_hf, HFNames(shared_expert="mlp.shared_expert", skipped=(MTP,))
)
