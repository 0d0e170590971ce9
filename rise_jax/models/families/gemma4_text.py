"""Gemma-4's MoE text model (``gemma4_text``, Gemma-4-26B-A4B's language model), as
transformers' ``Gemma4ForCausalLM`` computes it with ``enable_moe_block``.

* decoder layer (``ModelConfig.decoder_layer = "gemma4"``): RMSNorm before *and* after attention
  and feed-forward; the dense MLP (``intermediate_size``) and the MoE block run side by side on the
  same residual stream, each with its own pre/post norms, summed, normed again; every layer's
  output times a stored ``layer_scalar``;
* router (``Gemma4TextRouter``): reads the residual stream (not the experts' normed input) through
  a weight-free RMSNorm times a learned ``[H]`` scale times ``H^-1/2``; softmax over the experts,
  top-k, renormalised, then times a learned per-expert scale (applied to the combination weights,
  not reported in ``RoutingInfo``: docs/ROUTING.md);
* experts and dense MLP: ``gelu_pytorch_tanh(g) · u``; experts stored fused (``experts.gate_up_proj``
  ``[E, 2I, H]``, ``experts.down_proj`` ``[E, H, I]``);
* attention: per-head RMSNorm on q and k (with weight) and on v (without), softmax scale 1;
  sliding layers (``sliding_window``) with ``head_dim`` and ``num_key_value_heads``, full layers
  with ``global_head_dim`` and (when ``attention_k_eq_v``) ``num_global_key_value_heads`` and no
  ``v_proj`` (the values are the key projection); each kind its own ``rope_parameters`` entry
  (full layers: ``proportional`` rope); the last layer is always full (transformers forces it);
* embeddings times ``sqrt(hidden_size)``, tied LM head, ``final_logit_softcapping``;
* RMSNorm with the weight applied in fp32 (``Gemma4RMSNorm``: a plain weight, not Gemma-2's ``1 + w``).

Features the 26B-A4B text model does not use are refused, naming the key: per-layer input
embeddings (``hidden_size_per_layer_input`` > 0, the small E2B / E4B models), KV sharing across
layers (``num_kv_shared_layers`` > 0, ditto), bidirectional attention
(``use_bidirectional_attention = "all"``) and a dense model (``enable_moe_block = false``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rise_jax.models.config import (
    AttentionGeometry,
    ConfigError,
    ModelConfig,
    common_fields,
    common_to_hf,
    get_float,
    get_int,
    layer_types_to_hf,
    parse_layer_types,
    parse_rope,
    rope_to_hf,
)
from rise_jax.models.expert_mlp import DENSE_ACTIVATIONS
from rise_jax.models.families import Family, HFNames
from rise_jax.models.families.fields import attention_biases

# Gemma4TextConfig's defaults (transformers 5.23) for keys a config.json may omit.
_DEFAULT_ROPE = {
    "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
    "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1_000_000.0},
}
_DEFAULTS = {
    "vocab_size": 262_144,
    "hidden_size": 2304,
    "num_hidden_layers": 30,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 256,
    "max_position_embeddings": 131_072,
    "tie_word_embeddings": True,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "bos_token_id": 2,
}
# Keys whose non-default values describe blocks the MoE checkpoint does not have (see module doc).
_REFUSED = {
    "hidden_size_per_layer_input": "per-layer input embeddings are not supported",
    "num_kv_shared_layers": "key/value sharing across layers is not supported",
}


def _refuse_unsupported(d: Mapping[str, Any], source: str) -> None:
    for key, why in _REFUSED.items():
        if d.get(key):
            raise ConfigError(f"{source}: {key} = {d[key]!r}: {why} (only 0, as Gemma-4-26B-A4B sets it)")
    if not d.get("enable_moe_block", False):
        raise ConfigError(f"{source}: enable_moe_block = {d.get('enable_moe_block')!r}: a dense Gemma-4 has no experts")
    if d.get("use_bidirectional_attention") == "all":
        raise ConfigError(f"{source}: use_bidirectional_attention = 'all' is not supported (causal text only)")


def _full_overrides(d: Mapping[str, Any], full_layers: list[int], source: str) -> tuple[int, int | None]:
    """(head width, kv heads or None) of the full-attention layers: the hub's ``global_head_dim`` /
    ``num_global_key_value_heads``, or the ``per_layer_config`` transformers 5.23 saves instead."""
    per_layer = d.get("per_layer_config")
    if per_layer is None:
        kv = d.get("num_global_key_value_heads") if d.get("attention_k_eq_v", False) else None
        head = get_int(d, "global_head_dim", source, 512)
        return head, None if kv is None else get_int(d, "num_global_key_value_heads", source)
    if not isinstance(per_layer, Mapping) or sorted(int(k) for k in per_layer) != full_layers:
        raise ConfigError(f"{source}: per_layer_config must override exactly the full-attention layers {full_layers}")
    values = {tuple(sorted(v.items())) for v in per_layer.values()}
    if len(values) != 1 or not set(dict(next(iter(values)))) <= {"head_dim", "num_key_value_heads"}:
        raise ConfigError(
            f"{source}: per_layer_config must give every full-attention layer the same head_dim / kv heads"
        )
    one = dict(next(iter(values)))
    head = get_int(one, "head_dim", f"{source} per_layer_config")
    kv = None if "num_key_value_heads" not in one else get_int(one, "num_key_value_heads", f"{source} per_layer_config")
    return head, kv


def parse(d: Mapping[str, Any], source: str) -> ModelConfig:
    _refuse_unsupported(d, source)
    d = {**_DEFAULTS, **{k: v for k, v in d.items() if v is not None}}
    act = d.get("hidden_activation", "gelu_pytorch_tanh")
    if act not in DENSE_ACTIVATIONS:
        raise ConfigError(
            f"{source}: hidden_activation {act!r} is not supported (supported: {list(DENSE_ACTIVATIONS)})"
        )
    ropes = d.get("rope_parameters") or _DEFAULT_ROPE
    if not isinstance(ropes, Mapping) or set(ropes) - set(_DEFAULT_ROPE):
        raise ConfigError(f"{source}: rope_parameters must map sliding_attention / full_attention to rope parameters")
    rope = {kind: parse_rope({"rope_parameters": ropes.get(kind)}, source, 10_000.0) for kind in _DEFAULT_ROPE}
    d["num_experts_per_tok"] = get_int(d, "top_k_experts", source)
    f = common_fields(
        {**d, "rope_parameters": ropes.get("sliding_attention")},
        source,
        experts_key="num_experts",
        default_theta=10_000.0,
        eps=1e-6,
    )
    n = f["num_layers"]
    types = list(d.get("layer_types") or ["sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(n)])
    if types and types[-1] != "full_attention":  # Gemma4TextConfig forces it (with a warning)
        types[-1] = "full_attention"
    sliding = parse_layer_types({"layer_types": types}, n, source, types)
    k_eq_v = bool(d.get("attention_k_eq_v", False))
    head, kv = _full_overrides(d, [i for i, s in enumerate(sliding) if not s], source)
    kv = f["num_kv_heads"] if kv is None else kv
    if f["num_heads"] % kv:
        raise ConfigError(
            f"{source}: num_attention_heads = {f['num_heads']} is not a multiple of the full layers' {kv}"
        )
    cap = d.get("final_logit_softcapping")
    return ModelConfig(
        **{**f, "hidden_act": act, "norm_topk_prob": True},
        moe_intermediate_size=get_int(d, "moe_intermediate_size", source),
        intermediate_size=get_int(d, "intermediate_size", source, 9216),
        moe_layer_ids=tuple(range(n)),
        norm="rms_fp32",
        qk_norm="per_head",
        v_norm=True,
        **attention_biases(d),
        sliding_window=get_int(d, "sliding_window", source, 512) if any(sliding) else None,
        sliding_layers=sliding if any(sliding) else None,
        full_attention=AttentionGeometry(head, kv, k_eq_v, rope["full_attention"]),
        decoder_layer="gemma4",
        embed_scale=True,
        final_logit_softcap=None if cap is None else get_float(d, "final_logit_softcapping", source),
        attention_scale=1.0,
        router_input_norm=True,
        router_expert_scale=True,
        expert_act=DENSE_ACTIVATIONS[act],
    )


def to_hf(cfg: ModelConfig, dtype: str) -> dict[str, Any]:
    full = cfg.full_attention
    out = common_to_hf(cfg, dtype)
    for key in ("num_experts_per_tok", "hidden_act"):  # Gemma-4 spells them top_k_experts / hidden_activation
        out.pop(key)
    out.update(
        num_experts=cfg.num_experts,
        top_k_experts=cfg.top_k,
        moe_intermediate_size=cfg.moe_intermediate_size,
        enable_moe_block=True,
        hidden_activation=cfg.hidden_act,
        head_dim=cfg.head_dim,
        global_head_dim=full.head_dim,
        attention_k_eq_v=full.k_eq_v,
        attention_bias=cfg.qkv_bias,
        sliding_window=cfg.sliding_window or 512,
        layer_types=layer_types_to_hf(cfg),
        rope_parameters={"sliding_attention": rope_to_hf(cfg.rope), "full_attention": rope_to_hf(full.rope)},
        final_logit_softcapping=cfg.final_logit_softcap,
        hidden_size_per_layer_input=0,
        num_kv_shared_layers=0,
    )
    if full.k_eq_v:
        out["num_global_key_value_heads"] = full.num_kv_heads
    return out


FAMILY = Family(
    "gemma4_text",
    "Gemma4ForCausalLM",
    parse,
    to_hf,
    HFNames(
        router="router.proj.weight",
        router_scale="router.scale",
        router_expert_scale="router.per_expert_scale",
        experts=None,
        fused_prefix="experts",
    ),
)
