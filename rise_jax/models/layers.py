"""Norms, rotary embeddings and attention, ported from the transformers Qwen3-MoE / PhiMoE code."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rise_jax.models.config import ModelConfig, RopeConfig

Array = jax.Array
DType = Any


class RMSNorm(nn.Module):
    """Qwen3MoeRMSNorm: normalise in fp32, cast back to the input dtype, then scale."""

    eps: float
    param_dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), self.param_dtype)
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
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
    if cfg.uses_layer_norm:
        return LayerNorm(cfg.norm_eps, param_dtype, name=name)
    return RMSNorm(cfg.norm_eps, param_dtype, name=name)


def rope_inv_freq(rope: RopeConfig, head_dim: int) -> Array:
    """Inverse frequencies (fp32). longrope divides by ``short_factor`` (see :class:`RopeConfig`)."""
    dim = int(head_dim * rope.partial_rotary_factor)
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
    scale: Array | float = 1.0
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


def apply_rope(x: Array, cos: Array, sin: Array) -> Array:
    """``x`` is ``[B, T, heads, D]``; cos/sin ``[B, T, D]`` broadcast over heads."""
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    rot = cos.shape[-1]
    if rot == x.shape[-1]:
        return x * cos + _rotate_half(x) * sin
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    return jnp.concatenate([x_rot * cos + _rotate_half(x_rot) * sin, x_pass], axis=-1)


def attention_bias(
    attention_mask: Array, q_len: int, kv_len: int, q_offset: Array | int = 0, sliding_window: int | None = None
) -> Array:
    """Additive bias ``[B, 1, 1, T, S]``: 0 where key ``j`` is visible to query ``i``, else min float.

    Visible means causal by index (``j <= i + q_offset``), a real key token (``attention_mask``
    ``[B, S]`` is 1) and, with a sliding window, ``j > i + q_offset - window`` (HF masking_utils).
    """
    q_idx = jnp.arange(q_len)[:, None] + q_offset
    kv_idx = jnp.arange(kv_len)[None, :]
    visible = kv_idx <= q_idx
    if sliding_window is not None:
        visible = visible & (kv_idx > q_idx - sliding_window)
    visible = visible[None] & attention_mask[:, None, :].astype(bool)
    bias = jnp.where(visible, 0.0, jnp.finfo(jnp.float32).min)
    return bias[:, None, None, :, :]


def dot_product_attention(q: Array, k: Array, v: Array, bias: Array) -> Array:
    """Grouped-query attention as HF eager: fp32 softmax, probabilities cast to the query dtype.

    q ``[B, T, H, D]``, k/v ``[B, S, KV, D]``; query head ``h`` reads kv head ``h // (H // KV)``.
    """
    b, t, h, d = q.shape
    kv = k.shape[2]
    qg = q.reshape(b, t, kv, h // kv, d)
    scores = jnp.einsum("btkgd,bskd->bkgts", qg, k) * jnp.asarray(d**-0.5, q.dtype)
    scores = scores.astype(jnp.float32) + bias
    probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v)
    return out.reshape(b, t, h * d)


class Attention(nn.Module):
    """Self-attention block: q/k/v projections, (Qwen3) per-head q_norm/k_norm, RoPE, GQA, o_proj."""

    cfg: ModelConfig
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array, cos: Array, sin: Array, bias: Array) -> Array:
        cfg = self.cfg
        dense = lambda feats, name, use_bias: nn.Dense(  # noqa: E731
            feats, use_bias=use_bias, dtype=self.dtype, param_dtype=self.param_dtype, name=name
        )
        b, t, _ = x.shape
        q = dense(cfg.num_heads * cfg.head_dim, "q_proj", cfg.attention_bias)(x)
        k = dense(cfg.num_kv_heads * cfg.head_dim, "k_proj", cfg.attention_bias)(x)
        v = dense(cfg.num_kv_heads * cfg.head_dim, "v_proj", cfg.attention_bias)(x)
        q = q.reshape(b, t, cfg.num_heads, cfg.head_dim)
        k = k.reshape(b, t, cfg.num_kv_heads, cfg.head_dim)
        v = v.reshape(b, t, cfg.num_kv_heads, cfg.head_dim)
        if cfg.uses_qk_norm:
            q = RMSNorm(cfg.norm_eps, self.param_dtype, name="q_norm")(q)
            k = RMSNorm(cfg.norm_eps, self.param_dtype, name="k_norm")(k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = dot_product_attention(q, k, v, bias)
        return dense(cfg.hidden_size, "o_proj", cfg.attention_bias)(out)
