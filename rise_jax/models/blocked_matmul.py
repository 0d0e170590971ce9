"""Grouped expert MLP as blocked batched matmuls: the accelerator-friendly exact dispatch.

The ``R`` expert-sorted rows (``sizes[e]`` rows for expert ``e``) are placed in a padded layout
where each expert's group starts on a multiple of ``B`` rows, so every block of ``B`` rows belongs
to one expert. Each block gathers its expert's weights and the whole MLP is three batched matmuls
``[nb, B, H] @ [nb, H, I]``. ``nb`` is static: at most ``(R + min(E, R)·(B − 1)) / B`` blocks hold
rows (each non-empty group wastes under one block); the rest hold zeros and are multiplied anyway.

Why: XLA on GPU lowers ``jax.lax.ragged_dot`` by expanding it over all experts (E/k times the
routed FLOPs and an ``[E, R, H]`` temporary), and a scan over experts is one small kernel per
step. Here the cost is a gather of ``nb ≈ R/B + E`` weight matrices plus matmuls over
``R + E·B`` rows (:func:`block_rows` balances the two); gradients come from autodiff (the
gather's transpose is a scatter-add into only the weights that were gathered from a
differentiable source). Measured in ``bench/moe_dispatch.py`` and ``bench/RESULTS.md``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from rise_jax.models.expert_mlp import ExpertTensors, GatedActivation, expert_mlp

Array = jax.Array


def block_rows(num_rows: int, num_experts: int) -> int:
    """Rows per block ``B``, a power of two: about the mean group size ``R/E``, in [8, 128] (the
    setting measured in ``bench/RESULTS.md``: 8 in decoding, 64-128 for training batches), and
    for very large ``R`` at least ``R / 2E`` (up to 1024), so that the per-layer weight gather stays
    under ``3E`` matrices (e.g. 512 rows for a 16k-token replay batch of Qwen3-30B-A3B).

    ``B`` trades padded rows (matmul work on up to ``R + E·(B − 1)`` rows) against gathered
    weights (``R/B + E`` matrices of ``H × I``)."""

    def pow2ceil(v: int) -> int:
        return 1 << max(0, v - 1).bit_length()

    mean = pow2ceil(-(-num_rows // num_experts))
    return int(min(1024, max(min(128, max(8, mean)), pow2ceil(-(-num_rows // (2 * num_experts))))))


def block_layout(sizes: Array, num_rows: int, block: int) -> tuple[Array, Array, int]:
    """Padded layout of ``num_rows`` expert-sorted rows with group sizes ``sizes`` ``[E]``.

    Returns (``dest`` ``[R]``: each row's index in the padded ``[nb·B]`` rows, ``expert`` ``[nb]``:
    each block's expert (the last expert for trailing all-zero blocks), ``nb``)."""
    e = sizes.shape[0]
    nb = max(1, (num_rows + min(e, num_rows) * (block - 1)) // block)
    padded = (sizes + block - 1) // block * block
    pad_end = jnp.cumsum(padded)
    pad_start = pad_end - padded
    start = jnp.cumsum(sizes) - sizes
    group = jnp.repeat(jnp.arange(e, dtype=jnp.int32), sizes, total_repeat_length=num_rows)
    dest = pad_start[group] + jnp.arange(num_rows, dtype=jnp.int32) - start[group]
    expert = jnp.searchsorted(pad_end, jnp.arange(nb, dtype=pad_end.dtype) * block, side="right")
    return dest, jnp.minimum(expert, e - 1).astype(jnp.int32), nb


def blocked_expert_mlp(
    xs: Array,
    sizes: Array,
    block_weights: Callable[[Array], ExpertTensors],
    act: GatedActivation,
    block: int | None = None,
) -> Array:
    """The expert MLP per row with its expert's weights. ``xs`` ``[R, H]`` sorted by expert;
    ``block_weights(expert [nb])`` returns the per-block :class:`ExpertTensors` (gate
    ``[nb, H, I]``, up, down ``[nb, I, H]``, biases), so callers choose where the weights come
    from (a layer's ``[E, ...]`` params, the stacked ``[L, E, ...]`` ones, or trainable copies)."""
    r, h = xs.shape
    block = block or block_rows(r, sizes.shape[0])
    dest, expert, nb = block_layout(sizes, r, block)
    xp = jnp.zeros((nb * block, h), xs.dtype).at[dest].set(xs, unique_indices=True).reshape(nb, block, h)
    y = expert_mlp(xp, block_weights(expert), act).reshape(nb * block, -1)
    return y[dest]
