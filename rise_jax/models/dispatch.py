"""Dropless MoE dispatch: apply each token's k experts and combine with the routing weights.

One interface, ``dispatch(x, w_gate, w_up, w_down, indices, weights, impl)``, with exact
implementations that agree to fp32 round-off and never drop a token:

* ``"dense"``  — every expert on every token, then a weighted sum over the selected ones. E/k
  times the FLOPs of the routed computation; the readable test reference (MaxText's
  loop-over-experts reference plays the same role).
* ``"ragged"`` — the token-expert pairs sorted by expert and fed to ``jax.lax.ragged_dot``
  (grouped matmul; native on GPU/TPU, emulated on CPU).
* ``"sorted_scan"`` — pairs sorted by expert, then a ``lax.scan`` over experts where each step
  multiplies a fixed-size window of the sorted rows by one expert's weights. Exact and dropless;
  efficient on CPU, where ``ragged_dot`` is emulated.

``"auto"`` picks the fastest exact one for the backend (measured in ``bench/forward.py``).

Expert weights: ``w_gate``/``w_up`` ``[E, H, I]``, ``w_down`` ``[E, I, H]``; the expert function is
``down(silu(x @ gate) * (x @ up))``. The combine multiplies each expert output by its fp32 weight
and sums the k terms in fp32 before casting back to the activation dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

IMPLEMENTATIONS = ("dense", "ragged", "sorted_scan")


def default_impl(backend: str | None = None) -> str:
    """Fastest exact implementation per backend: grouped matmul on accelerators, scan on CPU."""
    backend = backend or jax.default_backend()
    return "sorted_scan" if backend == "cpu" else "ragged"


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
    h = jax.nn.silu(jnp.einsum("nh,ehi->nei", x, w_gate)) * jnp.einsum("nh,ehi->nei", x, w_up)
    y = jnp.einsum("nei,eih->neh", h, w_down)  # [N, E, H]
    selected = jnp.take_along_axis(y, indices[..., None], axis=1)  # [N, k, H]
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


def dispatch_ragged(x: Array, w_gate: Array, w_up: Array, w_down: Array, indices: Array, weights: Array) -> Array:
    """Grouped matmul over expert-sorted rows with ``jax.lax.ragged_dot``."""
    n, k = indices.shape
    order, token, sizes = _sort_by_expert(indices, w_gate.shape[0])
    xs = x[token]
    h = jax.nn.silu(jax.lax.ragged_dot(xs, w_gate, sizes)) * jax.lax.ragged_dot(xs, w_up, sizes)
    ys = jax.lax.ragged_dot(h, w_down, sizes)
    return _combine(_unsort(ys, order, n, k), weights, x.dtype)


def _window_size(n_pairs: int, num_experts: int) -> int:
    """Rows per scan step: enough for a balanced load, rounded to 8; groups larger than it loop."""
    avg = -(-n_pairs // num_experts)
    return max(8, min(n_pairs, -(-avg // 8) * 8))


def dispatch_sorted_scan(x: Array, w_gate: Array, w_up: Array, w_down: Array, indices: Array, weights: Array) -> Array:
    """Expert-sorted rows processed in fixed windows: ``scan`` over (expert, window) steps.

    The sorted rows of expert ``e`` occupy ``[start_e, start_e + size_e)``. Step ``s`` handles
    expert ``e_s`` and rows ``[start_e + j·W, start_e + (j+1)·W)`` for its ``j``-th window; rows
    past the group end are masked out. The step count is static: ``E + ceil(N·k / W)`` covers any
    load (each expert needs ``ceil(size_e / W) ≤ size_e / W + 1`` windows), so nothing is dropped.
    """
    n, k = indices.shape
    num_experts = w_gate.shape[0]
    n_pairs = n * k
    order, token, sizes = _sort_by_expert(indices, num_experts)
    xs = x[token]
    win = _window_size(n_pairs, num_experts)
    xs_pad = jnp.concatenate([xs, jnp.zeros((win, x.shape[1]), x.dtype)], axis=0)

    starts = jnp.concatenate([jnp.zeros((1,), jnp.int32), jnp.cumsum(sizes)[:-1].astype(jnp.int32)])
    n_windows = (sizes + win - 1) // win  # per expert
    steps = num_experts + -(-n_pairs // win)
    # step s -> (expert, window j): expert = number of experts whose windows end at or before s.
    window_ends = jnp.cumsum(n_windows)
    s = jnp.arange(steps)
    step_expert = jnp.minimum(jnp.searchsorted(window_ends, s, side="right"), num_experts - 1).astype(jnp.int32)
    step_j = s - (window_ends[step_expert] - n_windows[step_expert])
    step_valid = s < window_ends[-1]

    def body(acc: Array, inp):
        e, j, valid = inp
        row0 = starts[e] + j * win
        rows = jax.lax.dynamic_slice_in_dim(xs_pad, row0, win, axis=0)
        h = jax.nn.silu(rows @ w_gate[e]) * (rows @ w_up[e])
        y = h @ w_down[e]
        live = valid & (jnp.arange(win) < sizes[e] - j * win)
        y = jnp.where(live[:, None], y, jnp.zeros_like(y))
        old = jax.lax.dynamic_slice_in_dim(acc, row0, win, axis=0)
        acc = jax.lax.dynamic_update_slice_in_dim(acc, old + y, row0, axis=0)
        return acc, None

    acc0 = jnp.zeros((n_pairs + win, x.shape[1]), x.dtype)
    acc, _ = jax.lax.scan(body, acc0, (step_expert, step_j, step_valid))
    return _combine(_unsort(acc[:n_pairs], order, n, k), weights, x.dtype)


def dispatch(
    x: Array, w_gate: Array, w_up: Array, w_down: Array, indices: Array, weights: Array, impl: str = "auto"
) -> Array:
    """Apply the routed experts to tokens ``x`` ``[N, H]``; ``indices``/``weights`` ``[N, k]``."""
    fn = {"dense": dispatch_dense, "ragged": dispatch_ragged, "sorted_scan": dispatch_sorted_scan}[resolve_impl(impl)]
    return fn(x, w_gate, w_up, w_down, indices, weights)
