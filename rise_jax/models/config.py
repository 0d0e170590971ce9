"""Architecture description of a Qwen3-MoE or PhiMoE model, parsed from an HF ``config.json``.

One frozen dataclass serves both families: the fields are the union of what the two HF modeling
files read, normalised (``num_experts``/``num_local_experts`` -> ``num_experts``; 4.x-style
``rope_theta``/``rope_scaling`` and 5.x-style ``rope_parameters`` -> :class:`RopeConfig`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from rise_jax.errors import RiseError

SUPPORTED_MODEL_TYPES = ("qwen3_moe", "phimoe")
SUPPORTED_ROPE_TYPES = ("default", "longrope")

# HF class defaults (transformers 5.23 configuration_*.py) used when config.json omits a key.
_DEFAULT_THETA = {"qwen3_moe": 10000.0, "phimoe": 1000000.0}


class ConfigError(RiseError, ValueError):
    """A config.json that cannot describe a supported model; the message names file and key."""


@dataclasses.dataclass(frozen=True)
class RopeConfig:
    """Rotary embedding parameters.

    ``longrope`` follows the installed transformers PhiMoE code exactly: the inverse frequencies
    always use ``short_factor`` (PhimoeRotaryEmbedding.forward recomputes them without a sequence
    length), and the cos/sin scale is ``long_mscale`` when ``max(position)+1`` exceeds
    ``original_max_position_embeddings``, else ``short_mscale``.
    """

    rope_type: str = "default"
    theta: float = 10000.0
    short_factor: tuple[float, ...] | None = None
    long_factor: tuple[float, ...] | None = None
    short_mscale: float | None = None
    long_mscale: float | None = None
    original_max_position_embeddings: int | None = None
    partial_rotary_factor: float = 1.0


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything the forward pass needs to know about an architecture (no runtime options)."""

    model_type: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    num_experts: int
    top_k: int
    moe_intermediate_size: int
    intermediate_size: int  # dense MLP width (Qwen3 mlp_only layers); PhiMoE: expert width
    norm_eps: float
    rope: RopeConfig
    max_position_embeddings: int
    moe_layer_ids: tuple[int, ...]  # which decoder layers have an MoE block (others: dense MLP)
    norm_topk_prob: bool = False
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    lm_head_bias: bool = False
    sliding_window: int | None = None
    router_jitter_noise: float = 0.0
    input_jitter_noise: float = 0.0
    hidden_act: str = "silu"
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None

    @property
    def num_moe_layers(self) -> int:
        return len(self.moe_layer_ids)

    @property
    def is_moe_layer(self) -> tuple[bool, ...]:
        ids = set(self.moe_layer_ids)
        return tuple(i in ids for i in range(self.num_layers))

    @property
    def uses_layer_norm(self) -> bool:
        """PhiMoE uses LayerNorm with bias; Qwen3-MoE uses RMSNorm."""
        return self.model_type == "phimoe"

    @property
    def uses_qk_norm(self) -> bool:
        return self.model_type == "qwen3_moe"

    @property
    def router_type(self) -> str:
        return "sparsemixer" if self.model_type == "phimoe" else "softmax_topk"


def _get(d: Mapping[str, Any], key: str, source: str, default: Any = dataclasses.MISSING) -> Any:
    if key in d and d[key] is not None:
        return d[key]
    if default is dataclasses.MISSING:
        raise ConfigError(f"{source}: required key {key!r} is missing")
    return default


def _int(d: Mapping[str, Any], key: str, source: str, default: Any = dataclasses.MISSING, minimum: int = 1) -> int:
    """A whole-number field (``True`` and ``"8"`` are not), at least ``minimum``; else a ConfigError."""
    value = _get(d, key, source, default)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{source}: {key} = {value!r} must be a whole number >= {minimum}")
    return value


def _rope_from_hf(d: Mapping[str, Any], model_type: str, source: str) -> RopeConfig:
    """Accept 5.x ``rope_parameters`` and 4.x ``rope_theta`` + ``rope_scaling`` alike."""
    params = dict(d.get("rope_parameters") or d.get("rope_scaling") or {})
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ConfigError(f"{source}: rope type {rope_type!r} is not supported (supported: {SUPPORTED_ROPE_TYPES})")
    theta = params.get("rope_theta", d.get("rope_theta", _DEFAULT_THETA[model_type]))
    partial = params.get("partial_rotary_factor", d.get("partial_rotary_factor", 1.0))
    if rope_type == "default":
        return RopeConfig("default", float(theta), partial_rotary_factor=float(partial))
    # longrope: the top-level original_max_position_embeddings wins, as in HF standardize_rope_params.
    orig = d.get("original_max_position_embeddings") or params.get("original_max_position_embeddings")
    if orig is None:
        orig = _get(d, "max_position_embeddings", source)
    for key in ("short_factor", "long_factor", "short_mscale", "long_mscale"):
        if key not in params:
            raise ConfigError(f"{source}: longrope parameters need {key!r}")
    return RopeConfig(
        "longrope",
        float(theta),
        short_factor=tuple(float(x) for x in params["short_factor"]),
        long_factor=tuple(float(x) for x in params["long_factor"]),
        short_mscale=float(params["short_mscale"]),
        long_mscale=float(params["long_mscale"]),
        original_max_position_embeddings=int(orig),
        partial_rotary_factor=float(partial),
    )


def config_from_hf_dict(d: Mapping[str, Any], source: str = "config.json") -> ModelConfig:
    """Parse an HF config dict (as in ``config.json``) into a :class:`ModelConfig`.

    Raises :class:`ConfigError` naming ``source`` and the offending key.
    """
    model_type = d.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(
            f"{source}: model_type {model_type!r} is not supported (supported: {', '.join(SUPPORTED_MODEL_TYPES)})"
        )
    hidden = _int(d, "hidden_size", source)
    heads = _int(d, "num_attention_heads", source)
    num_layers = _int(d, "num_hidden_layers", source)
    experts_key = "num_experts" if d.get("num_experts") is not None else "num_local_experts"
    if d.get(experts_key) is None:
        raise ConfigError(f"{source}: neither 'num_experts' nor 'num_local_experts' is set")
    experts = _int(d, experts_key, source)
    top_k = _int(d, "num_experts_per_tok", source)
    if not 0 < top_k <= experts:
        raise ConfigError(f"{source}: num_experts_per_tok={top_k} must be in [1, {experts}]")
    if model_type == "phimoe" and top_k != 2:
        raise ConfigError(
            f"{source}: phimoe's sparsemixer router always selects exactly 2 experts; num_experts_per_tok={top_k}"
        )
    head_dim = _int(d, "head_dim", source) if d.get("head_dim") else hidden // heads
    kv_heads = _int(d, "num_key_value_heads", source, heads)
    if heads % kv_heads:
        raise ConfigError(
            f"{source}: num_attention_heads = {heads} is not a multiple of num_key_value_heads = {kv_heads}"
        )
    if model_type == "qwen3_moe":
        mlp_only = set(d.get("mlp_only_layers") or [])
        step = int(d.get("decoder_sparse_step", 1) or 1)
        moe_ids = tuple(i for i in range(num_layers) if i not in mlp_only and experts > 0 and (i + 1) % step == 0)
        moe_inter = _int(d, "moe_intermediate_size", source)
        inter = _int(d, "intermediate_size", source, moe_inter)
        sliding = d.get("sliding_window") if d.get("use_sliding_window", False) else None
    else:
        moe_ids = tuple(range(num_layers))
        inter = _int(d, "intermediate_size", source)
        moe_inter = inter
        sliding = d.get("sliding_window")
    act = d.get("hidden_act", "silu")
    if act != "silu":
        raise ConfigError(f"{source}: hidden_act {act!r} is not supported (only 'silu')")
    return ModelConfig(
        model_type=model_type,
        vocab_size=_int(d, "vocab_size", source),
        hidden_size=hidden,
        num_layers=num_layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=int(head_dim),
        num_experts=experts,
        top_k=top_k,
        moe_intermediate_size=moe_inter,
        intermediate_size=inter,
        norm_eps=float(d.get("rms_norm_eps", 1e-6 if model_type == "qwen3_moe" else 1e-5)),
        rope=_rope_from_hf(d, model_type, source),
        max_position_embeddings=int(d.get("max_position_embeddings", 32768)),
        moe_layer_ids=moe_ids,
        norm_topk_prob=bool(d.get("norm_topk_prob", False)),
        tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
        attention_bias=bool(d.get("attention_bias", False)),
        lm_head_bias=bool(d.get("lm_head_bias", False)),
        sliding_window=None if sliding is None else int(sliding),
        router_jitter_noise=float(d.get("router_jitter_noise", 0.0) or 0.0),
        input_jitter_noise=float(d.get("input_jitter_noise", 0.0) or 0.0),
        hidden_act=act,
        bos_token_id=d.get("bos_token_id"),
        eos_token_id=d.get("eos_token_id"),
        pad_token_id=d.get("pad_token_id"),
    )


# The ``architectures`` entry of each family's hub checkpoint. transformers picks the class from
# ``model_type``; vLLM picks it from this name, and knows PhiMoE only by the hub's spelling
# ("PhiMoEForCausalLM", not transformers' "PhimoeForCausalLM", which sends vLLM to its generic
# Transformers fallback).
HUB_ARCHITECTURES = {"qwen3_moe": "Qwen3MoeForCausalLM", "phimoe": "PhiMoEForCausalLM"}


def config_to_hf_dict(cfg: ModelConfig, dtype: str = "float32") -> dict[str, Any]:
    """An HF ``config.json`` dict (transformers 5.x keys) that describes ``cfg``."""
    rope: dict[str, Any] = {"rope_type": cfg.rope.rope_type, "rope_theta": cfg.rope.theta}
    if cfg.rope.partial_rotary_factor != 1.0:
        rope["partial_rotary_factor"] = cfg.rope.partial_rotary_factor
    if cfg.rope.rope_type == "longrope":
        rope.update(
            short_factor=list(cfg.rope.short_factor or ()),
            long_factor=list(cfg.rope.long_factor or ()),
            short_mscale=cfg.rope.short_mscale,
            long_mscale=cfg.rope.long_mscale,
            original_max_position_embeddings=cfg.rope.original_max_position_embeddings,
        )
    d: dict[str, Any] = {
        "model_type": cfg.model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "num_experts_per_tok": cfg.top_k,
        "intermediate_size": cfg.intermediate_size,
        "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": cfg.norm_eps,
        "rope_parameters": rope,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "attention_bias": cfg.attention_bias,
        "hidden_act": cfg.hidden_act,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "pad_token_id": cfg.pad_token_id,
        "dtype": dtype,
    }
    if cfg.model_type == "qwen3_moe":
        dense = [i for i in range(cfg.num_layers) if i not in set(cfg.moe_layer_ids)]
        d.update(
            architectures=[HUB_ARCHITECTURES["qwen3_moe"]],
            num_experts=cfg.num_experts,
            head_dim=cfg.head_dim,
            moe_intermediate_size=cfg.moe_intermediate_size,
            norm_topk_prob=cfg.norm_topk_prob,
            mlp_only_layers=dense,
            decoder_sparse_step=1,
            use_sliding_window=cfg.sliding_window is not None,
            sliding_window=cfg.sliding_window,
        )
    else:
        d.update(
            architectures=[HUB_ARCHITECTURES["phimoe"]],
            num_local_experts=cfg.num_experts,
            lm_head_bias=cfg.lm_head_bias,
            router_jitter_noise=cfg.router_jitter_noise,
            input_jitter_noise=cfg.input_jitter_noise,
            sliding_window=cfg.sliding_window,
        )
        if cfg.rope.rope_type == "longrope":
            d["original_max_position_embeddings"] = cfg.rope.original_max_position_embeddings
    return d
