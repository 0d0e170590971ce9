"""Frozen/trainable partition for subnetwork training.

The trainable pytree holds only the K selected experts, as fp32 master copies:

    {run_name: {"slots": int32 [n, E]   (-1 = frozen, else row in the arrays below),
                "gate_proj": [K_run, H, I], "up_proj": [K_run, H, I], "down_proj": [K_run, I, H]}}

``slots`` is bookkeeping (never differentiated or optimised): :func:`split_trainable` separates
it. The model substitutes the trainable rows for the selected experts and stops gradients to
every base parameter, so gradients and optimiser state exist for the K experts only; the base
params never pass through the optimiser and stay bitwise unchanged.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rise_jax.models.config import ModelConfig
from rise_jax.models.transformer import layer_runs, moe_layer_location

PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


def expert_slots(cfg: ModelConfig, experts: list[tuple[int, int]]) -> dict[str, np.ndarray]:
    """Per run with at least one selected expert: ``slots [n, E]`` (row index or -1)."""
    slots: dict[str, np.ndarray] = {}
    counters: dict[str, int] = {}
    for layer, expert in sorted(set(experts)):
        if not 0 <= expert < cfg.num_experts:
            raise ValueError(f"expert index {expert} out of range [0, {cfg.num_experts})")
        run, idx = moe_layer_location(cfg, layer)
        if run not in slots:
            length = next(r.length for r in layer_runs(cfg) if r.name == run)
            slots[run] = np.full((length, cfg.num_experts), -1, np.int32)
            counters[run] = 0
        slots[run][idx, expert] = counters[run]
        counters[run] += 1
    return slots


def selection_experts(selection: dict[str, Any]) -> list[tuple[int, int]]:
    return [(int(e["layer"]), int(e["expert"])) for e in selection["experts"]]


def init_trainable(params: dict[str, Any], cfg: ModelConfig, experts: list[tuple[int, int]]) -> dict[str, Any]:
    """fp32 copies of the selected experts' weights, gathered from ``params``."""
    out: dict[str, Any] = {}
    for run, slots in expert_slots(cfg, experts).items():
        li, ei = np.nonzero(slots >= 0)
        order = np.argsort(slots[li, ei])
        li, ei = li[order], ei[order]
        entry: dict[str, Any] = {"slots": jnp.asarray(slots)}
        for proj in PROJECTIONS:
            entry[proj] = params[run]["moe"]["experts"][proj][li, ei].astype(jnp.float32)
        out[run] = entry
    return out


def split_trainable(trainable: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(weights to optimise, slot tables)."""
    weights = {run: {p: v[p] for p in PROJECTIONS} for run, v in trainable.items()}
    slots = {run: v["slots"] for run, v in trainable.items()}
    return weights, slots


def join_trainable(weights: dict[str, Any], slots: dict[str, Any]) -> dict[str, Any]:
    return {run: {"slots": slots[run], **weights[run]} for run in weights}


def merge_experts(params: dict[str, Any], trainable: dict[str, Any]) -> dict[str, Any]:
    """Base params with the trained experts written back (cast to the base dtype)."""
    merged = jax.tree_util.tree_map(lambda x: x, params)  # new containers, same leaves
    for run, entry in trainable.items():
        slots = np.asarray(entry["slots"])
        li, ei = np.nonzero(slots >= 0)
        rows = slots[li, ei]
        experts = dict(merged[run]["moe"]["experts"])
        for proj in PROJECTIONS:
            base = experts[proj]
            experts[proj] = base.at[li, ei].set(jnp.asarray(entry[proj])[rows].astype(base.dtype))
        merged[run] = {**merged[run], "moe": {**merged[run]["moe"], "experts": experts}}
    return merged


def count_trainable(weights: dict[str, Any]) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(weights)))
