"""DeepSeek-V2 (``deepseek_v2``: DeepSeek-V2, DeepSeek-V2-Lite, ESFT's model), as transformers'
modeling_deepseek_v2 computes it.

* attention: Multi-head Latent Attention (:class:`~rise_jax.models.layers.MLAttention`), with or
  without ``q_lora_rank``; rotary pairs interleaved (DeepSeek's complex rope); YaRN with
  ``mscale`` / ``mscale_all_dim`` (the softmax scale grows by ``mscale(factor, mscale_all_dim)^2``);
* router: softmax over all experts, ``topk_method`` ``greedy`` (plain top-k) or
  ``group_limited_greedy`` (only the ``topk_group`` best of ``n_group`` groups, a group scored by
  its best expert); the weights are the top-k probabilities, never renormalised (transformers'
  DeepseekV2TopkRouter ignores ``norm_topk_prob``), times ``routed_scaling_factor``;
* ``n_shared_experts`` always-active experts as one ungated MLP; the first ``first_k_dense_replace``
  layers have a dense MLP instead of the MoE block.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rise_jax.models.config import ConfigError, ModelConfig, common_fields, common_to_hf
from rise_jax.models.families import Family
from rise_jax.models.families.fields import (
    DEEPSEEK_NAMES,
    check_choice,
    deepseek_moe_fields,
    deepseek_moe_to_hf,
    mla_fields,
    mla_to_hf,
)

TOPK_METHODS = ("greedy", "group_limited_greedy")


def parse(d: Mapping[str, Any], source: str) -> ModelConfig:
    f = common_fields(d, source, experts_key="n_routed_experts", default_theta=1e4, eps=1e-6)
    method = d.get("topk_method") or "greedy"
    if method not in TOPK_METHODS:
        raise ConfigError(f"{source}: topk_method = {method!r} is not supported (supported: {', '.join(TOPK_METHODS)})")
    check_choice(d, "scoring_func", source, ("softmax",))
    moe = deepseek_moe_fields(d, f, source, first_k_default=0)
    if method == "greedy":  # n_group / topk_group are read only by group_limited_greedy
        moe.update(router_groups=1, router_topk_groups=1)
    elif d.get("n_group") is None or d.get("topk_group") is None:
        raise ConfigError(f"{source}: topk_method = 'group_limited_greedy' needs n_group and topk_group")
    f = {**f, "norm_topk_prob": False}
    return ModelConfig(**{**f, **mla_fields(d, f, source)}, **moe, rope_interleave=True)


def to_hf(cfg: ModelConfig, dtype: str) -> dict[str, Any]:
    grouped = cfg.router_groups > 1 and cfg.router_topk_groups < cfg.router_groups
    return {
        **common_to_hf(cfg, dtype),
        **deepseek_moe_to_hf(cfg),
        **mla_to_hf(cfg),
        "topk_method": "group_limited_greedy" if grouped else "greedy",
    }


FAMILY = Family("deepseek_v2", "DeepseekV2ForCausalLM", parse, to_hf, DEEPSEEK_NAMES)
