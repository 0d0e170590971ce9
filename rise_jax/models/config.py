"""Architecture description of a supported MoE model, parsed from an HF ``config.json``.

One frozen dataclass serves every family: the fields are the union of what the HF modeling files
read, normalised, plus the *block variants* a family uses (which norm, which q/k norm, which
router, which expert activation, biases, attention sinks, shared expert, per-layer sliding
windows). The model code implements each variant once; a family module
(:mod:`rise_jax.models.families`) says which variants its checkpoints use and how its
``config.json`` spells them. This module holds the dataclasses and the parsing helpers every
family shares (whole-number checks, RoPE in its 4.x and 5.x spellings).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from rise_jax.errors import RiseError

SUPPORTED_ROPE_TYPES = ("default", "longrope", "yarn", "llama3", "proportional")
NORMS = ("rms", "rms_fp32", "rms_offset", "layer")
QK_NORMS = (None, "per_head", "full", "l2")
ROUTERS = ("softmax_topk", "sparsemixer", "topk_softmax", "sigmoid_topk", "topk_sigmoid")
ATTENTIONS = ("gqa", "mla")
EXPERT_ACTIVATIONS = ("silu", "clamped_swiglu", "gelu_tanh")
DECODER_LAYERS = ("pre_norm", "gemma4")
LAYER_TYPES = ("full_attention", "sliding_attention")
LINEAR_PROJECTIONS = ("qkvz", "split")


class ConfigError(RiseError, ValueError):
    """A config.json that cannot describe a supported model; the message names file and key."""


@dataclasses.dataclass(frozen=True)
class RopeConfig:
    """Rotary embedding parameters.

    ``longrope`` follows the installed transformers PhiMoE code exactly: the inverse frequencies
    always use ``short_factor`` (PhimoeRotaryEmbedding.forward recomputes them without a sequence
    length), and the cos/sin scale is ``long_mscale`` when ``max(position)+1`` exceeds
    ``original_max_position_embeddings``, else ``short_mscale``.

    ``proportional`` (Gemma-4's full-attention layers) follows
    ``transformers.modeling_rope_utils._compute_proportional_rope_parameters``: the first
    ``int(partial_rotary_factor · head_dim // 2)`` frequencies are ``1/θ^(2i/head_dim)`` (the
    exponent over the *whole* head width), the rest 0 (those dims do not rotate), all divided by
    ``factor``; the rotation pairs dims ``(i, i + head_dim/2)`` over the whole head.

    ``yarn`` (GPT-OSS) follows ``transformers.modeling_rope_utils._compute_yarn_parameters``:
    inverse frequencies blended between ``1/θ^(2i/d)`` and ``1/(factor·θ^(2i/d))`` by a linear
    ramp over the correction range from ``beta_fast``/``beta_slow`` (floored/ceiled when
    ``truncate``), and cos/sin scaled by ``attention_factor`` (default ``0.1·ln(factor) + 1``).
    """

    rope_type: str = "default"
    theta: float = 10000.0
    short_factor: tuple[float, ...] | None = None
    long_factor: tuple[float, ...] | None = None
    short_mscale: float | None = None
    long_mscale: float | None = None
    original_max_position_embeddings: int | None = None
    partial_rotary_factor: float = 1.0
    factor: float | None = None  # yarn, proportional
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    truncate: bool = True
    attention_factor: float | None = None
    mscale: float | None = None
    mscale_all_dim: float | None = None
    low_freq_factor: float = 1.0  # llama3
    high_freq_factor: float = 4.0  # llama3


@dataclasses.dataclass(frozen=True)
class LinearAttentionConfig:
    """Gated DeltaNet layers (Qwen3-Next, Qwen3.5; :mod:`rise_jax.models.linear_attention`).

    ``num_k_heads`` query/key heads of width ``k_head_dim``, ``num_v_heads`` value heads of width
    ``v_head_dim`` (a multiple of the key heads: each key head serves ``num_v_heads //
    num_k_heads`` consecutive value heads), a depthwise causal convolution of ``conv_kernel`` taps.
    ``projection``: how the checkpoint holds the input projections: ``qkvz`` (Qwen3-Next: one
    ``in_proj_qkvz`` grouped per key head ``[q, k, v..., z...]`` and one ``in_proj_ba`` grouped
    ``[b..., a...]``) or ``split`` (Qwen3.5: ``in_proj_qkv`` as ``[all q, all k, all v]``,
    ``in_proj_z``, ``in_proj_b``, ``in_proj_a``).
    """

    num_k_heads: int
    num_v_heads: int
    k_head_dim: int
    v_head_dim: int
    conv_kernel: int = 4
    projection: str = "qkvz"

    def __post_init__(self):
        if self.projection not in LINEAR_PROJECTIONS:
            raise ConfigError(f"linear attention projection {self.projection!r} is not one of {LINEAR_PROJECTIONS}")
        if self.num_v_heads % self.num_k_heads:
            raise ConfigError(
                f"linear_num_value_heads = {self.num_v_heads} is not a multiple of "
                f"linear_num_key_heads = {self.num_k_heads}"
            )

    @property
    def key_dim(self) -> int:
        return self.num_k_heads * self.k_head_dim

    @property
    def value_dim(self) -> int:
        return self.num_v_heads * self.v_head_dim

    @property
    def conv_dim(self) -> int:
        """Channels of the convolution: q, k and v side by side."""
        return 2 * self.key_dim + self.value_dim


@dataclasses.dataclass(frozen=True)
class AttentionGeometry:
    """What full-attention layers change when they differ from the sliding ones (Gemma-4:
    ``global_head_dim``, ``num_global_key_value_heads``, ``attention_k_eq_v``, their own rope)."""

    head_dim: int
    num_kv_heads: int
    k_eq_v: bool
    rope: RopeConfig


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything the forward pass needs to know about an architecture (no runtime options).

    Block variants (set by the family module):

    * ``norm``: ``rms`` (weight times the normalised value cast back, Qwen3/OLMoE/Mixtral),
      ``rms_fp32`` (weight applied in fp32, then cast: GPT-OSS), ``rms_offset`` (zero-centred
      weight: ``x̂ · (1 + w)`` in fp32, then cast; Qwen3-Next / Qwen3.5, q/k norms included), ``layer`` (LayerNorm with bias, PhiMoE);
    * ``qk_norm``: None, ``per_head`` (RMSNorm over each head's ``head_dim``, Qwen3), ``full``
      (RMSNorm over the whole q / k projection, OLMoE) or ``l2`` (Llama-4: each head divided by its
      RMS, no weight, after the rope and only on the layers that use rope); ``clip_qkv`` clamps q/k/v (OLMoE);
    * ``nope_layers`` (Llama-4): per-layer flags of the layers *without* rope, whose queries are
      scaled by ``attn_temperature`` = (``floor_scale``, ``attn_scale``) when set
      (:mod:`rise_jax.models.attention_variants`);
    * ``attention``: ``gqa`` (q/k/v/o projections, grouped-query) or ``mla`` (DeepSeek's Multi-head
      Latent Attention, :class:`~rise_jax.models.layers.MLAttention`: ``q_lora_rank`` (None: a
      plain ``q_proj``), ``kv_lora_rank``, ``qk_nope_head_dim``, ``v_head_dim``; ``head_dim`` is
      the rotary part ``qk_rope_head_dim``, as transformers sets it); ``rope_interleave``: rotary
      pairs are adjacent dims ``(x0, x1), (x2, x3) ...`` (DeepSeek) instead of the two halves;
    * ``router``: ``softmax_topk`` (softmax, top-k, optional renormalisation), ``sparsemixer``
      (PhiMoE), ``topk_softmax`` (top-k of the logits, softmax over the k: GPT-OSS) or
      ``topk_sigmoid`` (Llama-4: top-k of the logits, weights ``sigmoid`` of the chosen logits) or
      ``sigmoid_topk`` (DeepSeek-V3 / GLM-4.5: sigmoid scores, selection on score +
      ``e_score_correction_bias`` when ``router_selection_bias``); ``router_bias`` adds a
      per-expert bias to the logits; ``router_groups`` / ``router_topk_groups``: group-limited
      selection (experts split into ``router_groups`` equal groups, only the best
      ``router_topk_groups`` groups compete; see :mod:`rise_jax.models.routers`);
      ``routed_scaling_factor`` multiplies the routed experts' combined output;
      ``router_scales_input`` (Llama-4): each chosen expert runs on ``weight · x`` and the outputs
      are summed unweighted, instead of ``Σ weight · expert(x)`` (docs/ROUTING.md);
    * ``expert_act``: ``silu`` (``silu(g)·u``) or ``clamped_swiglu`` (GPT-OSS, see
      :mod:`rise_jax.models.expert_mlp`); ``expert_bias``: biases on the three projections;
    * ``shared_expert_size`` > 0: a dense shared expert next to the routed ones, always active,
      scaled by a sigmoid gate ``sigmoid(x · w)`` when ``shared_expert_gate`` (Qwen2-MoE) or
      added as is (DeepSeek, GLM-4.5: ``n_shared_experts`` experts fused into one MLP of width
      ``n_shared_experts · moe_intermediate_size``); ``attention_sinks``: a learned per-head logit in every softmax (GPT-OSS);
    * ``sliding_window`` with ``sliding_layers``: which layers use it (None = every layer);
      ``attention_chunk_size`` (Llama-4's chunked attention) instead of a window: the
      ``sliding_layers`` see only the keys of their own chunk of ``attention_chunk_size``
      positions (:func:`~rise_jax.models.attention_variants.chunk_visibility`).
      ``full_attention`` (an :class:`AttentionGeometry`): the head width, kv heads, ``k_eq_v`` and
      rope of the full-attention layers where they differ from the sliding ones (Gemma-4); layers
      of the two kinds then form separate scanned runs (:meth:`attention_config` gives a run's);
    * ``linear_layers`` with ``linear``: which layers mix tokens with Gated DeltaNet linear
      attention instead of softmax attention (:class:`LinearAttentionConfig`; Qwen3-Next /
      Qwen3.5 ``layer_types``); ``attn_output_gate``: the softmax attention's output is scaled
      by ``sigmoid(gate)``, the gate a second half of each head's ``q_proj`` output (same models).
    * ``decoder_layer``: ``pre_norm`` (``x + attn(norm(x))``, ``x + ffn(norm(x))``: every family
      but Gemma-4) or ``gemma4`` (:class:`~rise_jax.models.transformer.Gemma4DecoderLayer`: norms
      before and after attention and feed-forward, the dense MLP and the MoE block side by side,
      each with its own norms, a per-layer ``layer_scalar``);
    * Gemma-4's other pieces: ``embed_scale`` (embeddings times ``sqrt(hidden_size)``),
      ``final_logit_softcap`` (``c·tanh(logits/c)``), ``attention_scale`` (softmax scale; None:
      ``head_dim^-1/2``), ``v_norm`` (RMSNorm without weight on each value head), ``k_eq_v`` (the
      values are the key projection: no ``v_proj``), ``router_input_norm`` (the router reads
      ``RMSNorm(x)·scale·hidden_size^-1/2``, a weight-free norm and a learned ``[H]`` scale),
      ``router_expert_scale`` (a learned ``[E]`` factor on each chosen expert's weight, applied as
      ``routed_scaling_factor`` is: not in ``RoutingInfo``), ``expert_act`` ``gelu_tanh``.
    """

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
    intermediate_size: int  # dense MLP width (mlp_only layers); families without dense layers: expert width
    norm_eps: float
    rope: RopeConfig
    max_position_embeddings: int
    moe_layer_ids: tuple[int, ...]  # which decoder layers have an MoE block (others: dense MLP)
    norm_topk_prob: bool = False
    tie_word_embeddings: bool = False
    norm: str = "rms"
    qk_norm: str | None = None
    clip_qkv: float | None = None
    qkv_bias: bool = False
    o_bias: bool = False
    attention_sinks: bool = False
    lm_head_bias: bool = False
    sliding_window: int | None = None
    sliding_layers: tuple[bool, ...] | None = None
    attention_chunk_size: int | None = None
    nope_layers: tuple[bool, ...] | None = None
    attn_temperature: tuple[float, float] | None = None  # (floor_scale, attn_scale) on nope_layers
    router: str = "softmax_topk"
    router_bias: bool = False
    router_selection_bias: bool = False
    router_groups: int = 1
    router_topk_groups: int = 1
    routed_scaling_factor: float = 1.0
    router_scales_input: bool = False
    attention: str = "gqa"
    q_lora_rank: int | None = None
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    v_head_dim: int = 0
    rope_interleave: bool = False
    expert_act: str = "silu"
    expert_bias: bool = False
    swiglu_alpha: float = 1.702
    swiglu_limit: float = 7.0
    shared_expert_size: int = 0
    shared_expert_gate: bool = True
    router_jitter_noise: float = 0.0
    input_jitter_noise: float = 0.0
    hidden_act: str = "silu"
    full_attention: AttentionGeometry | None = None
    decoder_layer: str = "pre_norm"
    embed_scale: bool = False
    final_logit_softcap: float | None = None
    attention_scale: float | None = None
    v_norm: bool = False
    k_eq_v: bool = False
    router_input_norm: bool = False
    router_expert_scale: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    linear_layers: tuple[bool, ...] | None = None
    linear: LinearAttentionConfig | None = None
    attn_output_gate: bool = False

    def __post_init__(self):
        for name, value, allowed in (
            ("norm", self.norm, NORMS),
            ("qk_norm", self.qk_norm, QK_NORMS),
            ("router", self.router, ROUTERS),
            ("expert_act", self.expert_act, EXPERT_ACTIVATIONS),
            ("attention", self.attention, ATTENTIONS),
            ("decoder_layer", self.decoder_layer, DECODER_LAYERS),
        ):
            if value not in allowed:
                raise ConfigError(f"ModelConfig.{name} = {value!r} is not one of {allowed}")
        for name in ("sliding_layers", "nope_layers", "linear_layers"):
            flags = getattr(self, name)
            if flags is not None and len(flags) != self.num_layers:
                raise ConfigError(f"{name} has {len(flags)} entries for {self.num_layers} layers")
        if self.sliding_window is not None and self.attention_chunk_size is not None:
            raise ConfigError("a model has either a sliding_window or an attention_chunk_size, not both")
        if (self.linear_layers is None) != (self.linear is None):
            raise ConfigError("linear_layers and linear (the linear-attention widths) go together")
        if self.linear_layers is not None and self.decoder_layer != "pre_norm":
            raise ConfigError(f"decoder_layer {self.decoder_layer!r} has no linear-attention layers")
        g, tg = self.router_groups, self.router_topk_groups
        if g < 1 or self.num_experts % g or not 1 <= tg <= g:
            raise ConfigError(
                f"router groups: n_group = {g} must divide the {self.num_experts} experts and "
                f"topk_group = {tg} must be in [1, {g}]"
            )
        if tg * (self.num_experts // g) < self.top_k:
            raise ConfigError(
                f"router groups: topk_group = {tg} groups of {self.num_experts // g} experts hold fewer "
                f"than num_experts_per_tok = {self.top_k} experts"
            )
        if self.router == "sigmoid_topk" and g > 1 and self.num_experts // g < 2:
            raise ConfigError(f"sigmoid router groups score by their top 2 experts; n_group = {g} leaves groups of 1")
        if self.attention == "mla" and min(self.kv_lora_rank, self.qk_nope_head_dim, self.v_head_dim) < 1:
            raise ConfigError("mla attention needs kv_lora_rank, qk_nope_head_dim and v_head_dim >= 1")

    def attention_config(self, sliding: bool) -> ModelConfig:
        """This config as the attention of a sliding (or full) layer sees it: with
        ``full_attention``'s head width, kv heads, ``k_eq_v`` and rope for a full layer."""
        g = self.full_attention
        if g is None or sliding:
            return self
        return dataclasses.replace(
            self, head_dim=g.head_dim, num_kv_heads=g.num_kv_heads, k_eq_v=g.k_eq_v, rope=g.rope, full_attention=None
        )

    @property
    def num_moe_layers(self) -> int:
        return len(self.moe_layer_ids)

    @property
    def is_moe_layer(self) -> tuple[bool, ...]:
        ids = set(self.moe_layer_ids)
        return tuple(i in ids for i in range(self.num_layers))

    @property
    def is_linear_layer(self) -> tuple[bool, ...]:
        """Per decoder layer: True where Gated DeltaNet replaces softmax attention."""
        return self.linear_layers or (False,) * self.num_layers

    @property
    def per_layer_window(self) -> bool:
        """True when some layers use the sliding window (or chunk) and others attend to everything."""
        local = self.sliding_window is not None or self.attention_chunk_size is not None
        return local and self.sliding_layers is not None and len(set(self.sliding_layers)) > 1

    @property
    def uniform_chunk(self) -> int | None:
        """The attention chunk every layer uses (None: no chunking, or it differs per layer)."""
        if self.attention_chunk_size is None or self.per_layer_window:
            return None
        if self.sliding_layers is not None and not any(self.sliding_layers):
            return None
        return self.attention_chunk_size

    @property
    def uniform_window(self) -> int | None:
        """The one window every layer uses (None: full attention, or windows differ per layer)."""
        if self.sliding_window is None or self.per_layer_window:
            return None
        if self.sliding_layers is not None and not any(self.sliding_layers):
            return None
        return self.sliding_window

    @property
    def qk_head_dim(self) -> int:
        """Width of one query/key head: ``head_dim`` (GQA) or ``qk_nope_head_dim + head_dim`` (MLA)."""
        return self.head_dim + (self.qk_nope_head_dim if self.attention == "mla" else 0)

    @property
    def attn_v_head_dim(self) -> int:
        """Width of one value head (MLA: ``v_head_dim``; else ``head_dim``)."""
        return self.v_head_dim if self.attention == "mla" else self.head_dim

    @property
    def expert_param_names(self) -> tuple[str, ...]:
        """The per-expert leaves under ``moe/experts`` (and of a trainable expert copy)."""
        names = ("gate_proj", "up_proj", "down_proj")
        return names + (("gate_bias", "up_bias", "down_bias") if self.expert_bias else ())


def get_key(d: Mapping[str, Any], key: str, source: str, default: Any = dataclasses.MISSING) -> Any:
    """``d[key]`` (a None value counts as absent), else ``default``, else a ConfigError naming ``source``."""
    if key in d and d[key] is not None:
        return d[key]
    if default is dataclasses.MISSING:
        raise ConfigError(f"{source}: required key {key!r} is missing")
    return default


def get_int(d: Mapping[str, Any], key: str, source: str, default: Any = dataclasses.MISSING, minimum: int = 1) -> int:
    """A whole-number field (``True`` and ``"8"`` are not), at least ``minimum``; else a ConfigError."""
    value = get_key(d, key, source, default)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{source}: {key} = {value!r} must be a whole number >= {minimum}")
    return value


def get_float(d: Mapping[str, Any], key: str, source: str, default: Any = dataclasses.MISSING) -> float:
    value = get_key(d, key, source, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{source}: {key} = {value!r} must be a number")
    return float(value)


def parse_rope(d: Mapping[str, Any], source: str, default_theta: float) -> RopeConfig:
    """Accept 5.x ``rope_parameters`` and 4.x ``rope_theta`` + ``rope_scaling`` alike."""
    params = dict(d.get("rope_parameters") or d.get("rope_scaling") or {})
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ConfigError(f"{source}: rope type {rope_type!r} is not supported (supported: {SUPPORTED_ROPE_TYPES})")
    theta = float(params.get("rope_theta", d.get("rope_theta", default_theta)))
    partial = float(params.get("partial_rotary_factor", d.get("partial_rotary_factor", 1.0)))
    if rope_type == "default":
        return RopeConfig("default", theta, partial_rotary_factor=partial)
    if rope_type == "llama3":
        keys = ("factor", "original_max_position_embeddings", "low_freq_factor", "high_freq_factor")
        missing = [k for k in keys if params.get(k) is None]
        if missing:
            raise ConfigError(f"{source}: llama3 rope parameters need {missing[0]!r}")
        return RopeConfig(
            "llama3",
            theta,
            partial_rotary_factor=partial,
            factor=float(params["factor"]),
            original_max_position_embeddings=int(params["original_max_position_embeddings"]),
            low_freq_factor=float(params["low_freq_factor"]),
            high_freq_factor=float(params["high_freq_factor"]),
        )
    if rope_type == "proportional":
        return RopeConfig("proportional", theta, partial_rotary_factor=partial, factor=float(params.get("factor", 1.0)))
    # The top-level original_max_position_embeddings wins, as in HF standardize_rope_params.
    orig = d.get("original_max_position_embeddings") or params.get("original_max_position_embeddings")
    if rope_type == "yarn":
        if orig is None:
            raise ConfigError(f"{source}: yarn rope parameters need 'original_max_position_embeddings'")
        factor = params.get("factor")
        if factor is None:
            factor = get_int(d, "max_position_embeddings", source) / int(orig)
        opt = lambda k: None if params.get(k) is None else float(params[k])  # noqa: E731
        return RopeConfig(
            "yarn",
            theta,
            original_max_position_embeddings=int(orig),
            partial_rotary_factor=partial,
            factor=float(factor),
            beta_fast=float(params.get("beta_fast") or 32.0),
            beta_slow=float(params.get("beta_slow") or 1.0),
            truncate=bool(params.get("truncate", True)),
            attention_factor=opt("attention_factor"),
            mscale=opt("mscale"),
            mscale_all_dim=opt("mscale_all_dim"),
        )
    if orig is None:
        orig = get_key(d, "max_position_embeddings", source)
    for key in ("short_factor", "long_factor", "short_mscale", "long_mscale"):
        if key not in params:
            raise ConfigError(f"{source}: longrope parameters need {key!r}")
    return RopeConfig(
        "longrope",
        theta,
        short_factor=tuple(float(x) for x in params["short_factor"]),
        long_factor=tuple(float(x) for x in params["long_factor"]),
        short_mscale=float(params["short_mscale"]),
        long_mscale=float(params["long_mscale"]),
        original_max_position_embeddings=int(orig),
        partial_rotary_factor=partial,
    )


def rope_to_hf(rope: RopeConfig) -> dict[str, Any]:
    """``rope_parameters`` (transformers 5.x spelling) describing ``rope``."""
    out: dict[str, Any] = {"rope_type": rope.rope_type, "rope_theta": rope.theta}
    if rope.partial_rotary_factor != 1.0:
        out["partial_rotary_factor"] = rope.partial_rotary_factor
    if rope.rope_type == "proportional" and rope.factor not in (None, 1.0):
        out["factor"] = rope.factor
    if rope.rope_type == "longrope":
        out.update(
            short_factor=list(rope.short_factor or ()),
            long_factor=list(rope.long_factor or ()),
            short_mscale=rope.short_mscale,
            long_mscale=rope.long_mscale,
            original_max_position_embeddings=rope.original_max_position_embeddings,
        )
    elif rope.rope_type == "llama3":
        out.update(
            factor=rope.factor,
            low_freq_factor=rope.low_freq_factor,
            high_freq_factor=rope.high_freq_factor,
            original_max_position_embeddings=rope.original_max_position_embeddings,
        )
    elif rope.rope_type == "yarn":
        out.update(
            factor=rope.factor,
            beta_fast=rope.beta_fast,
            beta_slow=rope.beta_slow,
            truncate=rope.truncate,
            original_max_position_embeddings=rope.original_max_position_embeddings,
        )
        for key in ("attention_factor", "mscale", "mscale_all_dim"):
            if getattr(rope, key) is not None:
                out[key] = getattr(rope, key)
    return out


def parse_layer_types(d: Mapping[str, Any], num_layers: int, source: str, default: list[str]) -> tuple[bool, ...]:
    """Per-layer ``layer_types`` (``sliding_attention`` / ``full_attention``) as sliding flags."""
    types = d.get("layer_types") or default
    if not isinstance(types, list | tuple) or len(types) != num_layers:
        raise ConfigError(f"{source}: layer_types must list one entry per layer ({num_layers}), got {types!r}")
    unknown = sorted({t for t in types if t not in LAYER_TYPES})
    if unknown:
        raise ConfigError(f"{source}: layer_types entry {unknown[0]!r} is not known (known: {', '.join(LAYER_TYPES)})")
    return tuple(t == "sliding_attention" for t in types)


def common_fields(d: Mapping[str, Any], source: str, *, experts_key: str, default_theta: float, eps: float) -> dict:
    """The ``ModelConfig`` fields every family spells the same way (checked, with HF defaults)."""
    hidden = get_int(d, "hidden_size", source)
    heads = get_int(d, "num_attention_heads", source)
    experts = get_int(d, experts_key, source)
    top_k = get_int(d, "num_experts_per_tok", source)
    if not 0 < top_k <= experts:
        raise ConfigError(f"{source}: num_experts_per_tok={top_k} must be in [1, {experts}]")
    kv_heads = get_int(d, "num_key_value_heads", source, heads)
    if heads % kv_heads:
        raise ConfigError(
            f"{source}: num_attention_heads = {heads} is not a multiple of num_key_value_heads = {kv_heads}"
        )
    act = d.get("hidden_act", "silu")
    if act != "silu":
        raise ConfigError(f"{source}: hidden_act {act!r} is not supported (only 'silu')")
    return dict(
        model_type=d["model_type"],
        vocab_size=get_int(d, "vocab_size", source),
        hidden_size=hidden,
        num_layers=get_int(d, "num_hidden_layers", source),
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=get_int(d, "head_dim", source) if d.get("head_dim") else hidden // heads,
        num_experts=experts,
        top_k=top_k,
        norm_eps=get_float(d, "rms_norm_eps", source, eps),
        rope=parse_rope(d, source, default_theta),
        max_position_embeddings=get_int(d, "max_position_embeddings", source, 32768),
        norm_topk_prob=bool(d.get("norm_topk_prob", False)),
        tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
        hidden_act=act,
        bos_token_id=d.get("bos_token_id"),
        eos_token_id=d.get("eos_token_id"),
        pad_token_id=d.get("pad_token_id"),
    )


def common_to_hf(cfg: ModelConfig, dtype: str) -> dict[str, Any]:
    """The ``config.json`` keys every family writes the same way."""
    return {
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
        "rope_parameters": rope_to_hf(cfg.rope),
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "hidden_act": cfg.hidden_act,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "pad_token_id": cfg.pad_token_id,
        "dtype": dtype,
    }


def layer_types_to_hf(cfg: ModelConfig) -> list[str]:
    flags = cfg.sliding_layers or (False,) * cfg.num_layers
    return ["sliding_attention" if s else "full_attention" for s in flags]
