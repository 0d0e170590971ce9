"""Expert parallelism that moves tokens, not weights (``jax.shard_map`` over the device mesh).

The experts of every MoE layer are split whole over the mesh axis :data:`MODEL` (``E / m`` per
device, :mod:`rise_jax.sharding`). Left to XLA's SPMD partitioner, a dispatch that indexes the
expert stack by data-dependent ids all-gathers each layer's complete expert tensors first (FSDP
over experts: 1.15 GiB per Qwen3-30B-A3B layer in bf16). Here the dispatch runs inside
``shard_map`` instead, so each device only ever touches its own experts:

1. Tokens are replicated over :data:`MODEL` (the batch is split over :data:`DATA`, if at all, and
   every device of a data group holds that group's tokens), so no token needs to travel *to* an
   expert: each device keeps the token-expert pairs whose expert it owns, renumbers them to its
   local experts and sends every other pair past its last expert with weight 0 (the sorted-walk
   dispatches never compute such a pair; ``dense`` multiplies it by 0).
2. The unchanged dispatch implementation (``grouped_scan``, ``blocked``, ``ragged`` or ``dense``)
   runs on the local experts through the source's local part
   (:meth:`~rise_jax.models.expert_weights.ExpertWeights.localize`) and returns the weighted sum
   of the pairs it owns, in fp32.
3. One ``psum`` over :data:`MODEL` adds the partial sums: ``N_local × H`` fp32 per layer, the only
   collective of the MoE block. Its transpose in the backward pass is the ``psum`` of the token
   cotangents (autodiff of ``shard_map`` inserts it); weight gradients stay on the device that owns
   the expert.

Each token's output is the sum over its k experts of ``w·expert(x)``; single-device dispatch adds
the k terms in one fp32 sum, here they are added in up to ``m`` partial sums and one ``psum``, so
results agree to fp32 round-off (not bitwise). Dropless: every pair is computed by exactly one
device. An all-to-all exchange (``jax.lax.ragged_all_to_all``) is what a batch split over the
expert axis itself would need; with the ``data × model`` mesh the batch never is, and the
``psum`` moves no more bytes than the all-to-all's return trip would.

A training step with the batch split over ``data`` runs data-parallel inside a ``shard_map``
over :data:`DATA` (:mod:`rise_jax.training.step`); the dispatch then maps only :data:`MODEL`
(the context mesh already has ``data`` manual) and the trainable gradients are summed over the
data groups once per step, not by each layer's transpose.

The sources say how their leaves split (``expert_specs``): stacked experts on their expert axis
(``[E, ...]``, or ``[L, E, ...]`` in decoding), slot tables with their experts, trainable copies
``[K, ...]`` in owner-grouped row blocks (``rise_jax.training.partition.expert_slots`` with
``shards = m``: device ``i`` holds rows ``[i·K/m, (i+1)·K/m)``, the copies of its own experts).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec

from rise_jax.models.expert_weights import ExpertWeights

Array = jax.Array
DATA, MODEL = "data", "model"  # the mesh axes (batch, parameters); rise_jax.sharding builds the mesh


def applies(mesh: Mesh | None, num_experts: int) -> bool:
    """Whether a layer with ``num_experts`` experts runs expert-parallel on ``mesh``: more than one
    device on :data:`MODEL` and the experts divide evenly (otherwise they are replicated)."""
    return mesh is not None and mesh.shape[MODEL] > 1 and num_experts % mesh.shape[MODEL] == 0


def expert_parallel(impl: Callable[..., Array], x: Array, routing: Any, source: ExpertWeights, mesh: Mesh) -> Array:
    """``impl(x, routing, source)`` with the experts split over ``mesh``'s :data:`MODEL` axis.

    ``x`` ``[N, H]`` and ``routing`` (:class:`~rise_jax.models.dispatch.ExpertChoice`, global
    expert ids) are split by rows over :data:`DATA` when ``N`` divides by its size, else replicated.
    Output ``[N, H]`` in ``x.dtype``."""
    context = jax.sharding.get_abstract_mesh()
    if DATA in getattr(context, "manual_axes", ()):
        # Inside a data-parallel shard_map (rise_jax.training.step): the batch is already this
        # group's, so only the expert axis is mapped here.
        mesh, axes, rows = context, {MODEL}, PartitionSpec()
    else:
        data = mesh.shape[DATA]
        axes, rows = (
            set(mesh.axis_names),
            PartitionSpec(DATA) if data > 1 and x.shape[0] % data == 0 else PartitionSpec(),
        )

    def local(x: Array, indices: Array, weights: Array, src: ExpertWeights) -> Array:
        shard = jax.lax.axis_index(MODEL)
        src = src.localize(shard)
        e = src.num_experts
        ids = indices - shard * e
        mine = (ids >= 0) & (ids < e)
        choice = routing._replace(indices=jnp.where(mine, ids, e), weights=jnp.where(mine, weights, 0.0))
        return jax.lax.psum(impl(x, choice, src, out_dtype=jnp.float32), MODEL)

    run = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(rows, rows, rows, source.expert_specs(MODEL)),
        out_specs=rows,
        axis_names=axes,
        # The kernels' scans start from zero buffers that do not vary over devices while their
        # results do; without the check JAX still transposes psum and the replicated inputs
        # correctly (the sharded training step equals the single-device one, tests/sharded_check.py).
        check_vma=False,
    )
    return run(x, routing.indices, routing.weights, source).astype(x.dtype)
