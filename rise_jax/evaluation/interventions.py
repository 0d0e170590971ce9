"""Interventions on the routers: pruning and steering experts, and finding which experts to touch.

Each builder is a pure function returning a :class:`~rise_jax.models.routers.RouterEdit` (or a new
one from an old one, so edits compose). Pass the edit to :func:`rise_jax.forward` or the
generation functions; the parameters are never modified, so any params (base, trained, merged)
can be combined with any edit.

* :func:`prune` — ``z_i <- -inf`` before top-k: the expert is never selected, the next-best take over.
* :func:`steer` — soft ``z_i <- z_i + λ·std(z)`` or hard ``z_i <- max(z) + ε`` on chosen experts in
  a layer range (DESIGN §3).
* :func:`experts_by_frequency_difference` — task or language experts: ``Δ[l, i] = a[l, i] -
  b[l, i] > τ`` between two activation-frequency tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from rise_jax.errors import RiseError
from rise_jax.models.config import ModelConfig
from rise_jax.models.routers import RouterEdit

STEER_MODES = ("soft", "hard")


class InterventionError(RiseError, ValueError):
    """An intervention naming a layer or expert the model does not have, or a bad mode."""


def no_edit(cfg: ModelConfig) -> RouterEdit:
    """The identity edit for ``cfg``'s MoE layers."""
    shape = (cfg.num_moe_layers, cfg.num_experts)
    return RouterEdit(soft=jnp.zeros(shape, jnp.float32), hard=jnp.zeros(shape, bool), prune=jnp.zeros(shape, bool))


def _check(cfg: ModelConfig, layer: int, expert: int) -> None:
    if not 0 <= layer < cfg.num_moe_layers:
        raise InterventionError(f"MoE layer {layer} out of range [0, {cfg.num_moe_layers})")
    if not 0 <= expert < cfg.num_experts:
        raise InterventionError(f"expert {expert} out of range [0, {cfg.num_experts}) in layer {layer}")


def _as_numpy(edit: RouterEdit) -> dict[str, np.ndarray]:
    return {"soft": np.array(edit.soft), "hard": np.array(edit.hard), "prune": np.array(edit.prune)}


def _from_numpy(arrays: dict[str, np.ndarray]) -> RouterEdit:
    return RouterEdit(
        soft=jnp.asarray(arrays["soft"], jnp.float32),
        hard=jnp.asarray(arrays["hard"], bool),
        prune=jnp.asarray(arrays["prune"], bool),
    )


def prune(cfg: ModelConfig, experts: Iterable[tuple[int, int]], edit: RouterEdit | None = None) -> RouterEdit:
    """Prune ``(moe_layer, expert)`` pairs; with ``edit`` the pruning is added to it."""
    arrays = _as_numpy(edit if edit is not None else no_edit(cfg))
    for layer, expert in experts:
        _check(cfg, int(layer), int(expert))
        arrays["prune"][int(layer), int(expert)] = True
    return _from_numpy(arrays)


def prune_selection(cfg: ModelConfig, selection: dict[str, Any], edit: RouterEdit | None = None) -> RouterEdit:
    """Prune every expert of a ``selection.json`` (the pruning ablation)."""
    return prune(cfg, [(int(e["layer"]), int(e["expert"])) for e in selection["experts"]], edit)


def steer(
    cfg: ModelConfig,
    experts: Sequence[int],
    layers: Iterable[int],
    mode: str = "soft",
    strength: float = 1.0,
    edit: RouterEdit | None = None,
) -> RouterEdit:
    """Steer ``experts`` in each MoE layer of ``layers``: soft with ``λ = strength`` or hard."""
    if mode not in STEER_MODES:
        raise InterventionError(f"unknown steering mode {mode!r}; choose one of {STEER_MODES}")
    arrays = _as_numpy(edit if edit is not None else no_edit(cfg))
    layers = list(layers)
    if mode == "hard" and len(set(experts)) > cfg.top_k:
        raise InterventionError(f"hard steering of {len(set(experts))} experts exceeds top-k = {cfg.top_k}")
    for layer in layers:
        for expert in experts:
            _check(cfg, int(layer), int(expert))
            if mode == "soft":
                arrays["soft"][layer, expert] += strength
            else:
                arrays["hard"][layer, expert] = True
    return _from_numpy(arrays)


def steer_pairs(
    cfg: ModelConfig,
    pairs: Iterable[tuple[int, int]],
    mode: str = "soft",
    strength: float = 1.0,
    edit: RouterEdit | None = None,
) -> RouterEdit:
    """Steer individual ``(moe_layer, expert)`` pairs, e.g. from :func:`experts_by_frequency_difference`."""
    by_layer: dict[int, list[int]] = {}
    for layer, expert in pairs:
        by_layer.setdefault(int(layer), []).append(int(expert))
    for layer, experts in sorted(by_layer.items()):
        edit = steer(cfg, experts, [layer], mode, strength, edit)
    return edit if edit is not None else no_edit(cfg)


def experts_by_frequency_difference(a: np.ndarray, b: np.ndarray, tau: float) -> list[tuple[int, int]]:
    """``(layer, expert)`` with ``a[l, i] - b[l, i] > tau``, sorted by ``(layer, expert)``.

    ``a``/``b`` are activation-frequency tables ``[L, E]`` (e.g. ``RoutingStats.frequencies()[j]``
    of a task's text and of general text, or of one language and the mean of the others).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise InterventionError(f"frequency tables must both be [L, E], got {a.shape} and {b.shape}")
    layers, experts = np.nonzero(a - b > tau)
    return [(int(layer), int(e)) for layer, e in zip(layers, experts, strict=True)]
