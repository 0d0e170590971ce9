"""Dropless MoE dispatch: apply each token's k experts and combine with the routing weights.

One interface, ``dispatch(x, routing, source, impl)``: tokens ``x`` ``[N, H]``, their
:class:`ExpertChoice` (expert ids and fp32 weights ``[N, k]``) and an expert *weight source*
(:mod:`rise_jax.models.expert_weights`: where each expert's weights come from — plain stacked
parameters, trainable copies substituted into the base, the un-sliced stack in decoding). Every
implementation takes exactly those three and asks the source only for the experts it needs, so a
new way of holding weights is a new source, never a new branch here. All are exact, agree to
fp32 round-off and never drop a token:

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

The expert function is :func:`~rise_jax.models.expert_mlp.expert_mlp`
(``down(act(x @ gate + b, x @ up + b)) + b``; gate/up ``[H, I]``, down ``[I, H]``, biases and the
activation as the source holds them). The combine multiplies each expert output by its fp32 weight and sums the k terms in fp32 before
casting back to the activation dtype.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rise_jax.models import expert_parallel
from rise_jax.models.blocked_matmul import blocked_expert_mlp
from rise_jax.models.expert_mlp import expert_mlp
from rise_jax.models.expert_weights import ExpertWeights
from rise_jax.models.grouped_matmul import grouped_expert_mlp

Array = jax.Array


class ExpertChoice(NamedTuple):
    """Each token's experts: ``indices`` int ``[N, k]`` and their fp32 routing ``weights`` ``[N, k]``."""

    indices: Array
    weights: Array


def _combine(expert_out: Array, weights: Array, dtype) -> Array:
    """``expert_out`` ``[N, k, H]``, ``weights`` ``[N, k]`` -> ``[N, H]`` (fp32 accumulation)."""
    out = jnp.einsum("nkh,nk->nh", expert_out.astype(jnp.float32), weights.astype(jnp.float32))
    return out.astype(dtype)


def dispatch_dense(x: Array, routing: ExpertChoice, source: ExpertWeights, out_dtype=None) -> Array:
    """Reference: all experts on all tokens, gather the selected outputs. x ``[N, H]``."""
    ws = source.take_all(x.dtype)
    # Expert-major batched matmuls ([E, N, H] @ [E, H, I]) read the weights in their stored layout.
    xe = jnp.broadcast_to(x, (ws.gate.shape[0], *x.shape))
    y = expert_mlp(xe, ws, source.activation)  # [E, N, H]
    ids = jnp.minimum(routing.indices, source.num_experts - 1)  # ids past the experts carry weight 0
    selected = y[ids, jnp.arange(x.shape[0])[:, None]]  # [N, k, H]
    return _combine(selected, routing.weights, out_dtype or x.dtype)


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


def dispatch_ragged(x: Array, routing: ExpertChoice, source: ExpertWeights, out_dtype=None) -> Array:
    """Grouped matmul over expert-sorted rows with ``jax.lax.ragged_dot``, then unsort and combine."""
    n, k = routing.indices.shape
    ws = source.take_all(x.dtype)
    order, token, sizes = _sort_by_expert(routing.indices, source.num_experts)
    xs = x[token]
    row_expert = jnp.repeat(jnp.arange(source.num_experts), sizes, total_repeat_length=xs.shape[0])

    def lin(a, w, b):
        y = jax.lax.ragged_dot(a, w, sizes)
        return y if b is None else y + b[row_expert].astype(y.dtype)

    h = source.activation(lin(xs, ws.gate, ws.gate_bias), lin(xs, ws.up, ws.up_bias))
    ys = lin(h, ws.down, ws.down_bias)
    return _combine(_unsort(ys, order, n, k), routing.weights, out_dtype or x.dtype)


def _walk_and_combine(x: Array, routing: ExpertChoice, num_experts: int, mlp, out_dtype=None) -> Array:
    """Sort the pairs by expert, run ``mlp(sorted rows, group sizes)``, weight and scatter-add back."""
    n = routing.indices.shape[0]
    order, token, sizes = _sort_by_expert(routing.indices, num_experts)
    ys = mlp(x[token], sizes)
    # Weight each sorted row and scatter-add it to its token in fp32: one pass instead of an
    # unsort plus a combine (CPU scatter-add is sequential, so this stays deterministic).
    w_sorted = routing.weights.reshape(-1)[order].astype(jnp.float32)
    out = jnp.zeros((n, x.shape[1]), jnp.float32).at[token].add(ys.astype(jnp.float32) * w_sorted[:, None])
    return out.astype(out_dtype or x.dtype)


def dispatch_grouped_scan(x: Array, routing: ExpertChoice, source: ExpertWeights, out_dtype=None) -> Array:
    """Expert-sorted rows through :func:`~rise_jax.models.grouped_matmul.grouped_expert_mlp`: each
    expert's weights are read once (``source.take(e)``), only for experts that have rows; weight
    gradients only for ``source.trainable()`` experts."""
    mlp = lambda xs, sizes: grouped_expert_mlp(xs, source, sizes)  # noqa: E731
    return _walk_and_combine(x, routing, source.num_experts, mlp, out_dtype)


def dispatch_blocked(
    x: Array, routing: ExpertChoice, source: ExpertWeights, out_dtype=None, block: int | None = None
) -> Array:
    """Expert-sorted rows in blocks through :func:`~rise_jax.models.blocked_matmul.blocked_expert_mlp`;
    each block gathers its expert's weights (``source.take(expert per block)``), so weight
    gradients are ``[nb, ...]``-sized and reach only the source's differentiable experts."""
    ws = lambda be: source.take(be, x.dtype)  # noqa: E731
    mlp = lambda xs, sizes: blocked_expert_mlp(xs, sizes, ws, source.activation, block)  # noqa: E731
    return _walk_and_combine(x, routing, source.num_experts, mlp, out_dtype)


IMPLEMENTATIONS = {
    "dense": dispatch_dense,
    "ragged": dispatch_ragged,
    "grouped_scan": dispatch_grouped_scan,
    "blocked": dispatch_blocked,
}


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
        raise ValueError(f"unknown MoE dispatch {impl!r}; choose one of {('auto', *IMPLEMENTATIONS)}")
    return impl


def dispatch(x: Array, routing: ExpertChoice, source: ExpertWeights, impl: str = "auto", mesh=None) -> Array:
    """Apply the routed experts to tokens ``x`` ``[N, H]`` (output in ``x.dtype``). With a device
    ``mesh`` whose ``model`` axis splits the experts, each device computes only its own experts
    and the tokens' partial sums are combined (:mod:`rise_jax.models.expert_parallel`)."""
    fn = IMPLEMENTATIONS[resolve_impl(impl)]
    if expert_parallel.applies(mesh, source.num_experts):
        return expert_parallel.expert_parallel(fn, x, routing, source, mesh)
    return fn(x, routing, source)
