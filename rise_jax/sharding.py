"""Device mesh and parameter shardings (JAX SPMD; no hand-written collectives).

Mesh axes: ``data`` (batch) x ``model`` (parameters). On ``model`` the MoE expert weights are
split by expert (expert parallelism: ``[n, E, H, I]`` -> ``P(None, "model")``, each device holds
``E / m`` whole experts, which is where almost all of an MoE's parameters are), and the large
dense matrices are split FSDP-style along a dimension that divides evenly (embedding by vocab,
``lm_head`` by vocab, q/k/v by output features, o_proj by input features). Norms, biases and
routers (``[n, H, E]``, ~0.1 % of the model) are replicated. A leaf whose dimension does not
divide by the axis size is replicated rather than padded. The MoE dispatch runs inside
``shard_map`` (:mod:`rise_jax.models.expert_parallel`, ``load_model(mesh=...)``): each device
computes its own experts and one ``psum`` of the tokens' partial sums per layer crosses devices;
elsewhere XLA's partitioner inserts the all-gathers / reductions. Results equal the single-device
ones up to fp32 summation order.

Why expert parallel + FSDP on one axis: Qwen3-30B-A3B keeps 97 % of its weights in experts
(128 per layer, divisible by 2, 4, 8, 16), Phi-3.5-MoE 96 % (16 per layer); sharding experts whole
keeps each expert's matmuls local, and one parameter axis keeps the mesh simple on 1-16 GPUs.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rise_jax.models.expert_parallel import DATA, MODEL  # the mesh axes


def make_mesh(model: int = 0, data: int = 1, devices: list | None = None) -> Mesh:
    """A ``(data, model)`` mesh; ``model = 0`` uses every device not taken by ``data``."""
    # Ordered by process: a multi-process job's ``data`` rows span processes, ``model`` stays
    # within one where the local device count allows (rise_jax.distributed).
    devices = list(devices if devices is not None else sorted(jax.devices(), key=lambda d: (d.process_index, d.id)))
    if data < 1:
        raise ValueError(f"mesh data axis must be >= 1, got {data}")
    model = model or len(devices) // data
    if data * model != len(devices):
        raise ValueError(
            f"mesh data x model = {data} x {model} = {data * model}, but {len(devices)} devices are present"
        )
    return Mesh(np.asarray(devices).reshape(data, model), (DATA, MODEL))


def check_mesh(data: Any, model: Any, expert_parallel: Any = True, devices: int | None = None) -> None:
    """``config.mesh`` against the visible devices (``jax.device_count()`` unless given), before any
    model is built: whole numbers (``data >= 1``, ``model >= 0``, 0 = the rest), and a mesh of more
    than one device only where exactly that many are visible. Errors name the field."""
    from rise_jax.errors import SettingError

    for name, value, least in (("data", data, 1), ("model", model, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise SettingError(f"config.mesh.{name} = {value!r}: must be a whole number >= {least}")
    if not isinstance(expert_parallel, bool):
        raise SettingError(f"config.mesh.expert_parallel = {expert_parallel!r}: must be True or False")
    count = jax.device_count() if devices is None else devices
    kind = f"{jax.devices()[0].platform} " if devices is None else ""
    if count % data:
        raise SettingError(
            f"config.mesh.data = {data}: {count} {kind}device(s) are visible, which do not split into {data} groups"
        )
    size = data * (model or count // data)
    if size != count and (count > 1 or size > 1):
        raise SettingError(
            f"config.mesh: data x model = {data} x {model or count // data} = {size} devices, but {count} {kind}"
            f"device(s) are visible; set config.mesh.data / config.mesh.model to use exactly those"
        )


def param_spec(path: tuple[str, ...], shape: tuple[int, ...], model_size: int) -> PartitionSpec:
    """The :class:`PartitionSpec` of one parameter (``path`` as in the params tree; a quantized
    kernel's ``qvalue`` and ``scale`` ``[..., 1, out]`` follow the kernel's rule, a scale axis of
    size 1 staying replicated)."""
    if path and path[-1] in ("qvalue", "scale"):
        path = path[:-1]
    name = "/".join(path)

    def split(dim: int) -> PartitionSpec:
        if model_size <= 1 or shape[dim] % model_size:
            return PartitionSpec()
        spec: list[Any] = [None] * len(shape)
        spec[dim] = MODEL
        return PartitionSpec(*spec)

    if "moe/experts" in name:  # [n, E, H, I] / [n, E, I, H]: whole experts per device
        return split(1)
    if name.startswith("embed_tokens"):  # [V, H]
        return split(0)
    if name.startswith("lm_head/kernel"):  # [H, V]
        return split(1)
    if name.endswith("kernel") and len(shape) == 3:  # stacked [n, in, out]
        if "o_proj" in name or "down_proj" in name:
            return split(1)
        return split(2)
    return PartitionSpec()


def param_sharding(mesh: Mesh):
    """``sharding(path, shape)`` for :func:`rise_jax.load_model` (leaves are placed sharded as they
    are read: no full host copy per device)."""
    m = mesh.shape[MODEL]

    def sharding(path: tuple[str, ...], shape: tuple[int, ...]) -> NamedSharding:
        return NamedSharding(mesh, param_spec(tuple(path), tuple(shape), m))

    return sharding


def tree_shardings(tree: Any, mesh: Mesh) -> Any:
    """A :class:`NamedSharding` for every leaf of a params-shaped tree (arrays or ShapeDtypeStructs)."""
    m = mesh.shape[MODEL]

    def one(path, leaf):
        keys = tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)
        return NamedSharding(mesh, param_spec(keys, tuple(leaf.shape), m))

    return jax.tree_util.tree_map_with_path(one, tree)


def trainable_shardings(weights: Any, mesh: Mesh) -> Any:
    """The K trainable experts ``[K_run, H, I]`` split by row blocks over ``model`` when K divides
    (built with ``expert_slots(..., shards=m)`` each block holds the copies of the experts its
    device owns, which expert-parallel training needs)."""
    m = mesh.shape[MODEL]

    def one(leaf):
        if leaf.ndim >= 1 and m > 1 and leaf.shape[0] % m == 0:
            return NamedSharding(mesh, PartitionSpec(MODEL, *([None] * (leaf.ndim - 1))))
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree_util.tree_map(one, weights)
