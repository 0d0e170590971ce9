"""The auxiliary router losses of the MoE families, on a forward pass's :class:`RoutingInfo`.

* :func:`load_balancing_loss` — Switch Transformer's load-balancing loss (Fedus et al. 2021,
  eq. 4: ``α · E · Σ_i f_i · P_i``; ``α`` is the caller's weight) in the top-k form of HF's
  ``load_balancing_loss_func`` (qwen3_moe, mixtral, olmoe): over every MoE layer's real tokens
  pooled together, ``f_i`` is the number of top-k assignments to expert ``i`` divided by the
  number of (layer, token) rows (so ``Σ_i f_i = k``) and ``P_i`` the mean softmax probability of
  expert ``i``; the loss is ``E · Σ_i f_i · P_i`` (``k`` when routing is uniform).
* :func:`router_z_loss` — ST-MoE's router z-loss (Zoph et al. 2022, eq. 5:
  ``(1/B) Σ_b (log Σ_j exp x_bj)²``), the mean over every layer's real tokens of the squared
  log-partition of the router logits; it keeps the logits small so the softmax stays stable.

Both take ``mask`` ``[B, T]`` (1 = real token) and leave padding out, as HF does with the
attention mask.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rise_jax.models.routers import RoutingInfo

Array = jax.Array


def load_balancing_loss(routing: RoutingInfo, mask: Array) -> Array:
    """``E · Σ_i f_i · P_i`` over all layers' real tokens (module docstring; HF's formula)."""
    logits = routing.router_logits.astype(jnp.float32)  # [L, B, T, E]
    num_experts = logits.shape[-1]
    real = mask.astype(jnp.float32)[None, :, :, None]
    rows = jnp.sum(real) * logits.shape[0]
    assigned = jax.nn.one_hot(routing.topk_indices, num_experts, dtype=jnp.float32).sum(axis=-2)  # [L, B, T, E]
    f = jnp.sum(assigned * real, axis=(0, 1, 2)) / rows
    p = jnp.sum(jax.nn.softmax(logits, axis=-1) * real, axis=(0, 1, 2)) / rows
    return num_experts * jnp.sum(f * p)


def router_z_loss(routing: RoutingInfo, mask: Array) -> Array:
    """Mean over every layer's real tokens of ``(logsumexp_j x_j)²`` (ST-MoE eq. 5)."""
    z = jax.nn.logsumexp(routing.router_logits.astype(jnp.float32), axis=-1)  # [L, B, T]
    real = mask.astype(jnp.float32)[None]
    return jnp.sum(jnp.square(z) * real) / (jnp.sum(real) * z.shape[0])
