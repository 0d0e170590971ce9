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

import re
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rise_jax.models.expert_parallel import DATA, MODEL  # the mesh axes


def make_mesh(model: int = 0, data: int = 1, devices: list | None = None) -> Mesh:
    """A ``(data, model)`` mesh; ``model = 0`` uses every device not taken by ``data``."""
    devices = list(devices if devices is not None else jax.devices())
    if data < 1:
        raise ValueError(f"mesh data axis must be >= 1, got {data}")
    model = model or len(devices) // data
    if data * model != len(devices):
        raise ValueError(
            f"mesh data x model = {data} x {model} = {data * model}, but {len(devices)} devices are present"
        )
    return Mesh(np.asarray(devices).reshape(data, model), (DATA, MODEL))


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


def maybe_initialize_distributed() -> bool:
    """``jax.distributed.initialize()`` when the environment describes a multi-process job
    (``JAX_COORDINATOR_ADDRESS`` set by launch/ scripts, SLURM with several tasks, or a TPU pod
    slice); returns whether it did. Single-process runs are left alone."""
    import os

    multi = (
        os.environ.get("JAX_COORDINATOR_ADDRESS")
        or int(os.environ.get("SLURM_NTASKS", "1")) > 1
        or os.environ.get("TPU_WORKER_HOSTNAMES", "").count(",") > 0
    )
    if not multi:
        return False
    jax.distributed.initialize()
    return True


# --- what a compiled program moves between devices -------------------------------------------

COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "ragged-all-to-all", "collective-permute")


class Collective(NamedTuple):
    """One collective instruction of a compiled HLO module: ``op`` (e.g. ``all-reduce``), the
    ``computation`` it sits in, its array ``shapes`` (dtype, dims) — result first, then operands —,
    ``bytes`` (the largest of them: what one device sends or receives; 0 when every replica group
    holds one device, which moves nothing), ``groups`` (the device ids of each replica group) and
    ``source`` (the JAX operation it came from, e.g. ``.../layers/moe/experts/shard_map/psum``)."""

    op: str
    computation: str
    shapes: tuple[tuple[str, tuple[int, ...]], ...]
    bytes: int
    groups: tuple[tuple[int, ...], ...]
    source: str


def _replica_groups(attrs: str) -> tuple[tuple[int, ...], ...]:
    """``replica_groups={{0,1},{2,3}}`` or the iota form ``[2,2]<=[2,2]T(1,0)`` -> groups."""
    m = re.search(r"replica_groups=\{(\{[\d,{} ]*\})\}", attrs)
    if m:
        return tuple(tuple(int(v) for v in g.split(",") if v.strip()) for g in re.findall(r"\{([\d, ]*)\}", m.group(1)))
    m = re.search(r"replica_groups=\[([\d,]+)\]<=\[([\d,]+)\](?:T\(([\d,]+)\))?", attrs)
    if m:
        shape = [int(v) for v in m.group(1).split(",")]
        ids = np.arange(int(np.prod([int(v) for v in m.group(2).split(",")]))).reshape(
            [int(v) for v in m.group(2).split(",")]
        )
        if m.group(3):
            ids = ids.transpose([int(v) for v in m.group(3).split(",")])
        return tuple(tuple(int(v) for v in g) for g in ids.reshape(shape[0], -1))
    m = re.search(r"source_target_pairs=\{(.*?)\}\}", attrs)
    if m:  # collective-permute: each pair is a group of two
        return tuple(tuple(int(v) for v in p.split(",")) for p in re.findall(r"\{(\d+,\d+)", attrs))
    return ()


_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2}
_DTYPE_BYTES.update({"s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8})


def _shapes(text: str) -> list[tuple[str, tuple[int, ...]]]:
    return [
        (dt, tuple(int(d) for d in dims.split(",") if d))
        for dt, dims in re.findall(r"\b(pred|[suf]\d+|bf16|f8e4m3fn|f8e5m2)\[([\d,]*)\]", text)
    ]


def hlo_collectives(hlo_text: str) -> tuple[list[Collective], dict[str, set[str]]]:
    """Every collective of a compiled module's HLO text (``jitted.lower(...).compile().as_text()``)
    and, per outermost ``while`` loop (a scan over layers is one), the names of the computations
    its body runs (itself and every computation it calls, nested loops included)."""
    comps: dict[str, list[str]] = {}
    name = None
    for line in hlo_text.splitlines():
        head = re.match(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$", line)
        if head:
            name = head.group(1)
            comps[name] = []
        elif name is not None and line.strip() and line.strip() != "}":
            comps[name].append(line)
    calls: dict[str, set[str]] = {}
    for c, ls in comps.items():
        text = "\n".join(ls)
        calls[c] = set(re.findall(r"(?:body|condition|to_apply|calls|computation)=%?([\w.\-]+)", text))
        for branches in re.findall(r"(?:branch_computations|called_computations)=\{([^}]*)\}", text):
            calls[c] |= {b.strip().lstrip("%") for b in branches.split(",")}

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            c = todo.pop()
            if c not in seen and c in comps:
                seen.add(c)
                todo.extend(calls[c])
        return seen

    bodies = [b for ls in comps.values() for b in re.findall(r"\bwhile\(.*?body=%?([\w.\-]+)", "\n".join(ls))]
    loops = {b: reach(b) for b in bodies}
    loops = {b: r for b, r in loops.items() if not any(b in r2 for b2, r2 in loops.items() if b2 != b)}

    instr = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*?)\s([a-z][\w\-]*)\((.*)$")
    shape_of: dict[str, list] = {}
    parsed = []
    for c, ls in comps.items():
        for line in ls:
            m = instr.match(line)
            if m:
                shape_of[m.group(1)] = _shapes(m.group(2))
                parsed.append((c, m))
    found = []
    pattern = re.compile(r"(" + "|".join(COLLECTIVES) + r")(?:-start)?$")
    for c, m in parsed:
        op = pattern.match(m.group(3))
        if not op:
            continue
        args = m.group(4).split(")")[0]
        shapes = _shapes(m.group(2)) + _shapes(args)
        for ref in re.findall(r"%?([\w.\-]+)", args):
            shapes += shape_of.get(ref, [])
        size = max((int(np.prod(d)) * _DTYPE_BYTES.get(t, 4) for t, d in shapes), default=0)
        groups = _replica_groups(m.group(4))
        if groups and all(len(g) <= 1 for g in groups):
            size = 0
        source = re.search(r'op_name="([^"]*)"', m.group(4))
        found.append(Collective(op.group(1), c, tuple(shapes), size, groups, source.group(1) if source else ""))
    return found, loops


def collective_summary(hlo_text: str, hidden: int, expert_width: int) -> dict[str, Any]:
    """What a compiled program moves between devices, per layer: over the outermost ``while``
    loops (the scans over layers; in a training step the forward and the backward one), the
    bytes per iteration of all collectives (``max_loop_bytes``) and of the MoE block's
    (``max_moe_loop_bytes``), and every collective carrying an expert weight or its gradient
    (an array ending in ``[hidden, expert_width]`` or ``[expert_width, hidden]``) with its
    shapes, replica groups and whether it sits inside a layer loop (``expert_weight_collectives``)."""
    cols, loops = hlo_collectives(hlo_text)
    dims = {(hidden, expert_width), (expert_width, hidden)}
    expert = [c for c in cols if c.bytes and any(len(d) >= 2 and d[-2:] in dims for _, d in c.shapes)]

    def per_loop(keep) -> list[int]:
        return sorted(sum(c.bytes for c in cols if c.computation in comps and keep(c)) for comps in loops.values())

    every, moe = per_loop(lambda c: True), per_loop(lambda c: "/moe/" in c.source)

    def in_loop(c: Collective) -> bool:
        return any(c.computation in comps for comps in loops.values())

    return {
        "collectives": len(cols),
        "loop_bytes": every,
        "max_loop_bytes": max(every, default=0),
        "moe_loop_bytes": moe,
        "max_moe_loop_bytes": max(moe, default=0),
        "expert_weight_collectives": [
            [c.op, [list(d) for _, d in c.shapes], [list(g) for g in c.groups], in_loop(c)] for c in expert
        ],
        "expert_weight_bytes": sum(c.bytes for c in expert),
    }
