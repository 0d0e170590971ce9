"""Gated DeltaNet linear attention (Qwen3-Next, Qwen3.5), ported from transformers'
``Qwen3NextGatedDeltaNet`` and its torch fallbacks ``torch_chunk_gated_delta_rule`` /
``torch_recurrent_gated_delta_rule`` / ``causal_conv1d_fn`` (what transformers runs when the
``fla`` and ``causal-conv1d`` kernels are absent, the oracle here).

Per token ``t`` of one layer (``Hk`` key heads of width ``Dk``, ``Hv`` value heads of width
``Dv``, ``r = Hv / Hk`` value heads per key head)::

    q, k, v, z, b, a = in_proj(x_t)                     (layout: LinearAttentionConfig.projection)
    [q, k, v]        = silu(causal_conv1d([q, k, v]))    depthwise, K taps, per channel
    q, k             = l2norm(q), l2norm(k);  q = q / sqrt(Dk)   (repeated to the Hv value heads)
    β_t = sigmoid(b),   g_t = -exp(A_log) · softplus(a + dt_bias)      (per value head)
    S   = exp(g_t) · S                                 S: [Dk, Dv] per value head, fp32
    S   = S + k_t (β_t (v_t - Sᵀ k_t))ᵀ                 the delta rule
    o_t = Sᵀ q_t
    out = out_proj(RMSNorm(o_t) · w · silu(z))           RMSNormGated per value head

``l2norm(x) = x · rsqrt(Σx² + 1e-6)``. Two evaluations of the same recurrence:

* :func:`gated_delta_chunked` (prefill, replay, training): chunks of ``C = 64`` tokens. Inside a
  chunk, with ``Γ(j, i]`` the product of the decays after ``j`` up to ``i``, the intra-chunk
  updates ``u`` solve the unit lower-triangular system ``(I + L) u = β v - β Γ(0, i] k S₀``,
  ``L_ij = β_i Γ(j, i] k_i·k_j`` (``j < i``; the UT transform of DeltaNet), then
  ``o_i = Γ(0, i] S₀ᵀ q_i + Σ_{j<=i} Γ(j, i] (q_i·k_j) u_j`` and
  ``S_C = Γ(0, C] S₀ + Σ_j Γ(j, C] k_j u_jᵀ``; a scan carries ``S`` across chunks.
* :func:`gated_delta_recurrent` (decoding one token with a cache): the recurrence token by token.

**Padding and packing** (the project's convention: ``attention_mask`` holds segment ids, 0 =
padding): the inputs of padding tokens are zeroed (as transformers' ``apply_mask_to_padding_states``
does) and their ``β`` and ``g`` set to 0, so a padding token leaves the state exactly as it was;
at the first token of every segment the state is reset (its decay is 0: ``Γ`` over any range
holding a segment start is 0, kept as an exact mask beside the log-space cumulative sum) and the
convolution reads no input of another segment. Left padding, right padding and packed rows are
therefore exact; transformers' outputs at real tokens are the same (a left-padded row's state stays
0 through the zeroed padding).

**Cache** (decoding, :class:`LinearState` per layer): the last ``K - 1`` convolution inputs
``[B, K-1, conv_dim]`` (in the cache dtype; their segment ids are read from ``attention_mask``)
and the recurrent state ``S`` ``[B, Hv, Dk, Dv]`` in fp32 — a fixed size per sequence, whatever
its length.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from rise_jax.models.config import LinearAttentionConfig
from rise_jax.models.layers import Dense

Array = jax.Array
DType = Any

CHUNK = 64  # transformers' chunk_size: the same chunk boundaries, the same round-off


class LinearState(NamedTuple):
    """One linear-attention layer's decoding state: ``conv`` ``[B, K-1, conv_dim]`` the last
    convolution inputs, ``recurrent`` ``[B, Hv, Dk, Dv]`` fp32 the delta-rule state."""

    conv: Array
    recurrent: Array


class Segments(NamedTuple):
    """Segment ids (0 = padding) of the new tokens ``ids`` ``[B, T]`` and of the ``K - 1``
    positions before them, ``history`` ``[B, K-1]`` (all 0 without a cache: nothing precedes)."""

    ids: Array
    history: Array


def segments_for(attention_mask: Array, t: int, kernel: int, index: Array | None) -> Segments:
    """The :class:`Segments` of ``t`` new tokens: without a cache (``index`` None) the mask is
    ``[B, T]``; with one it covers every cache column and the new tokens sit at ``index``."""
    b = attention_mask.shape[0]
    mask = attention_mask.astype(jnp.int32)
    if index is None:
        return Segments(mask, jnp.zeros((b, kernel - 1), jnp.int32))
    padded = jnp.pad(mask, ((0, 0), (kernel - 1, 0)))
    ids = jax.lax.dynamic_slice_in_dim(padded, index + kernel - 1, t, axis=1)
    return Segments(ids, jax.lax.dynamic_slice_in_dim(padded, index, kernel - 1, axis=1))


def l2norm(x: Array, eps: float = 1e-6) -> Array:
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


def segment_starts(seg: Segments) -> Array:
    """bool ``[B, T]``: a real token whose segment differs from the position before it."""
    prev = jnp.concatenate([seg.history[:, -1:], seg.ids[:, :-1]], axis=1)
    return (seg.ids > 0) & (seg.ids != prev)


def causal_conv(x: Array, history: Array, weight: Array, seg: Segments) -> tuple[Array, Array]:
    """Depthwise causal convolution + silu over ``x`` ``[B, T, C]`` (padding already zeroed),
    preceded by ``history`` ``[B, K-1, C]``; ``weight`` ``[C, 1, K]`` (torch's Conv1d layout).
    ``out_t = silu(Σ_k w[k] · x_{t-K+1+k})`` over the inputs of ``t``'s own segment, in fp32.
    Returns (output in ``x``'s dtype, the new history: the last ``K - 1`` inputs)."""
    kernel = weight.shape[-1]
    t = x.shape[1]
    full = jnp.concatenate([history.astype(x.dtype), x], axis=1)
    ids = jnp.concatenate([seg.history, seg.ids], axis=1)
    w = weight[:, 0, :].astype(jnp.float32)
    out = jnp.zeros(x.shape, jnp.float32)
    for k in range(kernel):
        tap = full[:, k : k + t].astype(jnp.float32)
        same = (ids[:, k : k + t] == seg.ids)[..., None]
        out = out + jnp.where(same, tap, 0.0) * w[:, k]
    return nn.silu(out).astype(x.dtype), full[:, t:]


def _split_heads(x: Array, chunk: int) -> Array:
    """``[B, T, H, ...]`` (T a multiple of ``chunk``) -> ``[B, H, N, chunk, ...]``."""
    b, t, h = x.shape[:3]
    x = x.reshape(b, t // chunk, chunk, h, *x.shape[3:])
    return jnp.moveaxis(x, 3, 1)


def gated_delta_chunked(
    q: Array, k: Array, v: Array, g: Array, beta: Array, reset: Array, state: Array, chunk: int = CHUNK
) -> tuple[Array, Array]:
    """The gated delta rule over whole chunks (module docstring). ``q``/``k`` ``[B, T, H, Dk]``
    (normalised, ``q`` scaled), ``v`` ``[B, T, H, Dv]``, ``g``/``beta`` ``[B, T, H]``, ``reset``
    bool ``[B, T]`` (state zeroed before the token), ``state`` ``[B, H, Dk, Dv]``; all fp32.
    Returns (outputs ``[B, T, H, Dv]``, the final state)."""
    b, t, h, _ = q.shape
    pad = (-t) % chunk

    def padded(x):
        return jnp.pad(x, ((0, 0), (0, pad)) + ((0, 0),) * (x.ndim - 2))

    q, k, v, g, beta, reset = (padded(x) for x in (q, k, v, g, beta, reset))
    q, k, v = (_split_heads(x, chunk) for x in (q, k, v))  # [B, H, N, C, D]
    g, beta = (_split_heads(x, chunk) for x in (g, beta))  # [B, H, N, C]
    n = q.shape[2]
    count = jnp.cumsum(reset.reshape(b, 1, n, chunk).astype(jnp.int32), axis=-1)  # resets in [0, i]
    cum = jnp.cumsum(g, axis=-1)  # log of the decay product over [0, i]
    lower = jnp.tril(jnp.ones((chunk, chunk), bool))
    same = (count[..., :, None] == count[..., None, :]) & lower  # no reset in (j, i], j <= i
    pair = jnp.where(same, jnp.exp(jnp.where(same, cum[..., :, None] - cum[..., None, :], 0.0)), 0.0)
    from_start = jnp.where(count == 0, jnp.exp(cum), 0.0)  # Γ(0, i]
    to_end = jnp.where(count == count[..., -1:], jnp.exp(cum[..., -1:] - cum), 0.0)  # Γ(i, C]
    chunk_decay = jnp.where(count[..., -1] == 0, jnp.exp(cum[..., -1]), 0.0)  # Γ(0, C]

    k_beta, v_beta = k * beta[..., None], v * beta[..., None]
    strict = jnp.tril(jnp.ones((chunk, chunk), bool), -1)
    system = jnp.where(strict, (k_beta @ jnp.swapaxes(k, -1, -2)) * pair, 0.0) + jnp.eye(chunk, dtype=q.dtype)
    solve = lambda rhs: jax.lax.linalg.triangular_solve(  # noqa: E731
        system, rhs, left_side=True, lower=True, unit_diagonal=True
    )
    new_values = solve(v_beta)
    k_cumdecay = solve(k_beta * from_start[..., None])
    intra = (q @ jnp.swapaxes(k, -1, -2)) * pair
    q_dec = q * from_start[..., None]
    k_dec = k * to_end[..., None]

    def step(s, xs):
        nv, kcd, qd, kd, att, cd = xs
        v_new = nv - kcd @ s
        out = qd @ s + att @ v_new
        return s * cd[..., None, None] + jnp.swapaxes(kd, -1, -2) @ v_new, out

    xs = tuple(jnp.moveaxis(x, 2, 0) for x in (new_values, k_cumdecay, q_dec, k_dec, intra, chunk_decay))
    final, outs = jax.lax.scan(step, state, xs)  # outs [N, B, H, C, Dv]
    outs = jnp.moveaxis(outs, 0, 2).reshape(b, h, n * chunk, -1)[:, :, :t]
    return jnp.swapaxes(outs, 1, 2), final


def gated_delta_recurrent(
    q: Array, k: Array, v: Array, g: Array, beta: Array, reset: Array, state: Array
) -> tuple[Array, Array]:
    """The same recurrence token by token (decoding); arguments and result as
    :func:`gated_delta_chunked`."""

    def step(s, xs):
        qt, kt, vt, gt, bt, rt = xs
        decay = jnp.where(rt[:, None], 0.0, jnp.exp(gt))  # [B, H]
        s = s * decay[..., None, None]
        delta = (vt - jnp.einsum("bhkv,bhk->bhv", s, kt)) * bt[..., None]
        s = s + kt[..., :, None] * delta[..., None, :]
        return s, jnp.einsum("bhkv,bhk->bhv", s, qt)

    xs = tuple(jnp.moveaxis(x, 1, 0) for x in (q, k, v, g, beta, reset))
    final, outs = jax.lax.scan(step, state, xs)
    return jnp.moveaxis(outs, 0, 1), final


class GatedRMSNorm(nn.Module):
    """``Qwen3NextRMSNormGated``: RMSNorm over the last axis (fp32), ``w ·`` the normalised value
    cast back, times ``silu(gate)`` in fp32, cast back."""

    eps: float
    param_dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array, gate: Array) -> Array:
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), self.param_dtype)
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        y = (scale * y.astype(x.dtype)).astype(jnp.float32) * nn.silu(gate.astype(jnp.float32))
        return y.astype(x.dtype)


class GatedDeltaNet(nn.Module):
    """One Gated DeltaNet token mixer (module docstring). Parameters: the input projections
    (``in_proj_qkvz`` + ``in_proj_ba``, or ``in_proj_qkv`` / ``in_proj_z`` / ``in_proj_b`` /
    ``in_proj_a``), ``conv_weight`` ``[conv_dim, 1, K]``, ``A_log`` / ``dt_bias`` ``[Hv]``,
    ``norm/scale`` ``[Dv]``, ``out_proj``; the projections are :class:`Dense` layers, so LoRA and
    frozen int8 / fp8 storage reach them as they reach attention."""

    lin: LinearAttentionConfig
    hidden_size: int
    eps: float
    dtype: DType = jnp.float32
    param_dtype: DType = jnp.float32
    lora_dropout: float = 0.0

    def _project(self, x: Array) -> tuple[Array, Array, Array, Array]:
        """(mixed q/k/v ``[B, T, conv_dim]``, z ``[B, T, Hv, Dv]``, b, a ``[B, T, Hv]``)."""
        c = self.lin
        dense = lambda f, name: Dense(f, False, self.dtype, self.param_dtype, self.lora_dropout, name=name)  # noqa: E731
        bsz, t, _ = x.shape
        hk, r, dk, dv = c.num_k_heads, c.num_v_heads // c.num_k_heads, c.k_head_dim, c.v_head_dim
        if c.projection == "split":
            mixed = dense(c.conv_dim, "in_proj_qkv")(x)
            z = dense(c.value_dim, "in_proj_z")(x).reshape(bsz, t, c.num_v_heads, dv)
            return mixed, z, dense(c.num_v_heads, "in_proj_b")(x), dense(c.num_v_heads, "in_proj_a")(x)
        qkvz = dense(2 * c.key_dim + 2 * c.value_dim, "in_proj_qkvz")(x).reshape(bsz, t, hk, 2 * dk + 2 * r * dv)
        ba = dense(2 * c.num_v_heads, "in_proj_ba")(x).reshape(bsz, t, hk, 2 * r)
        q, k = qkvz[..., :dk], qkvz[..., dk : 2 * dk]
        v, z = qkvz[..., 2 * dk : 2 * dk + r * dv], qkvz[..., 2 * dk + r * dv :]
        mixed = jnp.concatenate([q.reshape(bsz, t, -1), k.reshape(bsz, t, -1), v.reshape(bsz, t, -1)], axis=-1)
        b, a = ba[..., :r].reshape(bsz, t, -1), ba[..., r:].reshape(bsz, t, -1)
        return mixed, z.reshape(bsz, t, c.num_v_heads, dv), b, a

    @nn.compact
    def __call__(self, x: Array, seg: Segments, state: LinearState | None = None) -> tuple[Array, LinearState | None]:
        """``x`` ``[B, T, H]``; ``state`` (decoding) this layer's cache entry. Returns (output,
        the new :class:`LinearState` when ``state`` was given)."""
        c = self.lin
        bsz, t, _ = x.shape
        real = seg.ids > 0
        x = (x * real[..., None]).astype(x.dtype)
        mixed, z, b, a = self._project(x)
        conv_w = self.param(
            "conv_weight", nn.initializers.lecun_normal(), (c.conv_dim, 1, c.conv_kernel), self.param_dtype
        )
        a_log = self.param("A_log", nn.initializers.zeros, (c.num_v_heads,), self.param_dtype)
        dt_bias = self.param("dt_bias", nn.initializers.ones, (c.num_v_heads,), self.param_dtype)
        history = jnp.zeros((bsz, c.conv_kernel - 1, c.conv_dim), x.dtype) if state is None else state.conv
        mixed, new_history = causal_conv(mixed, history, conv_w, seg)
        r = c.num_v_heads // c.num_k_heads
        q = mixed[..., : c.key_dim].reshape(bsz, t, c.num_k_heads, c.k_head_dim)
        k = mixed[..., c.key_dim : 2 * c.key_dim].reshape(bsz, t, c.num_k_heads, c.k_head_dim)
        v = mixed[..., 2 * c.key_dim :].reshape(bsz, t, c.num_v_heads, c.v_head_dim)
        q, k = (jnp.repeat(u, r, axis=2).astype(jnp.float32) for u in (q, k))
        q = l2norm(q) * c.k_head_dim**-0.5
        k = l2norm(k)
        beta = jnp.where(real[..., None], jax.nn.sigmoid(b).astype(jnp.float32), 0.0)
        g = -jnp.exp(a_log.astype(jnp.float32)) * jax.nn.softplus(a.astype(jnp.float32) + dt_bias.astype(jnp.float32))
        g = jnp.where(real[..., None], g, 0.0)
        reset = segment_starts(seg)
        s0 = (
            jnp.zeros((bsz, c.num_v_heads, c.k_head_dim, c.v_head_dim), jnp.float32)
            if state is None
            else state.recurrent.astype(jnp.float32)
        )
        rule = gated_delta_recurrent if state is not None and t == 1 else gated_delta_chunked
        core, final = rule(q, k, v.astype(jnp.float32), g, beta, reset, s0)
        core = GatedRMSNorm(self.eps, self.param_dtype, name="norm")(core.astype(x.dtype), z)
        out = Dense(self.hidden_size, False, self.dtype, self.param_dtype, self.lora_dropout, name="out_proj")(
            core.reshape(bsz, t, c.value_dim)
        )
        new_state = None
        if state is not None:
            new_state = LinearState(new_history.astype(state.conv.dtype), final.astype(state.recurrent.dtype))
        return out, new_state
