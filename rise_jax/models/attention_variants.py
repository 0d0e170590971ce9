"""Llama-4's attention variants (transformers ``modeling_llama4``): chunked local attention, the
query temperature of its NoPE layers and the weightless L2 q/k norm.

* **Chunked attention** (``attention_chunk_size`` C, the ``chunked_attention`` layers): a query
  sees the causal keys of its own chunk only, ``⌊p_k / C⌋ == ⌊p_q / C⌋`` with ``p`` a token's
  position in its sequence. transformers' ``create_chunked_causal_mask`` takes ``p`` as the cache
  column minus the row's left padding; here ``p`` is the column minus the first column of the
  token's *segment* of ``attention_mask`` (0 = padding, 1, 2, ... = packed sequences), which is
  the same for left- and right-padded rows and restarts at every packed sequence.
* **Temperature tuning** (``attn_temperature_tuning``, the layers without rope): queries are
  multiplied, in fp32, by ``1 + attn_scale · ln(1 + ⌊(p + 1) / floor_scale⌋)``. transformers takes
  ``p`` as the cache column (``arange(T) + past_seen_tokens``), which for a left-padded row counts
  the padding; here ``p`` is the token's position (``positions``, restarting per packed
  sequence), so a sequence gets the same scales whatever padding surrounds it. The two agree on
  unpadded and right-padded rows and differ on a left-padded row only from position
  ``floor_scale - 1 - padding`` on (Llama-4-Scout: ``floor_scale`` = 8192).
* **L2 q/k norm** (``use_qk_norm``): ``x / sqrt(mean(x²) + eps)`` over each head, in fp32, cast
  back, no weight; applied after the rope and only on the layers that use rope.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def sequence_positions(attention_mask: Array) -> Array:
    """int32 ``[B, S]``: each column's offset from the first column of its segment (a maximal run
    of equal non-zero ``attention_mask`` values); padding columns get offsets too, never used."""
    seg = attention_mask.astype(jnp.int32)
    col = jnp.broadcast_to(jnp.arange(seg.shape[1], dtype=jnp.int32), seg.shape)
    prev = jnp.pad(seg[:, :-1], ((0, 0), (1, 0)))
    start = jax.lax.cummax(jnp.where(seg != prev, col, 0), axis=1)
    return col - start


def chunk_visibility(attention_mask: Array, q_len: int, kv_len: int, q_offset: Array | int, chunk: int) -> Array:
    """bool ``[B, 1, 1, T, S]``: True where key column ``j`` lies in the same chunk of ``chunk``
    sequence positions as query ``i`` (cache column ``i + q_offset``). To be combined (``&``) with
    the causal / segment visibility, which it does not check."""
    pos = sequence_positions(attention_mask)[:, :kv_len]
    q_pos = jax.lax.dynamic_slice_in_dim(pos, q_offset, q_len, axis=1)
    same = (q_pos[:, :, None] // chunk) == (pos[:, None, :] // chunk)
    return same[:, None, None, :, :]


def temperature_scales(positions: Array, floor_scale: float, attn_scale: float) -> Array:
    """float32 ``[B, T, 1, 1]``: the NoPE layers' query scales for ``positions`` ``[B, T]``."""
    p = positions.astype(jnp.float32)
    scales = jnp.log1p(jnp.floor((p + 1.0) / floor_scale)) * attn_scale + 1.0
    return scales[:, :, None, None]


def l2_norm(x: Array, eps: float) -> Array:
    """Llama4TextL2Norm: ``x · rsqrt(mean(x²) + eps)`` over the last axis in fp32, cast back."""
    x32 = x.astype(jnp.float32)
    return (x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)).astype(x.dtype)
