"""Dropless MoE dispatch: apply each token's k experts and combine with the routing weights.

One interface, ``dispatch(x, w_gate, w_up, w_down, indices, weights, impl)``, with exact
implementations that agree to fp32 round-off and never drop a token:

* ``"dense"``  — every expert on every token, then a weighted sum over the selected ones. E/k
  times the FLOPs of the routed computation; the readable test reference (MaxText's
  loop-over-experts reference plays the same role).
* ``"ragged"`` — the token-expert pairs sorted by expert and fed to ``jax.lax.ragged_dot``
  (grouped matmul; native on GPU/TPU, emulated on CPU).
* ``"grouped_scan"`` — the same sorted rows through
  :func:`~rise_jax.models.grouped_matmul.grouped_expert_mlp`: a scan over experts, each walking
  its rows in fixed windows (exact, dropless, custom VJP). Efficient on CPU, where XLA emulates
  ``ragged_dot`` densely.
* ``"blocked"`` — the sorted rows with every expert's group padded to a multiple of a block of
  rows, each block multiplied by its expert's weights gathered per block: one batched matmul
  ``[nb, B, H] @ [nb, H, I]`` per projection (:mod:`rise_jax.models.blocked_matmul`). Plain XLA,
  few large kernels: the accelerator path where ``ragged_dot`` is not a native grouped matmul.

``"auto"`` picks the fastest exact one for the backend (measured in ``bench/forward.py`` on CPU,
``bench/moe_dispatch.py --gpu`` and ``bench/train_step.py --gpu`` on GPU).

Expert weights: ``w_gate``/``w_up`` ``[E, H, I]``, ``w_down`` ``[E, I, H]``; the expert function is
``down(silu(x @ gate) * (x @ up))``. The combine multiplies each expert output by its fp32 weight
and sums the k terms in fp32 before casting back to the activation dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rise_jax.models.blocked_matmul import blocked_expert_mlp
from rise_jax.models.grouped_matmul import (
    grouped_expert_mlp,
    grouped_expert_mlp_override,
    grouped_expert_mlp_stacked,
    override_weights,
)

Array = jax.Array

IMPLEMENTATIONS = ("dense", "ragged", "grouped_scan", "blocked")


def default_impl(backend: str | None = None) -> str:
    """Fastest exact implementation per backend (``bench/moe_dispatch.py``): the windowed scan on
    CPU, blocked batched matmuls on GPU (XLA GPU expands ``ragged_dot`` over all experts), and
    ``ragged_dot`` on TPU."""
    backend = backend or jax.default_backend()
    return {"cpu": "grouped_scan", "gpu": "blocked", "cuda": "blocked", "rocm": "blocked"}.get(backend, "ragged")


def resolve_impl(impl: str) -> str:
    if impl == "auto":
        return default_impl()
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"unknown MoE dispatch {impl!r}; choose one of {('auto',) + IMPLEMENTATIONS}")
    return impl


def _combine(expert_out: Array, weights: Array, dtype) -> Array:
    """``expert_out`` ``[N, k, H]``, ``weights`` ``[N, k]`` -> ``[N, H]`` (fp32 accumulation)."""
    out = jnp.einsum("nkh,nk->nh", expert_out.astype(jnp.float32), weights.astype(jnp.float32))
    return out.astype(dtype)


def dispatch_dense(x: Array, w_gate: Array, w_up: Array, w_down: Array, indices: Array, weights: Array) -> Array:
    """Reference: all experts on all tokens, gather the selected outputs. x ``[N, H]``."""
    # Expert-major batched matmuls ([E, N, H] @ [E, H, I]) read the weights in their stored layout.
    xe = jnp.broadcast_to(x, (w_gate.shape[0], *x.shape))
    h = jax.nn.silu(jnp.einsum("enh,ehi->eni", xe, w_gate)) * jnp.einsum("enh,ehi->eni", xe, w_up)
    y = jnp.einsum("eni,eih->enh", h, w_down)  # [E, N, H]
    selected = y[indices, jnp.arange(x.shape[0])[:, None]]  # [N, k, H]
    return _combine(selected, weights, x.dtype)


def _sort_by_expert(indices: Array, num_experts: int) -> tuple[Array, Array, Array]:
    """Stable sort of the ``N·k`` token-expert pairs by expert.

    Returns (order ``[N·k]`` into the flattened pairs, token of each sorted pair, group sizes ``[E]``).
    """
    flat = indices.reshape(-1)
    order = jnp.argsort(flat, stable=True)
    token = order // indices.shape[-1]
    sizes = jnp.bincount(flat, length=num_experts).astype(jnp.int32)
    return order, token, sizes


def _unsort(y_sorted: Array, order: Array, n: int, k: int) -> Array:
    y = jnp.zeros_like(y_sorted).at[order].set(y_sorted, unique_indices=True)
    return y.reshape(n, k, -1)


def _dispatch_sorted(x, w_gate, w_up, w_down, indices, weights, gmm) -> Array:
    """Sort the token-expert pairs by expert, run the expert MLP as three grouped matmuls, unsort."""
    n, k = indices.shape
    order, token, sizes = _sort_by_expert(indices, w_gate.shape[0])
    xs = x[token]
    h = jax.nn.silu(gmm(xs, w_gate, sizes)) * gmm(xs, w_up, sizes)
    ys = gmm(h, w_down, sizes)
    return _combine(_unsort(ys, order, n, k), weights, x.dtype)


def dispatch_ragged(x: Array, w_gate: Array, w_up: Array, w_down: Array, indices: Array, weights: Array) -> Array:
    """Grouped matmul over expert-sorted rows with ``jax.lax.ragged_dot``."""
    return _dispatch_sorted(x, w_gate, w_up, w_down, indices, weights, jax.lax.ragged_dot)


def _walk_and_combine(x: Array, indices: Array, weights: Array, num_experts: int, mlp) -> Array:
    """Sort the pairs by expert, run ``mlp(sorted rows, group sizes)``, weight and scatter-add back."""
    n = indices.shape[0]
    order, token, sizes = _sort_by_expert(indices, num_experts)
    ys = mlp(x[token], sizes)
    # Weight each sorted row and scatter-add it to its token in fp32: one pass instead of an
    # unsort plus a combine (CPU scatter-add is sequential, so this stays deterministic).
    w_sorted = weights.reshape(-1)[order].astype(jnp.float32)
    out = jnp.zeros((n, x.shape[1]), jnp.float32).at[token].add(ys.astype(jnp.float32) * w_sorted[:, None])
    return out.astype(x.dtype)


def dispatch_grouped_scan(
    x: Array, w_gate: Array, w_up: Array, w_down: Array, indices: Array, weights: Array, trainable=None
) -> Array:
    """Expert-sorted rows through :func:`~rise_jax.models.grouped_matmul.grouped_expert_mlp`."""
    mlp = lambda xs, sizes: grouped_expert_mlp(xs, w_gate, w_up, w_down, sizes, need_weight_grad=trainable)  # noqa: E731
    return _walk_and_combine(x, indices, weights, w_gate.shape[0], mlp)


def dispatch_override(
    x: Array,
    base: tuple[Array, Array, Array],
    trained: tuple[Array, Array, Array],
    slots: Array,
    indices: Array,
    weights: Array,
) -> Array:
    """``grouped_scan`` where expert ``e`` uses the trainable copy ``trained[·][slots[e]]`` when
    ``slots[e] >= 0`` and the frozen ``base[·][e]`` otherwise (subnetwork training). Gradients flow
    to ``x`` and ``trained`` only, computed for the trainable experts only."""
    mlp = lambda xs, sizes: grouped_expert_mlp_override(xs, base, trained, slots, sizes)  # noqa: E731
    return _walk_and_combine(x, indices, weights, base[0].shape[0], mlp)


def dispatch_stacked(
    x: Array, w_gate: Array, w_up: Array, w_down: Array, layer: Array, indices: Array, weights: Array
) -> Array:
    """``grouped_scan`` on layer ``layer`` of the stacked expert weights ``[L, E, ...]`` (forward only).

    The decoding path: inside the scan over layers it reads only the experts a token uses instead
    of copying the layer's whole expert slice (see ``bench/generate.py``).
    """
    mlp = lambda xs, sizes: grouped_expert_mlp_stacked(xs, w_gate, w_up, w_down, layer, sizes)  # noqa: E731
    return _walk_and_combine(x, indices, weights, w_gate.shape[1], mlp)


def dispatch_blocked(
    x: Array, w_gate: Array, w_up: Array, w_down: Array, indices: Array, weights: Array, block: int | None = None
) -> Array:
    """Expert-sorted rows in blocks through :func:`~rise_jax.models.blocked_matmul.blocked_expert_mlp`."""
    ws = lambda be: (w_gate[be], w_up[be], w_down[be])  # noqa: E731
    mlp = lambda xs, sizes: blocked_expert_mlp(xs, sizes, ws, block)  # noqa: E731
    return _walk_and_combine(x, indices, weights, w_gate.shape[0], mlp)


def dispatch_blocked_override(
    x: Array,
    base: tuple[Array, Array, Array],
    trained: tuple[Array, Array, Array],
    slots: Array,
    indices: Array,
    weights: Array,
    block: int | None = None,
) -> Array:
    """``blocked`` where expert ``e`` uses ``trained[·][slots[e]]`` when ``slots[e] >= 0`` and the
    gradient-stopped ``base[·][e]`` otherwise (:func:`override_weights`). Each block gathers its
    expert's weights from one of the two, so weight gradients are ``[K, ...]``-sized: only the
    trainable experts receive any."""

    ws = lambda be: tuple(override_weights(base, trained, slots, x.dtype, be))  # noqa: E731
    mlp = lambda xs, sizes: blocked_expert_mlp(xs, sizes, ws, block)  # noqa: E731
    return _walk_and_combine(x, indices, weights, base[0].shape[0], mlp)


def dispatch_blocked_stacked(
    x: Array, w_gate: Array, w_up: Array, w_down: Array, layer: Array, indices: Array, weights: Array
) -> Array:
    """``blocked`` on layer ``layer`` of the stacked ``[L, E, ...]`` weights: gathers only the
    experts the blocks use (the decoding path, like :func:`dispatch_stacked`)."""
    ws = lambda be: tuple(w[layer, be].astype(x.dtype) for w in (w_gate, w_up, w_down))  # noqa: E731
    mlp = lambda xs, sizes: blocked_expert_mlp(xs, sizes, ws, None)  # noqa: E731
    return _walk_and_combine(x, indices, weights, w_gate.shape[1], mlp)


def dispatch(
    x: Array,
    w_gate: Array,
    w_up: Array,
    w_down: Array,
    indices: Array,
    weights: Array,
    impl: str = "auto",
    trainable: Array | None = None,
) -> Array:
    """Apply the routed experts to tokens ``x`` ``[N, H]``; ``indices``/``weights`` ``[N, k]``.

    ``trainable`` (bool ``[E]``, optional) says which experts' weights can receive gradients;
    implementations may skip the weight-gradient work of the others (``grouped_scan`` does).
    """
    if trainable is not None and resolve_impl(impl) == "grouped_scan":
        return dispatch_grouped_scan(x, w_gate, w_up, w_down, indices, weights, trainable)
    fn = {
        "dense": dispatch_dense,
        "ragged": dispatch_ragged,
        "grouped_scan": dispatch_grouped_scan,
        "blocked": dispatch_blocked,
    }[resolve_impl(impl)]
    return fn(x, w_gate, w_up, w_down, indices, weights)
