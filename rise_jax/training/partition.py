"""Frozen/trainable partition helpers the training methods (:mod:`rise_jax.training.methods`)
share: which (layer, expert) uses which trainable row (:func:`expert_slots`, owner-grouped for
expert parallelism), path-rule groups of the params (:func:`select_extra`) and their overlay on
the base (:func:`overlay`). The base params never pass through the optimiser and stay bitwise
unchanged; only a method's own ``weights`` are differentiated.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rise_jax.models.config import ModelConfig
from rise_jax.models.layout import layer_runs, moe_layer_location
from rise_jax.models.quantized import QuantizedArray


def path_name(keys: tuple) -> str:
    """A pytree key path as the ``/``-joined name the path rules match (``layers/moe/router``)."""
    return "/".join(str(getattr(k, "key", k)) for k in keys)


def select_extra(params: dict[str, Any], patterns: list[str]) -> dict[str, Any]:
    """fp32 copies of every leaf whose ``/``-joined path matches one of the regex ``patterns``
    (``re.search``), as a subtree shaped like ``params``. Expert weights are chosen by the
    selection, never by a rule; a pattern that matches nothing is an error."""
    import re

    out: dict[str, Any] = {}
    hits = dict.fromkeys(patterns, 0)
    for keys, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        path = path_name(keys)
        matched = [p for p in patterns if re.search(p, path)]
        if not matched:
            continue
        if "moe/experts" in path:
            raise ValueError(
                f"extra trainable pattern(s) {matched} match expert weights ({path}); experts come from the selection"
            )
        for p in matched:
            hits[p] += 1
        node = out
        names = path.split("/")
        for name in names[:-1]:
            node = node.setdefault(name, {})
        node[names[-1]] = jnp.asarray(leaf, jnp.float32)
    missing = [p for p, n in hits.items() if n == 0]
    if missing:
        raise ValueError(
            f"extra trainable pattern(s) {missing} match no parameter; paths look like layers/moe/router, layers/attn/q_proj/kernel"
        )
    return out


def overlay(params: dict[str, Any], extra: dict[str, Any] | None) -> dict[str, Any]:
    """``params`` with the leaves present in ``extra`` replaced (cast to the base dtype)."""
    if not extra:
        return params
    out = dict(params)
    for key, sub in extra.items():
        if isinstance(sub, dict):
            out[key] = overlay(params[key], sub)
        else:  # a quantized base kernel is replaced by full-precision values in its compute dtype
            out[key] = jnp.asarray(sub).astype(params[key].dtype)
    return out


def expert_slots(cfg: ModelConfig, experts: list[tuple[int, int]], shards: int = 1) -> dict[str, np.ndarray]:
    """Per run with at least one selected expert: ``slots [n, E]`` (row index or -1).

    Rows are numbered in (layer, expert) order. With ``shards = m > 1`` (expert parallelism over
    ``m`` devices, each owning ``E / m`` consecutive experts) they are grouped by owner instead:
    the copies of device ``i``'s experts are rows ``[i·R, (i+1)·R)`` (``R`` = the most any device
    owns; shorter groups end in unused rows), so splitting the rows into ``m`` equal blocks keeps
    every trainable expert on the device that computes it."""
    if shards < 1 or cfg.num_experts % shards:
        raise ValueError(f"expert shards must divide the {cfg.num_experts} experts, got {shards}")
    per_device = cfg.num_experts // shards
    chosen: dict[str, list[tuple[int, int]]] = {}
    for layer, expert in sorted(set(experts)):
        if not 0 <= expert < cfg.num_experts:
            raise ValueError(f"expert index {expert} out of range [0, {cfg.num_experts})")
        run, idx = moe_layer_location(cfg, layer)
        chosen.setdefault(run, []).append((idx, expert))
    slots: dict[str, np.ndarray] = {}
    for run, pairs in chosen.items():
        length = next(r.length for r in layer_runs(cfg) if r.name == run)
        slots[run] = np.full((length, cfg.num_experts), -1, np.int32)
        owners = [expert // per_device for _, expert in pairs]
        rows = max(owners.count(o) for o in set(owners)) if shards > 1 else len(pairs)
        used = [0] * shards
        for (idx, expert), owner in zip(pairs, owners, strict=True):
            slots[run][idx, expert] = owner * rows + used[owner]
            used[owner] += 1
    return slots


def slot_rows(slots: np.ndarray, shards: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(layer, expert, used) per trainable row of a slot table made by :func:`expert_slots` with
    ``shards``: rows no expert uses (the ends of an owner-grouped layout's shorter groups) have
    ``used`` False and layer = expert = 0."""
    slots = np.asarray(slots)
    li, ei = np.nonzero(slots >= 0)
    owners = ei // (slots.shape[1] // shards)
    n = shards * int(np.bincount(owners, minlength=shards).max()) if len(ei) else 0
    layer, expert, used = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, bool)
    layer[slots[li, ei]], expert[slots[li, ei]], used[slots[li, ei]] = li, ei, True
    return layer, expert, used


def selection_experts(selection: dict[str, Any]) -> list[tuple[int, int]]:
    return [(int(e["layer"]), int(e["expert"])) for e in selection["experts"]]


def as_float32(w: Any) -> jax.Array:
    """A (possibly quantized) weight block in fp32."""
    return w.astype(jnp.float32) if isinstance(w, QuantizedArray) else jnp.asarray(w, jnp.float32)


def count_trainable(tree: Any) -> int:
    """Values in every leaf of ``tree`` (weights, gradients, optimiser moments)."""
    return int(sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree)))
