"""The decoder shared by every family (:mod:`rise_jax.models.families`), as Flax linen modules.

Family differences come from :class:`ModelConfig`'s block variants (norm type, q/k norms, biases,
sinks, per-layer sliding windows, router, expert activation and biases, shared expert, rope).
Layers are ``nn.scan``-ned so compile time does not grow with depth. Consecutive layers of the
same kind (MoE or dense MLP) form one scanned *run*; all-MoE checkpoints have a single run named
``layers``. Mixed models (``mlp_only_layers``,
``decoder_sparse_step``; Gemma-4's sliding / full layers, whose attention shapes differ) get runs
``layers_0``, ``layers_1``, ... (:mod:`rise_jax.models.layout`), each built with its attention's
shape (``ModelConfig.attention_config``). The layer body is ``DECODER_LAYERS[cfg.decoder_layer]``.
Values sown into (or captured by ``capture_intermediates`` in) the ``intermediates`` collection
inside a run come back stacked per layer, ``[n, ...]``.

Parameter tree (leading axis ``[n]`` = layers of the run; kernels are ``[in, out]``)::

    embed_tokens/embedding                [V, H]
    layers/input_norm/{scale[,bias]}      [n, H]
    layers/attn/{q,k,v,o}_proj/kernel     [n, H, heads*D] ... (+ bias: qkv_bias / o_bias)
    layers/attn/{q,k}_norm/scale          [n, D] per head (Qwen3) / [n, heads*D] (OLMoE)
    layers/attn/sinks                     [n, heads]                   (GPT-OSS)
    layers/attn/q_proj/kernel             [n, H, heads*2D]  with attn_output_gate (each head's
                                          [query, gate] side by side: Qwen3-Next / Qwen3.5)
    layers/linear_attn/{in_proj_qkvz, in_proj_ba | in_proj_qkv, in_proj_z, in_proj_b, in_proj_a,
      out_proj}/kernel, conv_weight [n, conv_dim, 1, K], A_log, dt_bias [n, Hv], norm/scale [n, Dv]
                                          (Gated DeltaNet runs: models.linear_attention)
    layers/attn/{q_proj | q_a_proj, q_a_norm/scale, q_b_proj}, kv_a_proj, kv_a_norm/scale,
      kv_b_proj, o_proj                   (MLA: DeepSeek, layers.MLAttention)
    layers/post_attention_norm/...        [n, H]
    layers/moe/router                     [n, H, E]   (+ router_bias [n, E]: GPT-OSS)
    layers/moe/router_selection_bias      [n, E]      (DeepSeek-V3 / GLM-4.5 e_score_correction_bias)
    layers/moe/experts/{gate,up}_proj     [n, E, H, I]
    layers/moe/experts/down_proj          [n, E, I, H]
    layers/moe/experts/{gate,up,down}_bias [n, E, I|H]                 (GPT-OSS)
    layers/moe/shared_expert/{gate,up,down}_proj/kernel, shared_expert_gate/kernel  (Qwen2-MoE;
      DeepSeek / GLM-4.5 / Llama-4: shared experts without the gate)
    layers/mlp/{gate,up,down}_proj/kernel (dense runs; Gemma-4: beside moe/ in every layer)
    layers/moe/router_scale [n, H], router_expert_scale [n, E]     (Gemma-4's router)
    layers/{pre_feedforward,post_feedforward,post_feedforward_1,pre_feedforward_2,
      post_feedforward_2}_norm/scale      [n, H]      (Gemma-4), layers/layer_scalar [n, 1]
    final_norm/{scale[,bias]}             [H]
    lm_head/{kernel[,bias]}               [H, V]    (absent with tied embeddings)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp

from rise_jax.models import dispatch as dispatch_lib
from rise_jax.models import routers
from rise_jax.models.attention_variants import chunk_visibility, temperature_scales
from rise_jax.models.config import ModelConfig
from rise_jax.models.expert_mlp import PARAM_NAMES, ExpertTensors, GatedActivation, dense_activation
from rise_jax.models.expert_weights import ExpertWeights, StackedExperts, StackLayerExperts
from rise_jax.models.layers import (
    Attention,
    Dense,
    KVCacheLayer,
    MLAttention,
    RMSNorm,
    attention_visibility,
    make_norm,
    rope_cos_sin,
)
from rise_jax.models.layout import LayerRun, layer_runs
from rise_jax.models.linear_attention import GatedDeltaNet, LinearState, segments_for

Array = jax.Array
DType = Any

ROUTER_MODES = ("deterministic", "sparsemixer_train")


@dataclasses.dataclass(frozen=True)
class RuntimeOptions:
    """How to run the architecture (not part of the checkpoint).

    dtype: activation/compute dtype; param_dtype: parameter storage dtype; dispatch: MoE
    implementation (:mod:`rise_jax.models.dispatch`); remat: rematerialise each layer in the
    backward pass; router_mode: ``deterministic`` (eval routing, the default) or
    ``sparsemixer_train`` (PhiMoE's stochastic training router; needs a ``router`` rng);
    expert_mesh: the device mesh whose ``model`` axis splits the experts, for expert-parallel
    dispatch (:mod:`rise_jax.models.expert_parallel`; None: XLA partitions the dispatch).
    Training-only settings (LoRA adapter dropout) belong to the training method
    (:class:`Trainable`), not here.
    """

    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    dispatch: str = "auto"
    remat: bool = False
    router_mode: str = "deterministic"
    expert_mesh: Any = None

    def __post_init__(self):
        if self.router_mode not in ROUTER_MODES:
            raise ValueError(f"router_mode must be one of {ROUTER_MODES}, got {self.router_mode!r}")
        if self.dispatch != "auto":  # "auto" is resolved at first use: asking for the backend here
            self.impl  # noqa: B018   would start it at import, before a multi-process job initialises

    @functools.cached_property
    def impl(self) -> str:
        """The MoE dispatch this model runs: ``dispatch`` with ``"auto"`` resolved for the backend
        (the one place it is resolved; every layer and the decoding path read it from here)."""
        return dispatch_lib.resolve_impl(self.dispatch)


class ExpertOverride(Protocol):
    """What a training method hands a run's MoE layers: a weight source over the frozen experts
    (e.g. :class:`~rise_jax.models.expert_weights.SubstitutedExperts`) built with ``base`` and
    ``slots`` left None; each layer fills them in with ``replace(base=..., slots=...)``."""

    def replace(self, **fields: Any) -> ExpertWeights: ...


class Trainable(Protocol):
    """What the model needs of a training method (:mod:`rise_jax.training.methods`):
    ``expert_override(run)`` -> (slot table ``[n, E]`` int, the :class:`ExpertOverride` of the
    run's trainable experts) or None where the run's experts stay frozen, and ``adapter_dropout``
    (a Python float): dropout on the input of dense-layer LoRA adapters
    (:class:`~rise_jax.models.layers.Dense`), active only when a ``dropout`` rng is passed."""

    adapter_dropout: float

    def expert_override(self, run: str) -> tuple[Array, ExpertOverride] | None: ...


class Experts(nn.Module):
    """The layer's ``[E, ...]`` expert parameters, handed to the dispatch as a weight source
    (:mod:`rise_jax.models.expert_weights`)."""

    cfg: ModelConfig
    opts: RuntimeOptions

    @nn.compact
    def __call__(
        self, x: Array, routing_: dispatch_lib.ExpertChoice, override: Any = None, stacked: Any = None
    ) -> Array:
        """``override`` = (slots ``[E]`` int, an :class:`ExpertOverride`): the override source over
        this layer's experts (e.g. expert ``e`` with ``slots[e] >= 0`` uses trainable weights, every
        other one the gradient-stopped parameters:
        :class:`~rise_jax.models.expert_weights.SubstitutedExperts`). This is how training sees only
        the selected experts as differentiable.

        ``stacked`` = ({name: ``[n, E, ...]``}, layer): this run's un-sliced expert parameters and
        this layer's index in them (the decoding path, see :class:`MoEModel`); the experts are then
        read from there (only the used ones) instead of from this layer's slice."""
        e, h, i = self.cfg.num_experts, self.cfg.hidden_size, self.cfg.moe_intermediate_size
        init = nn.initializers.normal(0.02)
        pd = self.opts.param_dtype
        shapes = {"gate_proj": (e, h, i), "up_proj": (e, h, i), "down_proj": (e, i, h)}
        if self.cfg.expert_bias:
            shapes.update(gate_bias=(e, i), up_bias=(e, i), down_bias=(e, h))
        w = {name: self.param(name, init, shape, pd) for name, shape in shapes.items()}
        act = GatedActivation.from_config(self.cfg)

        def split(d):
            ws = ExpertTensors(*(d.get(name) for name in PARAM_NAMES))
            return ws[:3], (None if ws.gate_bias is None else tuple(ws[3:]))

        if stacked is not None:  # this layer's slice goes unused (and is never copied)
            full, layer = stacked
            (g, u, d), bias = split(full)
            source = StackLayerExperts(g, u, d, layer, bias, act)
        else:
            (g, u, d), bias = split(w)
            source = StackedExperts(g, u, d, bias=bias, act=act)
            if override is not None:
                slots, over = override
                source = over.replace(base=source, slots=slots)
        return dispatch_lib.dispatch(x.astype(self.opts.dtype), routing_, source, self.opts.impl, self.opts.expert_mesh)


class MoEBlock(nn.Module):
    """Router + experts (+ the shared expert: gated in Qwen2-MoE, plain in DeepSeek / GLM-4.5 /
    Llama-4); returns the block output and this layer's routing (fp32). ``router_input``
    (Gemma-4): what the router reads when it is not what the experts read (the layer's residual
    stream; the experts get its own norm of it)."""

    cfg: ModelConfig
    opts: RuntimeOptions
    adapter_dropout: float = 0.0  # on the input of dense-layer LoRA adapters (Trainable)

    @nn.compact
    def __call__(
        self, x: Array, override: Any = None, edit: Any = None, stacked: Any = None, router_input: Array | None = None
    ) -> tuple[Array, tuple[Array, Array, Array]]:
        cfg, opts = self.cfg, self.opts
        b, t, h = x.shape
        train_router = opts.router_mode == "sparsemixer_train" and cfg.router == "sparsemixer"
        if train_router and cfg.input_jitter_noise > 0:
            # HF applies the input jitter twice in place (block, then router): both reach the experts.
            for _ in range(2):
                noise = jax.random.uniform(
                    self.make_rng("router"),
                    x.shape,
                    jnp.float32,
                    1 - cfg.input_jitter_noise,
                    1 + cfg.input_jitter_noise,
                )
                x = (x * noise).astype(x.dtype)
        flat = x.reshape(b * t, h)
        router_x = flat if router_input is None else router_input.reshape(b * t, h)
        if cfg.router_input_norm:  # Gemma4TextRouter: RMSNorm(x) (no weight) · scale · H^-1/2
            scale = self.param("router_scale", nn.initializers.ones, (h,), opts.param_dtype)
            normed = RMSNorm(cfg.norm_eps, use_scale=False, name="router_norm")(router_x)
            router_x = normed * scale.astype(normed.dtype) * (h**-0.5)
        w_router = self.param("router", nn.initializers.normal(0.02), (h, cfg.num_experts), opts.param_dtype)
        logits = router_x.astype(jnp.float32) @ w_router.astype(jnp.float32)
        if cfg.router_bias:
            bias = self.param("router_bias", nn.initializers.zeros, (cfg.num_experts,), opts.param_dtype)
            logits = logits + bias.astype(jnp.float32)
        if edit is not None:  # this layer's rows of a RouterEdit (RouterEdit.rows)
            logits = routers.edit_logits(logits, *edit)
        groups = (cfg.router_groups, cfg.router_topk_groups)
        if cfg.router == "softmax_topk":
            weights, idx = routers.softmax_topk(logits, cfg.top_k, cfg.norm_topk_prob, *groups)
        elif cfg.router == "sigmoid_topk":
            sel_bias = None
            if cfg.router_selection_bias:
                shape = (cfg.num_experts,)
                sel_bias = self.param("router_selection_bias", nn.initializers.zeros, shape, jnp.float32)
            weights, idx = routers.sigmoid_topk(logits, cfg.top_k, cfg.norm_topk_prob, sel_bias, *groups)
        elif cfg.router == "topk_softmax":
            weights, idx = routers.topk_softmax(logits, cfg.top_k)
        elif cfg.router == "topk_sigmoid":
            weights, idx = routers.topk_sigmoid(logits, cfg.top_k)
        elif train_router:
            weights, idx = routers.sparsemixer_train(logits, cfg.router_jitter_noise, self.make_rng("router"))
        else:
            weights, idx = routers.sparsemixer_eval(logits, cfg.router_jitter_noise)
        # routed_scaling_factor and Gemma-4's per-expert scale multiply the weights the experts are
        # combined with (as transformers does); the routing output keeps the router's own weights.
        scaled = weights if cfg.routed_scaling_factor == 1.0 else weights * cfg.routed_scaling_factor
        if cfg.router_expert_scale:
            per_expert = self.param("router_expert_scale", nn.initializers.ones, (cfg.num_experts,), opts.param_dtype)
            scaled = scaled * per_expert.astype(jnp.float32)[idx]
        experts = Experts(cfg, opts, name="experts")
        if cfg.router_scales_input:
            # Llama-4: expert e runs on (weight_e · x) in the activation dtype and the k outputs are
            # summed unweighted. Each (token, chosen expert) pair becomes a row routed to that one
            # expert with weight 1, so every dispatch and weight source runs it unchanged.
            k = cfg.top_k
            pairs = flat[:, None, :] * scaled.astype(flat.dtype)[..., None]  # [B*T, k, H]
            choice = dispatch_lib.ExpertChoice(idx.reshape(-1, 1), jnp.ones((b * t * k, 1), jnp.float32))
            out = experts(pairs.reshape(b * t * k, h), choice, override, stacked).reshape(b * t, k, h)
            out = out[:, 0] if k == 1 else jnp.sum(out, axis=1)
        else:
            out = experts(flat, dispatch_lib.ExpertChoice(idx, scaled), override, stacked)
        if cfg.shared_expert_size:
            shared = DenseMLP(cfg, opts, cfg.shared_expert_size, self.adapter_dropout, name="shared_expert")(flat)
            if cfg.shared_expert_gate:
                gate = Dense(1, False, opts.dtype, opts.param_dtype, self.adapter_dropout, name="shared_expert_gate")
                shared = jax.nn.sigmoid(gate(flat)) * shared
            out = out + shared.astype(out.dtype)
        info = (idx.reshape(b, t, -1), weights.reshape(b, t, -1), logits.reshape(b, t, -1))
        return out.reshape(b, t, h), info


class DenseMLP(nn.Module):
    """``down(act(x gate, x up))`` of width ``width`` (default ``cfg.intermediate_size``); ``act``
    is ``silu(g)·u`` or Gemma's ``gelu_tanh(g)·u`` (``cfg.hidden_act``: :func:`dense_activation`)."""

    cfg: ModelConfig
    opts: RuntimeOptions
    width: int | None = None
    adapter_dropout: float = 0.0

    @nn.compact
    def __call__(self, x: Array) -> Array:
        o, p = self.opts, self.adapter_dropout
        dense = lambda f, name: Dense(f, False, o.dtype, o.param_dtype, p, name=name)  # noqa: E731
        i = self.width or self.cfg.intermediate_size
        act = dense_activation(self.cfg)
        return dense(self.cfg.hidden_size, "down_proj")(act(dense(i, "gate_proj")(x), dense(i, "up_proj")(x)))


class LayerShared(NamedTuple):
    """Inputs every layer of a scanned run sees whole (``nn.broadcast``).

    ``cos``/``sin`` rope tables, ``visible`` the attention mask ``[B, 1, T, S]``; ``trained`` the
    run's :class:`ExpertOverride` (subnetwork training) or None; ``cache``
    (keys, values) ``[n, B, S, KV, D]`` of the whole run — for a linear-attention run (conv,
    recurrent) states ``[n, B, ...]`` — and ``cache_index`` (decoding) or None;
    ``stacked_experts`` the run's un-sliced expert params {proj: ``[n, E, ...]``} (decoding) or None;
    ``visible_sliding`` the sliding-window (or chunked, Llama-4) mask when it differs per layer (GPT-OSS,
    Qwen2-MoE ``layer_types``), else None; ``q_scale`` the NoPE layers' query temperature
    ``[B, T, 1, 1]`` (Llama-4 ``attn_temperature``) or None; ``segments`` the
    :class:`~rise_jax.models.linear_attention.Segments` of the new tokens (linear-attention runs).
    """

    cos: Array
    sin: Array
    visible: Array
    trained: Any = None
    cache: Any = None
    cache_index: Any = None
    stacked_experts: Any = None
    visible_sliding: Any = None
    q_scale: Any = None
    segments: Any = None


class LayerSlice(NamedTuple):
    """Per-layer inputs, sliced along the run's leading axis (``in_axes=0``): ``index`` the layer's
    position in the run, ``slots`` its ``[E]`` trainable-slot table, ``edit`` its router-edit rows,
    ``sliding`` (bool) whether it attends through ``LayerShared.visible_sliding``, ``nope`` (bool)
    whether it skips the rope (Llama-4 ``no_rope_layers``)."""

    index: Array
    slots: Any = None
    edit: Any = None
    sliding: Any = None
    nope: Any = None


class DecoderLayer(nn.Module):
    """Pre-norm token mixer (softmax attention, or Gated DeltaNet when ``linear``) + (MoE or dense)
    MLP; the ``nn.scan`` body ``(carry, inputs) -> (carry, ys)``."""

    cfg: ModelConfig
    opts: RuntimeOptions
    is_moe: bool
    return_routing: bool = False
    adapter_dropout: float = 0.0
    linear: bool = False

    def _linear_attention(self, h: Array, shared: LayerShared, layer: LayerSlice):
        cfg, opts = self.cfg, self.opts
        state = None
        if shared.cache is not None:  # this layer's rows of the run's (conv, recurrent) states
            state = LinearState(*(jax.lax.dynamic_index_in_dim(c, layer.index, 0, False) for c in shared.cache))
        mixer = GatedDeltaNet(
            cfg.linear, cfg.hidden_size, cfg.norm_eps, opts.dtype, opts.param_dtype, self.adapter_dropout,
            name="linear_attn",
        )  # fmt: skip
        return mixer(h, shared.segments, state)

    @nn.compact
    def __call__(self, x: Array, shared: LayerShared, layer: LayerSlice):
        cfg, opts = self.cfg, self.opts
        h = make_norm(cfg, opts.param_dtype, "input_norm")(x)
        if self.linear:
            attn, new_kv = self._linear_attention(h, shared, layer)
        else:
            layer_cache = None
            if shared.cache is not None:
                layer_cache = KVCacheLayer(shared.cache[0], shared.cache[1], layer.index, shared.cache_index)
            visible = shared.visible
            if shared.visible_sliding is not None:
                visible = jnp.where(layer.sliding, shared.visible_sliding, shared.visible)
            attn_cls = MLAttention if cfg.attention == "mla" else Attention
            attention = attn_cls(cfg, opts.dtype, opts.param_dtype, self.adapter_dropout, name="attn")
            if layer.nope is None:
                attn, new_kv = attention(h, shared.cos, shared.sin, visible, layer_cache)
            else:  # Llama-4: rope and l2 q/k norm on the rope layers, the temperature on the others
                q_scale = None if shared.q_scale is None else jnp.where(layer.nope, shared.q_scale, 1.0)
                attn, new_kv = attention(h, shared.cos, shared.sin, visible, layer_cache, ~layer.nope, q_scale)
        x = x + attn
        h = make_norm(cfg, opts.param_dtype, "post_attention_norm")(x)
        if self.is_moe:
            override = None if layer.slots is None else (layer.slots, shared.trained)
            stacked = None if shared.stacked_experts is None else (shared.stacked_experts, layer.index)
            y, info = MoEBlock(cfg, opts, self.adapter_dropout, name="moe")(h, override, layer.edit, stacked)
        else:
            y, info = DenseMLP(cfg, opts, adapter_dropout=self.adapter_dropout, name="mlp")(h), None
        x = x + y.astype(x.dtype)
        return x, (info if self.return_routing else None, new_kv)


class Gemma4DecoderLayer(nn.Module):
    """Gemma-4's decoder layer (``Gemma4TextDecoderLayer`` with ``enable_moe_block``), the
    ``nn.scan`` body as :class:`DecoderLayer`::

        x = x + post_attention_norm(attn(input_norm(x)))
        dense = post_feedforward_norm_1(mlp(pre_feedforward_norm(x)))
        moe   = post_feedforward_norm_2(experts(pre_feedforward_norm_2(x)))   # router reads x itself
        x = (x + post_feedforward_norm(dense + moe)) · layer_scalar

    The dense MLP is always active beside the routed experts (like a shared expert, it is in no
    routing statistic); the router's own norm, scale and per-expert scale are in :class:`MoEBlock`.
    Its fields are :class:`DecoderLayer`'s (the scan body's one constructor); Gemma-4 has no
    linear-attention layers, so ``linear`` is always False here.
    """

    cfg: ModelConfig
    opts: RuntimeOptions
    is_moe: bool
    return_routing: bool = False
    adapter_dropout: float = 0.0
    linear: bool = False

    @nn.compact
    def __call__(self, x: Array, shared: LayerShared, layer: LayerSlice):
        cfg, opts = self.cfg, self.opts
        norm = lambda name: make_norm(cfg, opts.param_dtype, name)  # noqa: E731
        layer_cache = None
        if shared.cache is not None:
            layer_cache = KVCacheLayer(shared.cache[0], shared.cache[1], layer.index, shared.cache_index)
        visible = shared.visible
        if shared.visible_sliding is not None:
            visible = jnp.where(layer.sliding, shared.visible_sliding, shared.visible)
        attn, new_kv = Attention(cfg, opts.dtype, opts.param_dtype, self.adapter_dropout, name="attn")(
            norm("input_norm")(x), shared.cos, shared.sin, visible, layer_cache
        )
        x = x + norm("post_attention_norm")(attn)
        dense = DenseMLP(cfg, opts, adapter_dropout=self.adapter_dropout, name="mlp")(norm("pre_feedforward_norm")(x))
        dense = norm("post_feedforward_norm_1")(dense)
        override = None if layer.slots is None else (layer.slots, shared.trained)
        stacked = None if shared.stacked_experts is None else (shared.stacked_experts, layer.index)
        moe, info = MoEBlock(cfg, opts, self.adapter_dropout, name="moe")(
            norm("pre_feedforward_norm_2")(x), override, layer.edit, stacked, router_input=x
        )
        moe = norm("post_feedforward_norm_2")(moe.astype(x.dtype))
        x = x + norm("post_feedforward_norm")(dense + moe)
        scalar = self.param("layer_scalar", nn.initializers.ones, (1,), opts.param_dtype)
        x = x * scalar.astype(x.dtype)
        return x, (info if self.return_routing else None, new_kv)


DECODER_LAYERS = {"pre_norm": DecoderLayer, "gemma4": Gemma4DecoderLayer}


class KVCache(NamedTuple):
    """The whole model's decoding cache, per run of layers.

    Softmax-attention runs: ``keys``/``values``: run name -> ``[n, B, S, KV, D]`` (``n`` layers of
    the run, ``S`` cache slots; MLA: ``[n, B, S, 1, kv_lora_rank]`` latents and ``[n, B, S, 1,
    head_dim]`` rotated keys, see :class:`~rise_jax.models.layers.MLAttention`); ``index`` int32
    scalar: slots already filled (the next tokens are written there).
    With a cache, ``attention_mask`` covers all ``S`` slots (1 = a real token, cached or to come).
    Each scanned layer reads the run's cache whole and returns its new keys/values; the model
    writes them all at once (``dynamic_update_slice``, in place inside a decode loop).

    Gated DeltaNet runs (:mod:`rise_jax.models.linear_attention`) hold no per-slot entries but a
    fixed-size state per sequence: ``conv`` run name -> ``[n, B, K-1, conv_dim]`` (the last
    convolution inputs, cache dtype) and ``recurrent`` run name -> ``[n, B, Hv, Dk, Dv]`` (fp32);
    each call replaces them whole.
    """

    keys: dict[str, Array]
    values: dict[str, Array]
    index: Array
    conv: dict[str, Array] = {}  # noqa: RUF012  (never mutated: a new cache is built every call)
    recurrent: dict[str, Array] = {}  # noqa: RUF012

    def slots(self) -> int | None:
        """``S``, the cache slots per sequence (None when no run caches keys: linear layers only)."""
        return next(iter(self.keys.values())).shape[2] if self.keys else None


def init_kv_cache(cfg: ModelConfig, batch: int, length: int, dtype: DType) -> KVCache:
    """An empty cache with ``length`` slots per sequence (each run its own head width and kv
    heads where full-attention layers differ: ``ModelConfig.full_attention``)."""
    keys, values, conv, recurrent = {}, {}, {}, {}
    full = cfg
    for run in layer_runs(cfg):
        if run.linear:
            lin = full.linear
            conv[run.name] = jnp.zeros((run.length, batch, lin.conv_kernel - 1, lin.conv_dim), dtype)
            shape = (run.length, batch, lin.num_v_heads, lin.k_head_dim, lin.v_head_dim)
            recurrent[run.name] = jnp.zeros(shape, jnp.float32)
            continue
        cfg = full.attention_config(run.sliding)
        if cfg.attention == "mla":  # the compressed latent and the rotated key (layers.MLAttention)
            k_shape = (run.length, batch, length, 1, cfg.kv_lora_rank)
            v_shape = (run.length, batch, length, 1, cfg.head_dim)
        else:
            k_shape = v_shape = (run.length, batch, length, cfg.num_kv_heads, cfg.head_dim)
        keys[run.name] = jnp.zeros(k_shape, dtype)
        values[run.name] = jnp.zeros(v_shape, dtype)
    return KVCache(keys, values, jnp.zeros((), jnp.int32), conv, recurrent)


class ModelOutput(NamedTuple):
    """``logits`` float ``[B, T, V]`` (None when ``skip_lm_head``), ``hidden`` ``[B, T, H]`` after the
    final norm, ``routing`` a :class:`~rise_jax.models.routers.RoutingInfo` or None, ``kv_cache``
    the updated :class:`KVCache` when one was passed in."""

    logits: Array | None
    hidden: Array
    routing: routers.RoutingInfo | None
    kv_cache: KVCache | None = None


class MoEModel(nn.Module):
    """Causal LM over ``input_ids`` ``[B, T]`` with optional routing output.

    ``attention_mask`` ``[B, T]`` (1 = real token, default all ones; or the segment ids of packed
    rows, 0 = padding, 1, 2, ... = each packed sequence: attention never crosses a segment, see
    :func:`~rise_jax.models.layers.attention_visibility`); ``positions`` ``[B, T]``
    default ``0..T-1`` for every row (HF forward's convention; pass ``cumsum(mask) - 1`` to match
    HF ``generate`` with left padding, and :func:`~rise_jax.models.layers.segment_positions` for
    packed rows). ``trainable_experts`` (a :class:`Trainable`: a training
    method of :mod:`rise_jax.training.methods`) overrides the selected experts with trainable ones.
    ``kv_cache`` (:func:`init_kv_cache`) switches to incremental decoding; ``router_edit``
    (:class:`~rise_jax.models.routers.RouterEdit`) prunes or steers experts; ``last_token_logits``
    computes logits (and returns ``hidden``) for the last position only. ``inference`` promises
    that the call is never differentiated (replay, evaluation): the MoE layers then read each used
    expert straight from the stacked parameters, as decoding does (see
    :meth:`_reads_used_experts_only`), and the expert weights get no gradient.
    """

    cfg: ModelConfig
    opts: RuntimeOptions = RuntimeOptions()

    def _reads_used_experts_only(self, run: LayerRun, kv_cache: Any, slots: Any, inference: bool) -> bool:
        """Whether this run's MoE layers read their experts from the un-sliced stacked params.

        ``nn.scan`` hands each layer a copy of its ``[E, ...]`` expert slice, which the
        ``grouped_scan`` and ``blocked`` dispatches then read expert by expert: in decoding (few
        tokens, few experts used) that copy costs more than the experts' work, and in a whole
        forward it is 12-15 % of the time on CPU (bench/RESULTS.md, issue 38 part 4). So a call
        that is never differentiated (decoding with a KV cache, or ``inference``) indexes
        ``[layer, expert]`` directly. Not with trainable experts, not in a plain differentiated
        forward (pretraining: every expert needs its gradient), and not at init (no params yet).
        """
        return (
            run.is_moe
            and (kv_cache is not None or inference)
            and slots is None
            and not self.is_initializing()
            and self.opts.impl in ("grouped_scan", "blocked")
        )

    @nn.compact
    def __call__(
        self,
        input_ids: Array,
        attention_mask: Array | None = None,
        positions: Array | None = None,
        *,
        return_routing: bool = False,
        skip_lm_head: bool = False,
        trainable_experts: Trainable | None = None,
        kv_cache: KVCache | None = None,
        router_edit: routers.RouterEdit | None = None,
        last_token_logits: bool = False,
        inference: bool = False,
    ) -> ModelOutput:
        cfg, opts = self.cfg, self.opts
        dropout = 0.0 if trainable_experts is None else trainable_experts.adapter_dropout
        b, t = input_ids.shape
        s = t if kv_cache is None else kv_cache.slots()
        if s is None:  # a cache of linear-attention runs only: the mask says how many slots
            s = t if attention_mask is None else attention_mask.shape[1]
        if attention_mask is None:
            attention_mask = jnp.ones((b, s), jnp.int32)
        if positions is None:
            offset = 0 if kv_cache is None else kv_cache.index
            positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32) + offset, (b, t))
        embed = nn.Embed(
            cfg.vocab_size, cfg.hidden_size, dtype=opts.dtype, param_dtype=opts.param_dtype, name="embed_tokens"
        )
        x = embed(input_ids).astype(opts.dtype)
        if cfg.embed_scale:  # Gemma4TextScaledWordEmbedding: sqrt(H) cast to the weights' dtype first
            x = x * jnp.asarray(cfg.hidden_size**0.5, opts.param_dtype).astype(opts.dtype)
        rope_tables: dict[Any, tuple[Array, Array]] = {}
        q_offset = 0 if kv_cache is None else kv_cache.index
        visible = attention_visibility(attention_mask, t, s, q_offset, sliding_window=cfg.uniform_window)
        if cfg.uniform_chunk is not None:
            visible = visible & chunk_visibility(attention_mask, t, s, q_offset, cfg.uniform_chunk)
        visible_sliding = None
        if cfg.per_layer_window:
            visible_sliding = attention_visibility(attention_mask, t, s, q_offset, sliding_window=cfg.sliding_window)
            if cfg.attention_chunk_size is not None:
                visible_sliding = visible_sliding & chunk_visibility(
                    attention_mask, t, s, q_offset, cfg.attention_chunk_size
                )
        q_scale = None
        if cfg.nope_layers is not None and cfg.attn_temperature is not None:
            q_scale = temperature_scales(positions, *cfg.attn_temperature)

        segments = None
        if cfg.linear is not None:
            index = None if kv_cache is None else kv_cache.index
            segments = segments_for(attention_mask, t, cfg.linear.conv_kernel, index)

        infos, new_keys, new_values, new_conv, new_recurrent = [], {}, {}, {}, {}
        for run in layer_runs(cfg):
            run_cfg = cfg.attention_config(run.sliding)
            key = (run_cfg.rope, run_cfg.head_dim)
            if key not in rope_tables:
                rope_tables[key] = rope_cos_sin(run_cfg, positions, opts.dtype)
            cos, sin = rope_tables[key]
            body = DECODER_LAYERS[cfg.decoder_layer]
            layer_cls = nn.remat(body, prevent_cse=False) if opts.remat else body
            scanned = nn.scan(
                layer_cls,
                variable_axes={"params": 0, "intermediates": 0},
                split_rngs={"params": True, "router": True, "dropout": True},
                in_axes=(nn.broadcast, 0),  # (LayerShared, LayerSlice)
                length=run.length,
            )
            slots = trained = None
            override = None if trainable_experts is None else trainable_experts.expert_override(run.name)
            if override is not None:
                slots, trained = override
            cache = None
            if kv_cache is not None and run.linear:
                cache = (kv_cache.conv[run.name], kv_cache.recurrent[run.name])
            elif kv_cache is not None:
                cache = (kv_cache.keys[run.name], kv_cache.values[run.name])
            edit = None
            if router_edit is not None and run.is_moe:
                edit = router_edit.rows(run.moe_start, run.moe_start + run.length)
            stacked = None
            if self._reads_used_experts_only(run, kv_cache, slots, inference):
                stacked = self.variables["params"][run.name]["moe"]["experts"]
            shared = LayerShared(
                cos,
                sin,
                visible,
                trained,
                cache,
                None if kv_cache is None else kv_cache.index,
                stacked,
                visible_sliding,
                q_scale,
                segments,
            )
            sliding = None
            if visible_sliding is not None:
                sliding = jnp.asarray(cfg.sliding_layers[run.start : run.start + run.length], bool)
            nope = None
            if cfg.nope_layers is not None:
                nope = jnp.asarray(cfg.nope_layers[run.start : run.start + run.length], bool)
            per_layer = LayerSlice(jnp.arange(run.length, dtype=jnp.int32), slots, edit, sliding, nope)
            layer = scanned(run_cfg, opts, run.is_moe, return_routing, dropout, run.linear, name=run.name)
            x, (info, new_kv) = layer(x, shared, per_layer)
            if run.is_moe and return_routing:
                infos.append(info)
            if cache is not None and run.linear:  # the run's new states [n, B, ...], whole
                new_conv[run.name], new_recurrent[run.name] = new_kv
            elif cache is not None:  # new_kv: [n, B, T, KV, D] each, written at slot kv_cache.index
                start = (0, 0, kv_cache.index, 0, 0)
                new_keys[run.name] = jax.lax.dynamic_update_slice(cache[0], new_kv[0], start)
                new_values[run.name] = jax.lax.dynamic_update_slice(cache[1], new_kv[1], start)
        x = make_norm(cfg, opts.param_dtype, "final_norm")(x)

        info = None
        if return_routing:
            idx, w, lg = (jnp.concatenate([i[j] for i in infos], axis=0) for j in range(3))
            info = routers.RoutingInfo(topk_indices=idx, topk_weights=w, router_logits=lg)
        new_cache = None
        if kv_cache is not None:
            new_cache = KVCache(new_keys, new_values, kv_cache.index + t, new_conv, new_recurrent)
        if skip_lm_head:
            return ModelOutput(None, x, info, new_cache)
        if last_token_logits:  # generation only needs the next-token distribution
            x = x[:, -1:]
        if cfg.tie_word_embeddings:
            logits = embed.attend(x)
        else:
            logits = Dense(cfg.vocab_size, cfg.lm_head_bias, opts.dtype, opts.param_dtype, dropout, name="lm_head")(x)
        if cfg.final_logit_softcap is not None:  # Gemma: c·tanh(logits / c)
            cap = cfg.final_logit_softcap
            logits = jnp.tanh(logits / cap) * cap
        return ModelOutput(logits, x, info, new_cache)
