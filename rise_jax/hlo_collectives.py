"""What a compiled program moves between devices: the collectives of its HLO text.

Reads the text of ``jitted.lower(...).compile().as_text()``: every collective instruction with its
array shapes, bytes and replica groups (:func:`hlo_collectives`), and per layer loop what they
add up to (:func:`collective_summary`). The sharded checks (``tests/sharded_hlo_check.py``) and
``bench/sharding.py`` use it to show that expert weights never cross devices.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import numpy as np

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
