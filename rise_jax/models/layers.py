"""Norms, rotary embeddings, attention and the dense projection, ported from the transformers
modeling code of every family (the variants a :class:`~rise_jax.models.config.ModelConfig` names:
norm kind, q/k norm, sinks, windows)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rise_jax.models.attention_variants import l2_norm
from rise_jax.models.config import ModelConfig, RopeConfig
from rise_jax.models.expert_weights import LORA_A, LORA_B
from rise_jax.models.quantized import promote_dtype

Array = jax.Array
DType = Any


class RMSNorm(nn.Module):
    """RMSNorm, normalised in fp32. Default (Qwen3MoeRMSNorm, OLMoE, Mixtral): cast back to the
    input dtype, then scale; ``scale_in_fp32`` (GptOssRMSNorm, Gemma4RMSNorm): scale in fp32, then
    cast; ``offset`` (Qwen3NextRMSNorm, zero-centred weight initialised to 0): ``x̂ · (1 + w)`` in
    fp32, then cast; without ``use_scale`` (Gemma-4's value and router norms) there is no weight."""

    eps: float
    param_dtype: DType = jnp.float32
    scale_in_fp32: bool = False
    offset: bool = False
    use_scale: bool = True

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        if not self.use_scale:
            return y.astype(x.dtype)
        init = nn.initializers.zeros if self.offset else nn.initializers.ones
        scale = self.param("scale", init, (x.shape[-1],), self.param_dtype)
        if self.offset:
            return (y * (1.0 + scale.astype(jnp.float32))).astype(x.dtype)
        if self.scale_in_fp32:
            return (scale.astype(jnp.float32) * y).astype(x.dtype)
        return scale * y.astype(x.dtype)


class LayerNorm(nn.Module):
    """torch.nn.LayerNorm with affine weight and bias (PhiMoE), statistics in fp32."""

    eps: float
    param_dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],), self.param_dtype)
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
        return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(x.dtype)


def make_norm(cfg: ModelConfig, param_dtype: DType, name: str) -> nn.Module:
    if cfg.norm == "layer":
        return LayerNorm(cfg.norm_eps, param_dtype, name=name)
    return RMSNorm(cfg.norm_eps, param_dtype, cfg.norm == "rms_fp32", cfg.norm == "rms_offset", name=name)


def make_qk_norm(cfg: ModelConfig, param_dtype: DType, name: str) -> RMSNorm:
    """The q/k RMSNorm in the family's variant: zero-centred where its norms are (Qwen3-Next's q/k
    norms are its ``Qwen3NextRMSNorm``), scaled in fp32 where they are (Gemma-4)."""
    offset = cfg.norm == "rms_offset"
    return RMSNorm(cfg.norm_eps, param_dtype, offset or cfg.norm == "rms_fp32", offset, name=name)


def _yarn_inv_freq(rope: RopeConfig, dim: int) -> np.ndarray:
    """transformers ``_compute_yarn_parameters`` (fp32 where it computes in fp32)."""
    base = rope.theta
    pos_freqs = (base ** (np.arange(0, dim, 2).astype(np.float32) / np.float32(dim))).astype(np.float32)
    extrapolation = (1.0 / pos_freqs).astype(np.float32)
    interpolation = (1.0 / (np.float32(rope.factor) * pos_freqs)).astype(np.float32)

    def correction_dim(rotations: float) -> float:
        orig = rope.original_max_position_embeddings
        return (dim * math.log(orig / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(rope.beta_fast), correction_dim(rope.beta_slow)
    if rope.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - np.float32(low)) / np.float32(high - low), 0, 1)
    extrapolation_factor = (1 - ramp).astype(np.float32)
    return (interpolation * (1 - extrapolation_factor) + extrapolation * extrapolation_factor).astype(np.float32)


def _llama3_inv_freq(rope: RopeConfig, dim: int) -> np.ndarray:
    """transformers ``_compute_llama3_parameters`` in fp32: long wavelengths divided by
    ``factor``, short ones kept, the band between ``old/low_freq_factor`` and
    ``old/high_freq_factor`` blended (``old`` = ``original_max_position_embeddings``)."""
    f32 = np.float32
    inv = (1.0 / (f32(rope.theta) ** (np.arange(0, dim, 2).astype(f32) / f32(dim)))).astype(f32)
    old, low, high, factor = (
        rope.original_max_position_embeddings,
        rope.low_freq_factor,
        rope.high_freq_factor,
        rope.factor,
    )
    wavelen = (f32(2 * math.pi) / inv).astype(f32)
    scaled = np.where(wavelen > f32(old / low), inv / f32(factor), inv).astype(f32)
    with np.errstate(divide="ignore", invalid="ignore"):  # low == high: no band (HF divides by zero too)
        smooth = ((f32(old) / wavelen - f32(low)) / f32(high - low)).astype(f32)
        smoothed = ((1 - smooth) * scaled / f32(factor) + smooth * scaled).astype(f32)
    medium = ~(wavelen < f32(old / high)) & ~(wavelen > f32(old / low))
    return np.where(medium, smoothed, scaled).astype(f32)


def rope_attention_factor(rope: RopeConfig) -> float:
    """The cos/sin scale of yarn (1 for the other rope types)."""
    if rope.rope_type != "yarn":
        return 1.0
    if rope.attention_factor is not None:
        return rope.attention_factor

    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    if rope.mscale and rope.mscale_all_dim:
        return float(mscale(rope.factor, rope.mscale) / mscale(rope.factor, rope.mscale_all_dim))
    return mscale(rope.factor)


def rope_inv_freq(rope: RopeConfig, head_dim: int) -> Array:
    """Inverse frequencies (fp32). longrope divides by ``short_factor``; proportional rotates
    the whole head with zero frequencies past its rotary part (see :class:`RopeConfig`)."""
    if rope.rope_type == "proportional":
        angles = int(rope.partial_rotary_factor * head_dim // 2)
        rotated = 1.0 / (rope.theta ** (jnp.arange(0, 2 * angles, 2, dtype=jnp.int32).astype(jnp.float32) / head_dim))
        inv = jnp.concatenate([rotated, jnp.zeros((head_dim // 2 - angles,), jnp.float32)])
        return inv / jnp.float32(rope.factor or 1.0)
    dim = int(head_dim * rope.partial_rotary_factor)
    if rope.rope_type == "yarn":
        return jnp.asarray(_yarn_inv_freq(rope, dim))
    if rope.rope_type == "llama3":
        return jnp.asarray(_llama3_inv_freq(rope, dim))
    exponent = jnp.arange(0, dim, 2, dtype=jnp.int32).astype(jnp.float32) / dim
    if rope.rope_type == "longrope":
        ext = jnp.asarray(rope.short_factor, jnp.float32)
        return 1.0 / (ext * rope.theta**exponent)
    return 1.0 / (rope.theta**exponent)


def rope_cos_sin(cfg: ModelConfig, positions: Array, dtype: DType) -> tuple[Array, Array]:
    """cos/sin tables ``[B, T, head_dim]`` for integer ``positions`` ``[B, T]``.

    The angle is computed in fp32 and the result cast to the activation dtype, as HF does.
    """
    inv_freq = rope_inv_freq(cfg.rope, cfg.head_dim)
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    scale: Array | float = rope_attention_factor(cfg.rope)
    if cfg.rope.rope_type == "longrope":
        seq_len = jnp.max(positions) + 1
        scale = jnp.where(
            seq_len > cfg.rope.original_max_position_embeddings,
            jnp.float32(cfg.rope.long_mscale),
            jnp.float32(cfg.rope.short_mscale),
        )
    return (jnp.cos(emb) * scale).astype(dtype), (jnp.sin(emb) * scale).astype(dtype)


def _rotate_half(x: Array) -> Array:
    half = x.shape[-1] // 2
    return jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rope(x: Array, cos: Array, sin: Array, interleave: bool = False) -> Array:
    """``x`` is ``[B, T, heads, D]``; cos/sin ``[B, T, R]`` (``R <= D``: partial rotary, the
    first ``R`` dims rotate) broadcast over heads.

    ``interleave`` (DeepSeek): the rotated pairs are adjacent dims ``(x0, x1), (x2, x3) ...``;
    the result is written de-interleaved, ``[x_even·cos - x_odd·sin, x_odd·cos + x_even·sin]``
    (transformers' ``apply_rotary_pos_emb_interleave``; DeepSeek-V2's complex product gives the same
    pairs interleaved: a permutation applied to q and k alike, so every q·k is the same)."""
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    rot = cos.shape[-1]
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    if interleave:
        c, s = cos[..., : rot // 2], sin[..., : rot // 2]
        x1, x2 = x_rot[..., 0::2], x_rot[..., 1::2]
        y = jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)
    else:
        y = x_rot * cos + _rotate_half(x_rot) * sin
    return y if rot == x.shape[-1] else jnp.concatenate([y, x_pass], axis=-1)


class KVCacheLayer(NamedTuple):
    """What one layer of a scanned run sees of the key/value cache (read only).

    ``keys``/``values`` ``[n, B, S, KV, D]``: the whole run's cache, not a per-layer slice, so the
    scan neither copies it in nor stacks a new one out each step; ``layer``: this layer's index in
    it; ``index`` int32 scalar: the slot where the new tokens go (tokens already cached). The layer
    returns its new keys/values and the caller writes them into the cache in place.
    """

    keys: Array
    values: Array
    layer: Array
    index: Array

    def with_new(self, keys: Array, values: Array) -> tuple[tuple[Array, Array], tuple[Array, Array]]:
        """(the new entries cast to the cache dtype, this layer's whole cache with them written at
        ``index``) for new keys/values ``[B, T, ·, ·]``."""
        new = (keys.astype(self.keys.dtype), values.astype(self.values.dtype))
        start = (0, self.index, 0, 0)
        full = tuple(
            jax.lax.dynamic_update_slice(jax.lax.dynamic_index_in_dim(c, self.layer, 0, False), a, start)
            for c, a in zip((self.keys, self.values), new, strict=True)
        )
        return new, full


def attention_visibility(
    attention_mask: Array, q_len: int, kv_len: int, q_offset: Array | int = 0, sliding_window: int | None = None
) -> Array:
    """bool ``[B, 1, 1, T, S]``: True where key ``j`` is visible to query ``i``.

    ``attention_mask`` ``[B, S]`` holds *segment ids* (the packing convention): 0 = padding,
    1, 2, ... = the sequences packed into the row, each contiguous; an ordinary 0/1 mask is the
    one-segment case. Query ``i`` sits at column ``i + q_offset`` (its segment is
    ``attention_mask[:, i + q_offset]``; with a KV cache the mask covers all ``S`` slots). Visible
    means causal by index (``j <= i + q_offset``), the same segment as the query and a real key
    (segment > 0), and, with a sliding window, ``j > i + q_offset - window`` (HF masking_utils).
    Queries at padding see nothing (their outputs are never read). A new layer rule (a chunk, a
    window kind) is one more optional argument here, ANDed in.
    """
    q_idx = jnp.arange(q_len)[:, None] + q_offset
    kv_idx = jnp.arange(kv_len)[None, :]
    visible = kv_idx <= q_idx
    if sliding_window is not None:
        visible = visible & (kv_idx > q_idx - sliding_window)
    segments = attention_mask.astype(jnp.int32)
    q_segments = jax.lax.dynamic_slice_in_dim(segments, q_offset, q_len, axis=1)  # [B, T]
    same = (q_segments[:, :, None] == segments[:, None, :]) & (segments[:, None, :] > 0)
    return (visible[None] & same)[:, None, None, :, :]


def segment_positions(segments: Array) -> Array:
    """int32 ``[B, T]`` rope positions of a packed row: each token's index within its segment
    (restarting at 0 at every segment start, the packing convention), for segment ids ``[B, T]``
    as :func:`attention_visibility` reads them. A right-padded 0/1 mask gives ``0..T-1`` on its
    real tokens, HF forward's convention; padding gets 0 (so ``max(positions)``, which longrope's
    scale reads, is the longest real sequence's)."""
    t = segments.shape[1]
    idx = jnp.arange(t, dtype=jnp.int32)[None, :]
    prev = jnp.concatenate([jnp.full_like(segments[:, :1], -1), segments[:, :-1]], axis=1)
    starts = jnp.where(segments != prev, idx, 0)
    return jnp.where(segments > 0, idx - jax.lax.cummax(starts, axis=1), 0).astype(jnp.int32)


def dot_product_attention(
    q: Array, k: Array, v: Array, visible: Array, sinks: Array | None = None, scale: float | None = None
) -> Array:
    """Grouped-query attention as HF eager: fp32 softmax, probabilities cast to the query dtype.

    ``sinks`` ``[H]`` (GPT-OSS): a learned logit per query head that joins each softmax as one
    extra column and is then dropped, so a query may attend "nowhere" (the row sums to below 1).

    q ``[B, T, H, D]``, k ``[B, S, KV, D]``, v ``[B, S, KV, Dv]``, visible ``[B, 1, 1, T, S]``;
    scores are ``q·k · scale`` (default ``D^-1/2``); query head ``h`` reads kv head ``h // (H // KV)``. The query heads sharing a kv head are folded into one matmul
    (head-major layout), which XLA's CPU backend runs far faster than a 5-D einsum.
    """
    b, t, h, d = q.shape
    s, kv, dv = k.shape[1], k.shape[2], v.shape[-1]
    g = h // kv
    qh = q.reshape(b, t, kv, g, d).transpose(0, 2, 3, 1, 4).reshape(b, kv, g * t, d)
    scale = d**-0.5 if scale is None else scale
    scores = (qh @ k.transpose(0, 2, 3, 1)) * jnp.asarray(scale, q.dtype)  # [B, KV, G*T, S]
    scores = scores.reshape(b, kv, g, t, s).astype(jnp.float32)
    scores = jnp.where(visible, scores, jnp.finfo(jnp.float32).min)
    if sinks is None:
        probs = jax.nn.softmax(scores, axis=-1)
    else:
        sink = jnp.broadcast_to(sinks.astype(jnp.float32).reshape(1, kv, g, 1, 1), (b, kv, g, t, 1))
        probs = jax.nn.softmax(jnp.concatenate([scores, sink], axis=-1), axis=-1)[..., :s]
    probs = probs.astype(q.dtype).reshape(b, kv, g * t, s)
    out = probs @ v.transpose(0, 2, 1, 3)  # [B, KV, G*T, Dv]
    return out.reshape(b, kv, g, t, dv).transpose(0, 3, 1, 2, 4).reshape(b, t, h * dv)


def causal_self_attention(
    q: Array,
    k: Array,
    v: Array,
    visible: Array,
    sinks: Array | None = None,
    max_chunks: int = 8,
    scale: float | None = None,
) -> Array:
    """Self-attention over a whole sequence (keys = the queries' own positions, no cache).

    Queries are split into at most ``max_chunks`` blocks of at least 128 and each block only reads
    the keys up to its last position, skipping the masked upper triangle (about half the work at
    ``max_chunks = 8``). Identical to :func:`dot_product_attention` with the full key range.
    """
    t = q.shape[1]
    chunk = max(128, -(-t // max_chunks))
    if chunk >= t:
        return dot_product_attention(q, k, v, visible, sinks, scale)
    outs = []
    for start in range(0, t, chunk):
        end = min(start + chunk, t)
        outs.append(
            dot_product_attention(q[:, start:end], k[:, :end], v[:, :end], visible[..., start:end, :end], sinks, scale)
        )
    return jnp.concatenate(outs, axis=1)


class Dense(nn.Module):
    """``x W + b`` as ``flax.linen.Dense`` computes it (same parameters, init and ``dot_general``;
    quantized kernels dequantised by :func:`~rise_jax.models.quantized.promote_dtype`), plus a
    LoRA adapter when the layer's parameters hold one: with ``lora_a [r, in]`` and ``lora_b
    [out, r]`` beside ``kernel`` (the LoRA baseline's training step puts them there, ``lora_b``
    already multiplied by alpha / r) it returns ``x W + b + B (A dropout(x))`` as PEFT's
    ``lora.Linear`` does: the adapter term in fp32, added to the fp32-cast base output, cast back.
    ``lora_dropout`` (PEFT's ``lora_dropout``) drops adapter inputs only in training, i.e. when
    the caller passes a ``dropout`` rng."""

    features: int
    use_bias: bool = False
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    lora_dropout: float = 0.0

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype) if self.use_bias else None
        inputs, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = jax.lax.dot_general(inputs, kernel, (((inputs.ndim - 1,), (0,)), ((), ())))
        if bias is not None:
            y += jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))
        if not self.has_variable("params", LORA_A):
            return y
        a, b = self.get_variable("params", LORA_A), self.get_variable("params", LORA_B)
        lx = x.astype(jnp.float32)
        if self.lora_dropout > 0 and self.has_rng("dropout"):
            lx = nn.Dropout(self.lora_dropout, name="lora_dropout")(lx, deterministic=False)
        delta = (lx @ a.T.astype(jnp.float32)) @ b.T.astype(jnp.float32)
        return (y.astype(jnp.float32) + delta).astype(y.dtype)


class Attention(nn.Module):
    """Self-attention block: q/k/v projections (no ``v_proj`` with ``k_eq_v``: the values are the
    key projection before its norm, Gemma-4's full layers), q/k norm (per head: Qwen3, Gemma-4;
    whole width: OLMoE), a weight-free value norm (``v_norm``, Gemma-4), ``clip_qkv``, RoPE, GQA
    (with sinks: GPT-OSS), the softmax scale ``attention_scale`` (default ``head_dim^-1/2``), o_proj.
    With ``attn_output_gate`` (Qwen3-Next / Qwen3.5) ``q_proj`` is twice as wide, each head's
    ``[query, gate]`` side by side, and the attention output is multiplied by ``sigmoid(gate)``
    before ``o_proj``."""

    cfg: ModelConfig
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    lora_dropout: float = 0.0  # on the input of dense-layer LoRA adapters (see Dense)

    @nn.compact
    def __call__(
        self,
        x: Array,
        cos: Array,
        sin: Array,
        visible: Array,
        cache: KVCacheLayer | None = None,
        rope_on: Array | None = None,
        q_scale: Array | None = None,
    ) -> tuple[Array, tuple[Array, Array] | None]:
        """Without ``cache``: self-attention over ``x``; returns (output, None). With ``cache``
        (:class:`KVCacheLayer`): the queries attend over this layer's ``S`` cache slots with the new
        keys/values placed at ``cache.index`` (``visible`` is ``[B, 1, 1, T, S]``); returns
        (output, (new keys, new values)) ``[B, T, KV, D]`` for the caller to write into the cache.

        Llama-4 (:mod:`~rise_jax.models.attention_variants`): ``rope_on`` (bool scalar, this
        layer's flag in a scanned run) applies the rope and the ``l2`` q/k norm only where True;
        ``q_scale`` (fp32 ``[B, T, 1, 1]``) multiplies the queries after them."""
        cfg = self.cfg
        dense = lambda feats, name, use_bias: Dense(  # noqa: E731
            feats, use_bias, self.dtype, self.param_dtype, self.lora_dropout, name=name
        )
        b, t, _ = x.shape
        gate = None
        if cfg.attn_output_gate:
            qg = dense(2 * cfg.num_heads * cfg.head_dim, "q_proj", cfg.qkv_bias)(x)
            qg = qg.reshape(b, t, cfg.num_heads, 2 * cfg.head_dim)
            q = qg[..., : cfg.head_dim].reshape(b, t, -1)
            gate = qg[..., cfg.head_dim :].reshape(b, t, -1)
        else:
            q = dense(cfg.num_heads * cfg.head_dim, "q_proj", cfg.qkv_bias)(x)
        k = dense(cfg.num_kv_heads * cfg.head_dim, "k_proj", cfg.qkv_bias)(x)
        v = k if cfg.k_eq_v else dense(cfg.num_kv_heads * cfg.head_dim, "v_proj", cfg.qkv_bias)(x)
        if cfg.qk_norm == "full":
            q = make_qk_norm(cfg, self.param_dtype, "q_norm")(q)
            k = make_qk_norm(cfg, self.param_dtype, "k_norm")(k)
        if cfg.clip_qkv is not None:
            q, k, v = (jnp.clip(a, -cfg.clip_qkv, cfg.clip_qkv) for a in (q, k, v))
        q = q.reshape(b, t, cfg.num_heads, cfg.head_dim)
        k = k.reshape(b, t, cfg.num_kv_heads, cfg.head_dim)
        v = v.reshape(b, t, cfg.num_kv_heads, cfg.head_dim)
        if cfg.qk_norm == "per_head":
            q = make_qk_norm(cfg, self.param_dtype, "q_norm")(q)
            k = make_qk_norm(cfg, self.param_dtype, "k_norm")(k)
        if cfg.v_norm:
            v = RMSNorm(cfg.norm_eps, use_scale=False, name="v_norm")(v)
        q_rot, k_rot = apply_rope(q, cos, sin, cfg.rope_interleave), apply_rope(k, cos, sin, cfg.rope_interleave)
        if cfg.qk_norm == "l2":
            q_rot, k_rot = l2_norm(q_rot, cfg.norm_eps), l2_norm(k_rot, cfg.norm_eps)
        if rope_on is None:
            q, k = q_rot, k_rot
        else:
            q, k = jnp.where(rope_on, q_rot, q), jnp.where(rope_on, k_rot, k)
        if q_scale is not None:
            q = (q.astype(jnp.float32) * q_scale).astype(q.dtype)
        scale = cfg.attention_scale
        sinks = None
        if cfg.attention_sinks:
            sinks = self.param("sinks", nn.initializers.normal(0.02), (cfg.num_heads,), self.param_dtype)
        new_kv = None
        if cache is None:
            out = causal_self_attention(q, k, v, visible, sinks, scale=scale)
        else:
            new_kv, (keys, values) = cache.with_new(k, v)
            out = dot_product_attention(q, keys.astype(q.dtype), values.astype(q.dtype), visible, sinks, scale)
        if gate is not None:
            out = out * jax.nn.sigmoid(gate)
        return dense(cfg.hidden_size, "o_proj", cfg.o_bias)(out), new_kv


def attention_scale(cfg: ModelConfig) -> float:
    """The softmax scale of MLA: ``qk_head_dim^-1/2``, times ``mscale(factor, mscale_all_dim)^2``
    when the rope is scaled and sets ``mscale_all_dim`` (``yarn_apply_mscale`` of the DeepSeek
    modeling files), ``mscale(f, m) = 0.1·m·ln f + 1`` (1 when ``f <= 1``)."""
    scale = cfg.qk_head_dim**-0.5
    rope = cfg.rope
    if rope.rope_type != "default" and rope.mscale_all_dim:
        f = rope.factor or 1.0
        m = 1.0 if f <= 1 else 0.1 * rope.mscale_all_dim * math.log(f) + 1.0
        scale = scale * m * m
    return scale


class MLAttention(nn.Module):
    """DeepSeek's Multi-head Latent Attention (transformers' ``DeepseekV2Attention`` /
    ``DeepseekV3Attention``), heads ``n``, widths ``dn`` = ``qk_nope_head_dim``, ``dr`` =
    ``head_dim`` (the rotary part), ``dv`` = ``v_head_dim``, latent ``r`` = ``kv_lora_rank``::

        q           = q_proj(x)  or  q_b_proj(RMSNorm(q_a_proj(x)))        [n, dn + dr]
        c, k_rot    = split(kv_a_proj(x), [r, dr]);  c = RMSNorm(c)           (one k_rot for all heads)
        k_nope, v   = split(kv_b_proj(c), [dn, dv])                           [n, dn], [n, dv]
        out         = o_proj(softmax(q · [k_nope, rope(k_rot)] · scale) v)

    (RMSNorm eps 1e-6, as the modeling files build them; ``scale``: :func:`attention_scale`.)

    **KV cache** (decoding): per layer and token the cache stores what transformers' cache stores,
    the *compressed* latent — ``keys`` the normalised latent ``c`` (``kv_lora_rank`` values) and
    ``values`` the rotated ``k_rot`` (``head_dim`` values), shaped ``[n_layers, B, S, 1, ·]``;
    ``kv_b_proj`` re-expands every cached position at each step. That is ``r + dr`` numbers per
    token and layer instead of ``n·(dn + dr + dv)`` (DeepSeek-V2-Lite: 576 instead of 5,120)."""

    cfg: ModelConfig
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    lora_dropout: float = 0.0

    @nn.compact
    def __call__(
        self, x: Array, cos: Array, sin: Array, visible: Array, cache: KVCacheLayer | None = None
    ) -> tuple[Array, tuple[Array, Array] | None]:
        """As :meth:`Attention.__call__`; with a cache the new (latent, rotated key) are returned."""
        cfg = self.cfg
        dense = lambda feats, name, use_bias: Dense(  # noqa: E731
            feats, use_bias, self.dtype, self.param_dtype, self.lora_dropout, name=name
        )
        b, t, _ = x.shape
        n, dn, dr, dv, r = cfg.num_heads, cfg.qk_nope_head_dim, cfg.head_dim, cfg.v_head_dim, cfg.kv_lora_rank
        if cfg.q_lora_rank is None:
            q = dense(n * (dn + dr), "q_proj", False)(x)
        else:
            q_a = dense(cfg.q_lora_rank, "q_a_proj", cfg.qkv_bias)(x)
            q = dense(n * (dn + dr), "q_b_proj", False)(RMSNorm(1e-6, self.param_dtype, name="q_a_norm")(q_a))
        q = q.reshape(b, t, n, dn + dr)
        compressed = dense(r + dr, "kv_a_proj", cfg.qkv_bias)(x)
        latent = RMSNorm(1e-6, self.param_dtype, name="kv_a_norm")(compressed[..., :r])[:, :, None, :]
        k_rot = apply_rope(compressed[..., None, r:], cos, sin, cfg.rope_interleave)  # [B, T, 1, dr]
        q = jnp.concatenate([q[..., :dn], apply_rope(q[..., dn:], cos, sin, cfg.rope_interleave)], axis=-1)
        new_kv = None
        if cache is not None:
            new_kv, (latent, k_rot) = cache.with_new(latent, k_rot)
            latent, k_rot = latent.astype(q.dtype), k_rot.astype(q.dtype)
        s = latent.shape[1]
        kv = dense(n * (dn + dv), "kv_b_proj", False)(latent[:, :, 0]).reshape(b, s, n, dn + dv)
        k = jnp.concatenate([kv[..., :dn], jnp.broadcast_to(k_rot, (b, s, n, dr))], axis=-1)
        v = kv[..., dn:]
        scale = attention_scale(cfg)
        if cache is None:
            out = causal_self_attention(q, k, v, visible, scale=scale)
        else:
            out = dot_product_attention(q, k, v, visible, scale=scale)
        return dense(cfg.hidden_size, "o_proj", cfg.o_bias)(out), new_kv
