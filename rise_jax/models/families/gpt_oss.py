"""GPT-OSS (``gpt_oss``, gpt-oss-20b), as transformers' modeling_gpt_oss computes it.

* attention: q/k/v/o biases, a learned per-head *sink* logit joining every softmax, sliding-window
  and full attention alternating per ``layer_types``, YaRN rope;
* router: logits with a bias, top-k on the logits, softmax over the k selected
  (``RoutingInfo.topk_weights``); ``RoutingInfo.router_probs()`` stays the softmax over all
  experts, the distribution the divergence analysis needs;
* experts: biases on every projection and the clamped SwiGLU
  ``min(g, L)·sigmoid(α·min(g, L))·(clip(u, -L, L) + 1)``; the hub stores the fused
  ``gate_up_proj`` ``[E, H, 2I]`` with gate/up interleaved in the columns, as MXFP4
  (``*_blocks``/``*_scales``), which the reader dequantises tensor by tensor
  (:mod:`rise_jax.checkpoints.mxfp4`); exports write dequantised experts;
* norms: RMSNorm with the weight applied in fp32.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rise_jax.models.config import (
    ModelConfig,
    common_fields,
    common_to_hf,
    get_float,
    get_int,
    layer_types_to_hf,
    parse_layer_types,
)
from rise_jax.models.families import Family, HFNames
from rise_jax.models.families.fields import attention_biases, every_layer_moe

# GptOssConfig's defaults (transformers 5.23) for keys a config.json may omit.
_DEFAULT_ROPE = {
    "rope_type": "yarn",
    "factor": 32.0,
    "beta_fast": 32.0,
    "beta_slow": 1.0,
    "truncate": False,
    "original_max_position_embeddings": 4096,
}


def parse(d: Mapping[str, Any], source: str) -> ModelConfig:
    d = dict(d)
    d.setdefault("head_dim", 64)
    d.setdefault("max_position_embeddings", 131072)
    if not d.get("rope_parameters") and not d.get("rope_scaling"):
        d["rope_parameters"] = dict(_DEFAULT_ROPE)
    f = common_fields(d, source, experts_key="num_local_experts", default_theta=150000.0, eps=1e-5)
    n = f["num_layers"]
    sliding = parse_layer_types(
        d, n, source, ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(n)]
    )
    inter = get_int(d, "intermediate_size", source, 2880)
    window = get_int(d, "sliding_window", source, 128) if any(sliding) else None
    return ModelConfig(
        **f,
        **every_layer_moe(f, inter),
        norm="rms_fp32",
        **attention_biases(d, default=True),
        attention_sinks=True,
        sliding_window=window,
        sliding_layers=sliding if window is not None else None,
        router="topk_softmax",
        router_bias=True,
        expert_act="clamped_swiglu",
        expert_bias=True,
        swiglu_alpha=get_float(d, "swiglu_alpha", source, 1.702),
        swiglu_limit=get_float(d, "swiglu_limit", source, 7.0),
    )


def to_hf(cfg: ModelConfig, dtype: str) -> dict[str, Any]:
    return {
        **common_to_hf(cfg, dtype),
        "num_local_experts": cfg.num_experts,
        "head_dim": cfg.head_dim,
        "attention_bias": cfg.qkv_bias,
        "sliding_window": cfg.sliding_window or 128,
        "layer_types": layer_types_to_hf(cfg),
        "swiglu_alpha": cfg.swiglu_alpha,
        "swiglu_limit": cfg.swiglu_limit,
    }


FAMILY = Family(
    "gpt_oss",
    "GptOssForCausalLM",
    parse,
    to_hf,
    HFNames(router="mlp.router.weight", experts=None, fused="interleaved"),
)
