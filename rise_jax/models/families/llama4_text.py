"""Llama-4's text model (``llama4_text``, Llama4ForCausalLM), as transformers' modeling_llama4
computes it (the multimodal ``llama4`` checkpoints nest it: :mod:`.llama4`).

* router (``topk_sigmoid``): top-k of the logits (Scout: k = 1 of 16), weight ``sigmoid`` of the
  chosen logit; the weight multiplies the expert's **input** (``router_scales_input``:
  ``Σ_e expert_e(s_e·x)``), and an ungated shared expert of the experts' width
  (``intermediate_size``) is added (docs/ROUTING.md);
* ``moe_layers`` (default every ``interleave_moe_layer_step``-th layer) are MoE, the others a dense
  MLP of width ``intermediate_size_mlp``;
* attention: ``no_rope_layers[i] == 1`` means layer ``i`` *uses* rope (complex products of
  adjacent pairs: ``rope_interleave``) and, with ``use_qk_norm``, a weightless L2 norm of q and k
  after it; the other layers (NoPE) scale their queries by the ``attn_temperature_tuning``
  temperature; ``layer_types`` ``chunked_attention`` layers see only their
  ``attention_chunk_size`` chunk (:mod:`rise_jax.models.attention_variants`);
* tensors under ``feed_forward.``: ``router``, ``shared_expert.{gate,up,down}_proj``, the fused
  ``experts.gate_up_proj`` ``[E, H, 2I]`` (gate columns, then up) and ``experts.down_proj``
  ``[E, I, H]``; dense layers ``feed_forward.{gate,up,down}_proj``.

Defaults for keys a ``config.json`` may omit are ``Llama4TextConfig``'s (transformers 5.23).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rise_jax.models.config import ConfigError, ModelConfig, common_fields, common_to_hf, get_float, get_int
from rise_jax.models.families import Family, HFNames
from rise_jax.models.families.fields import attention_biases

LAYER_TYPES = ("chunked_attention", "full_attention")

NAMES = HFNames(
    moe_prefix="feed_forward",
    router="feed_forward.router.weight",
    experts=None,
    fused="halves",
    fused_prefix="feed_forward.experts",
    dense_mlp="feed_forward",
    shared_expert="feed_forward.shared_expert",
)


def _flags(d: Mapping[str, Any], key: str, n: int, source: str, default: list[Any]) -> list[Any]:
    value = d.get(key) or default  # an empty list means the default, as in Llama4TextConfig
    if not isinstance(value, list | tuple) or len(value) != n:
        raise ConfigError(f"{source}: {key} must list one entry per layer ({n}), got {value!r}")
    return list(value)


def parse_text(d: Mapping[str, Any], source: str, model_type: str) -> ModelConfig:
    """A ``llama4_text`` config dict (the multimodal checkpoints' ``text_config``) as ``model_type``."""
    d = {**d, "model_type": model_type}
    d.setdefault("head_dim", 128)
    d.setdefault("max_position_embeddings", 4096 * 32)
    f = common_fields(d, source, experts_key="num_local_experts", default_theta=500000.0, eps=1e-5)
    n = f["num_layers"]
    interval = get_int(d, "no_rope_layer_interval", source, 4)
    uses_rope = _flags(d, "no_rope_layers", n, source, [int((i + 1) % interval != 0) for i in range(n)])
    if any(v not in (0, 1) for v in uses_rope):
        raise ConfigError(f"{source}: no_rope_layers entries must be 0 or 1, got {uses_rope!r}")
    types = _flags(d, "layer_types", n, source, ["chunked_attention" if r else "full_attention" for r in uses_rope])
    unknown = sorted({t for t in types if t not in LAYER_TYPES})
    if unknown:
        raise ConfigError(f"{source}: layer_types entry {unknown[0]!r} is not known (known: {', '.join(LAYER_TYPES)})")
    # transformers builds the chunked mask for every forward, so it needs the size whatever the layers.
    chunk = get_int(d, "attention_chunk_size", source, 8192)
    if "attention_chunk_size" in d and d["attention_chunk_size"] is None:
        raise ConfigError(f"{source}: attention_chunk_size is null (transformers' Llama-4 needs it)")
    step = get_int(d, "interleave_moe_layer_step", source, 1)
    moe = d.get("moe_layers")
    moe = list(range(step - 1, n, step)) if moe is None else moe
    if not isinstance(moe, list | tuple) or any(not isinstance(i, int) or not 0 <= i < n for i in moe):
        raise ConfigError(f"{source}: moe_layers must list layer indices in [0, {n}), got {moe!r}")
    inter = get_int(d, "intermediate_size", source, 8192)
    temperature = None
    if d.get("attn_temperature_tuning", True):
        temperature = (get_float(d, "floor_scale", source, 8192.0), get_float(d, "attn_scale", source, 0.1))
    return ModelConfig(
        **f,
        moe_intermediate_size=inter,
        intermediate_size=get_int(d, "intermediate_size_mlp", source, 16384),
        moe_layer_ids=tuple(sorted(set(moe))),
        **attention_biases(d),
        qk_norm="l2" if d.get("use_qk_norm", True) else None,
        rope_interleave=True,
        nope_layers=tuple(not r for r in uses_rope),
        attn_temperature=temperature,
        attention_chunk_size=chunk,
        sliding_layers=tuple(t == "chunked_attention" for t in types),
        router="topk_sigmoid",
        router_scales_input=True,
        shared_expert_size=inter,
        shared_expert_gate=False,
    )


def text_to_hf(cfg: ModelConfig, dtype: str) -> dict[str, Any]:
    """The ``llama4_text`` config dict of ``cfg`` (also the multimodal export's ``text_config``)."""
    floor_scale, attn_scale = cfg.attn_temperature or (8192.0, 0.1)
    return {
        **common_to_hf(cfg, dtype),
        "model_type": "llama4_text",
        "num_local_experts": cfg.num_experts,
        "head_dim": cfg.head_dim,
        "intermediate_size": cfg.moe_intermediate_size,
        "intermediate_size_mlp": cfg.intermediate_size,
        "moe_layers": list(cfg.moe_layer_ids),
        "no_rope_layers": [0 if nope else 1 for nope in cfg.nope_layers or (False,) * cfg.num_layers],
        "layer_types": ["chunked_attention" if c else "full_attention" for c in cfg.sliding_layers],
        "attention_chunk_size": cfg.attention_chunk_size,
        "use_qk_norm": cfg.qk_norm == "l2",
        "attn_temperature_tuning": cfg.attn_temperature is not None,
        "floor_scale": int(floor_scale) if float(floor_scale).is_integer() else floor_scale,
        "attn_scale": attn_scale,
        "attention_bias": cfg.qkv_bias,
    }


def parse(d: Mapping[str, Any], source: str) -> ModelConfig:
    return parse_text(d, source, "llama4_text")


FAMILY = Family("llama4_text", "Llama4ForCausalLM", parse, text_to_hf, NAMES)
