"""The grouped expert MLP on CPU: ``jax.lax.ragged_dot`` semantics without its dense emulation.

Rows come sorted by expert: the first ``sizes[0]`` rows use expert 0, the next ``sizes[1]`` expert
1, and so on. XLA's CPU backend emulates ``ragged_dot`` with a dense masked computation over all
groups (G times the FLOPs; see ``bench/forward.py``). Here a ``scan`` over experts reads each
expert's weights once, and inner ``while_loop``s walk its rows in windows, each window through all
three matmuls of the MLP: first whole windows of ``BIG_WINDOWS x W`` rows (XLA's CPU dot runs
expert-sized matmuls of 256 rows at about twice the FLOP rate of 64-row ones: bench/RESULTS.md),
then the rest in windows of ``W`` rows, the last, partial one masked on write. Exact and dropless;
the padding is under ``W`` rows per group.

``while_loop`` has no reverse-mode rule, so the VJP is written out (``jax.custom_vjp``): the input
gradients walk the experts the same way, and ``d W[g] = x_g^T d out_g`` accumulates per group
(:func:`_rhs_grad`).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from rise_jax.models.expert_mlp import ExpertTensors, GatedActivation, linear
from rise_jax.models.expert_weights import ExpertWeights

Array = jax.Array


def _starts(sizes: Array) -> Array:
    sizes = sizes.astype(jnp.int32)
    return jnp.cumsum(sizes) - sizes


def _pad_rows(x: Array, win: int) -> Array:
    return jnp.concatenate([x, jnp.zeros((win, *x.shape[1:]), x.dtype)], axis=0)


BIG_WINDOWS = 4  # whole windows of 4 x W rows first (measured: 2 and 8 slower on the mid-size forward)


def _walk_windows(carry: Any, start: Array, size: Array, win: int, num_rows: int, window) -> Any:
    """One group's rows ``[start, start + size)`` through ``window(carry, r0, live, width, full)``:
    whole windows of ``BIG_WINDOWS x win`` rows first (when ``win >= 8`` and such a window fits
    in the ``num_rows`` rows; ``full`` True, every row live), then windows of ``win`` rows, the
    last partial (``live`` rows of ``width`` are the group's; ``full`` False)."""
    big = win * BIG_WINDOWS
    done = jnp.int32(0)
    if BIG_WINDOWS > 1 and win >= 8 and big <= num_rows:
        n_big = size // big
        carry = jax.lax.while_loop(
            lambda c: c[0] < n_big,
            lambda c: (c[0] + 1, window(c[1], start + c[0] * big, big, big, True)),
            (jnp.int32(0), carry),
        )[1]
        done = n_big * big
    rest = size - done
    return jax.lax.while_loop(
        lambda c: c[0] * win < rest,
        lambda c: (c[0] + 1, window(c[1], start + done + c[0] * win, rest - c[0] * win, win, False)),
        (jnp.int32(0), carry),
    )[1]


def _write_rows(bufs: list[Array], new: list[Array], r0, live, width: int, full: bool) -> list[Array]:
    """``new`` into rows ``[r0, r0 + width)`` of ``bufs``; a partial window keeps the rows past
    its ``live`` ones (they belong to the next group)."""
    if not full:
        keep = (jnp.arange(width) < live)[:, None]
        new = [
            jnp.where(keep, v, jax.lax.dynamic_slice_in_dim(b, r0, width, axis=0))
            for b, v in zip(bufs, new, strict=True)
        ]
    return [jax.lax.dynamic_update_slice_in_dim(b, v, r0, axis=0) for b, v in zip(bufs, new, strict=True)]


def _rhs_grad(lhs: Array, dout: Array, sizes: Array, win: int, rhs_dtype, need: Array | None = None) -> Array:
    """``d rhs[g] = lhs_g^T dout_g``; groups with ``need[g]`` False get zeros without the walk."""
    lhs_p, dout_p = _pad_rows(lhs, win), _pad_rows(dout, win)
    k, n = lhs.shape[1], dout.shape[1]
    starts = _starts(sizes)  # row offsets from the true sizes, before any group is skipped
    if need is not None:
        sizes = jnp.where(need, sizes, 0)  # a skipped group's walk does no window

    m = lhs.shape[0]

    def per_group(_, inp):
        start, size = inp

        def window(acc, r0, live, width, full):
            rows = jax.lax.dynamic_slice_in_dim(lhs_p, r0, width, axis=0)
            if not full:
                rows = jnp.where((jnp.arange(width) < live)[:, None], rows, 0)
            dy = jax.lax.dynamic_slice_in_dim(dout_p, r0, width, axis=0)
            return acc + (rows.T @ dy).astype(jnp.float32)

        acc = _walk_windows(jnp.zeros((k, n), jnp.float32), start, size, win, m, window)
        return None, acc.astype(rhs_dtype)

    _, grad = jax.lax.scan(per_group, None, (starts, sizes.astype(jnp.int32)))
    return grad


def _mlp_walk(
    xs: Array,
    take,
    act: GatedActivation,
    num_groups: int,
    out_dim: int,
    sizes: Array,
    win: int,
    keep_hidden: bool = False,
) -> Array | tuple[Array, Array, Array]:
    """The expert MLP ``down(act(x gate + b, x up + b)) + b`` in one walk: ``take(g)`` gives expert
    ``g``'s :class:`ExpertTensors`, read once; each window of rows goes through all three matmuls
    while in cache. With ``keep_hidden`` also returns the pre-activations ``x gate + b`` and
    ``x up + b`` ``[M, I]`` (the backward pass's residuals, which it would otherwise recompute
    with two more walks)."""
    m = xs.shape[0]
    xp = _pad_rows(xs, win)
    hid = take(0).gate.shape[-1]
    bufs0 = [jnp.zeros((m + win, out_dim), xs.dtype)]
    if keep_hidden:
        bufs0 += [jnp.zeros((m + win, hid), xs.dtype), jnp.zeros((m + win, hid), xs.dtype)]

    def per_group(bufs: list[Array], inp):
        g, start, size = inp

        def walk(bufs: list[Array]) -> list[Array]:
            # Experts without rows are skipped entirely, weights included: in decoding most are empty.
            w = take(g)

            def window(bufs: list[Array], r0, live, width: int, full: bool) -> list[Array]:
                rows = jax.lax.dynamic_slice_in_dim(xp, r0, width, axis=0)
                pre_g, pre_u = linear(rows, w.gate, w.gate_bias), linear(rows, w.up, w.up_bias)
                y = linear(act(pre_g, pre_u), w.down, w.down_bias).astype(xs.dtype)
                new = [y, pre_g.astype(xs.dtype), pre_u.astype(xs.dtype)][: len(bufs)]
                return _write_rows(bufs, new, r0, live, width, full)

            return _walk_windows(bufs, start, size, win, m, window)

        return jax.lax.cond(size > 0, walk, lambda b: b, bufs), None

    groups = jnp.arange(num_groups, dtype=jnp.int32)
    bufs, _ = jax.lax.scan(per_group, bufs0, (groups, _starts(sizes), sizes.astype(jnp.int32)))
    if keep_hidden:
        return tuple(b[:m] for b in bufs)
    return bufs[0][:m]


def _group_sums(rows: Array, sizes: Array, num_groups: int, dtype) -> Array:
    """Per-group column sums of expert-sorted ``rows`` ``[M, D]`` -> ``[G, D]`` (bias gradients)."""
    group = jnp.repeat(jnp.arange(num_groups, dtype=jnp.int32), sizes, total_repeat_length=rows.shape[0])
    live = (jnp.arange(rows.shape[0]) < jnp.sum(sizes))[:, None]
    summed = jax.ops.segment_sum(jnp.where(live, rows.astype(jnp.float32), 0), group, num_segments=num_groups)
    return summed.astype(dtype)


def _input_grads_walk(dy: Array, g: Array, u: Array, take, act: GatedActivation, sizes: Array, win: int):
    """The input side of the expert MLP's backward pass in one walk over experts, each read once
    through ``take(e)`` (only experts with rows, like the forward): per window of rows
    ``dh = dy downᵀ``, ``(dg, du) = act'(g, u)·dh``, ``dx = dg gateᵀ + du upᵀ``. Returns (dx, dg, du)
    ``[M, H]``, ``[M, I]``, ``[M, I]`` in ``dy.dtype``. No ``[E, ...]`` copy of the weights exists
    at any point (the frozen experts of a layer are the bulk of a training step's memory)."""
    m, hid = dy.shape[0], g.shape[1]
    dyp, gp, up = (_pad_rows(a, win) for a in (dy, g, u))
    bufs0 = [jnp.zeros((m + win, dy.shape[1]), dy.dtype), jnp.zeros((m + win, hid), dy.dtype)]
    bufs0.append(jnp.zeros((m + win, hid), dy.dtype))

    def per_group(bufs, inp):
        e, start, size = inp

        def walk(bufs):
            w = take(e)

            def window(bufs, r0, live, width, full):
                rows = [jax.lax.dynamic_slice_in_dim(a, r0, width, axis=0) for a in (dyp, gp, up)]
                dh = rows[0] @ jnp.swapaxes(w.down, 0, 1)
                dg, du = (d.astype(dy.dtype) for d in act.vjp(rows[1], rows[2], dh))
                dx = (dg @ jnp.swapaxes(w.gate, 0, 1) + du @ jnp.swapaxes(w.up, 0, 1)).astype(dy.dtype)
                return _write_rows(bufs, [dx, dg, du], r0, live, width, full)

            return _walk_windows(bufs, start, size, win, m, window)

        return jax.lax.cond(size > 0, walk, lambda b: b, bufs), None

    experts = jnp.arange(sizes.shape[0], dtype=jnp.int32)
    bufs, _ = jax.lax.scan(per_group, bufs0, (experts, _starts(sizes), sizes.astype(jnp.int32)))
    return tuple(b[:m] for b in bufs)


def _mlp_grads(xs, g, u, take, act: GatedActivation, sizes, need, dy, win, has_bias: bool):
    """(d xs, d weights) from the saved pre-activations ``g = x gate + b``, ``u = x up + b``.
    Weight gradients ``[E, ...]`` only for groups with ``need`` (all when None); bias gradients
    are per-group sums of the pre-activation (or output) cotangents."""
    dy = dy.astype(xs.dtype)
    dxs, dg, du = _input_grads_walk(dy, g, u, take, act, sizes, win)
    h = act(g, u).astype(xs.dtype)
    d_down = _rhs_grad(h, dy, sizes, win, xs.dtype, need)
    d_gate = _rhs_grad(xs, dg, sizes, win, xs.dtype, need)
    d_up = _rhs_grad(xs, du, sizes, win, xs.dtype, need)
    biases = (None, None, None)
    if has_bias:
        e = sizes.shape[0]
        biases = tuple(_group_sums(d, sizes, e, xs.dtype) for d in (dg, du, dy))
    return dxs, ExpertTensors(d_gate, d_up, d_down, *biases)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _source_mlp(xs: Array, params: Any, source: ExpertWeights, sizes: Array, win: int) -> Array:
    return _source_walk(xs, source.with_params(params), sizes, win)


def _source_walk(xs: Array, source: ExpertWeights, sizes: Array, win: int, keep_hidden: bool = False):
    take = lambda g: source.take(g, xs.dtype)  # noqa: E731
    return _mlp_walk(xs, take, source.activation, source.num_experts, xs.shape[-1], sizes, win, keep_hidden)


def _source_fwd(xs, params, source, sizes, win):
    y, g, u = _source_walk(xs, source.with_params(params), sizes, win, keep_hidden=True)
    return y, (xs, g, u, params, source, sizes)


def _source_bwd(win, res, dy):
    """The chain rule from the saved pre-activations (``x gate``, ``x up``: 2·M·I values, saved
    rather than recomputed, which would cost two of the backward's walks). The input gradients
    walk the experts one by one through ``source.take`` (as the forward does), so no layer-sized
    copy of the weights is rebuilt; weight gradients are computed only for the experts
    ``source.trainable()`` names (all when None) and pulled back to ``source.params()`` through
    the linear map ``take_all`` applies to them, so frozen experts cost no weight-gradient work
    and any source differentiates."""
    xs, g, u, params, source, sizes = res
    src = source.with_params(params)
    has_bias = jax.eval_shape(lambda: src.take(jnp.int32(0), xs.dtype)).gate_bias is not None
    take = lambda e: src.take(e, xs.dtype)  # noqa: E731
    dxs, d_w = _mlp_grads(xs, g, u, take, src.activation, sizes, src.trainable(), dy, win, has_bias)
    # Only the pull-back of take_all is used: XLA drops its primal (every expert's weights).
    _, pull = jax.vjp(lambda p: source.with_params(p).take_all(xs.dtype), params)
    (d_params,) = pull(d_w)
    return dxs, d_params, None, None


_source_mlp.defvjp(_source_fwd, _source_bwd)


def mlp_window(num_rows: int, num_groups: int) -> int:
    """Rows per window of the fused walk: a quarter of a balanced group, rounded up to 8, in
    ``[8, 128]`` (measured fastest on CPU; see bench/RESULTS.md); when a balanced group holds
    under 4 rows (decoding: 8 tokens × top-8 over 64 experts is 1 row per expert) twice that,
    rounded up to a power of two, since an 8-row window then computes mostly padding."""
    balanced = -(-num_rows // max(num_groups, 1))
    quarter = -(-balanced // 4)
    window = int(min(128, max(8, -(-quarter // 8) * 8)))
    return min(window, 1 << (2 * balanced - 1).bit_length())


def grouped_expert_mlp(xs: Array, source: ExpertWeights, group_sizes: Array, window: int | None = None) -> Array:
    """Expert MLP on expert-sorted rows: row ``r`` of group ``g`` gets the expert MLP of
    ``xs[r]`` with ``source.take(g)``'s weights and ``source.activation``, read
    once per expert and only for experts that have rows (in decoding most have none).
    Differentiable in ``xs`` and ``source.params()`` (custom VJP), weight gradients only for the
    experts ``source.trainable()`` names."""
    win = window or mlp_window(xs.shape[0], source.num_experts)
    return _source_mlp(xs, source.params(), source, group_sizes, win)
