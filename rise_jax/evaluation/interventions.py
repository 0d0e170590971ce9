"""Interventions on the routers: pruning and steering experts, and finding which experts to touch.

Each builder is a pure function returning a :class:`~rise_jax.models.routers.RouterEdit` (or a new
one from an old one, so edits compose). Pass the edit to :func:`rise_jax.forward` or the
generation functions; the parameters are never modified, so any params (base, trained, merged)
can be combined with any edit.

* :func:`prune` — ``z_i <- -inf`` before top-k: the expert is never selected, the next-best take over.
* :func:`steer` — soft ``z_i <- z_i + λ·std(z)``, hard ``z_i <- max(z) + ε`` (seeded tie-breaking
  jitter) or ``deactivate`` ``z_i <- min(z) − ε`` on chosen experts in a layer range (DESIGN §3;
  Bandarkar et al. §6); :func:`steer_pairs` the same on per-layer expert sets.
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

STEER_MODES = ("soft", "hard", "deactivate")
HARD_JITTER_STD = 1e-6  # the study's ε ~ N(0, 1e-6), drawn once per (layer, expert) from steer's seed


class InterventionError(RiseError, ValueError):
    """An intervention naming a layer or expert the model does not have, or a bad mode."""


def no_edit(cfg: ModelConfig) -> RouterEdit:
    """The identity edit for ``cfg``'s MoE layers."""
    shape = (cfg.num_moe_layers, cfg.num_experts)
    return RouterEdit(
        soft=jnp.zeros(shape, jnp.float32),
        hard=jnp.zeros(shape, bool),
        prune=jnp.zeros(shape, bool),
        deactivate=jnp.zeros(shape, bool),
        hard_jitter=jnp.zeros(shape, jnp.float32),
    )


def _check(cfg: ModelConfig, layer: int, expert: int) -> None:
    if not 0 <= layer < cfg.num_moe_layers:
        raise InterventionError(f"MoE layer {layer} out of range [0, {cfg.num_moe_layers})")
    if not 0 <= expert < cfg.num_experts:
        raise InterventionError(f"expert {expert} out of range [0, {cfg.num_experts}) in layer {layer}")


def _as_numpy(edit: RouterEdit) -> dict[str, np.ndarray]:
    shape = np.shape(edit.soft)
    return {
        "soft": np.array(edit.soft),
        "hard": np.array(edit.hard),
        "prune": np.array(edit.prune),
        "deactivate": np.zeros(shape, bool) if edit.deactivate is None else np.array(edit.deactivate),
        "hard_jitter": np.zeros(shape, np.float32) if edit.hard_jitter is None else np.array(edit.hard_jitter),
    }


def _from_numpy(arrays: dict[str, np.ndarray]) -> RouterEdit:
    return RouterEdit(
        soft=jnp.asarray(arrays["soft"], jnp.float32),
        hard=jnp.asarray(arrays["hard"], bool),
        prune=jnp.asarray(arrays["prune"], bool),
        deactivate=jnp.asarray(arrays["deactivate"], bool),
        hard_jitter=jnp.asarray(arrays["hard_jitter"], jnp.float32),
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
    seed: int = 0,
) -> RouterEdit:
    """Steer ``experts`` in each MoE layer of ``layers``: soft with ``λ = strength``, hard (ties
    between hard-steered experts broken by an ``N(0, 1e-6)`` jitter drawn from ``seed``) or
    deactivate."""
    if mode not in STEER_MODES:
        raise InterventionError(f"unknown steering mode {mode!r}; choose one of {STEER_MODES}")
    arrays = _as_numpy(edit if edit is not None else no_edit(cfg))
    layers = list(layers)
    if mode == "hard" and len(set(experts)) > cfg.top_k:
        raise InterventionError(f"hard steering of {len(set(experts))} experts exceeds top-k = {cfg.top_k}")
    if mode == "deactivate" and len(set(experts)) > cfg.num_experts - cfg.top_k:
        raise InterventionError(
            f"deactivating {len(set(experts))} experts leaves fewer than top-k = {cfg.top_k} of {cfg.num_experts}"
        )
    jitter = np.random.default_rng(seed).normal(0.0, HARD_JITTER_STD, np.shape(arrays["soft"])).astype(np.float32)
    for layer in layers:
        for expert in experts:
            _check(cfg, int(layer), int(expert))
            if mode == "soft":
                arrays["soft"][layer, expert] += strength
            elif mode == "hard":
                arrays["hard"][layer, expert] = True
                arrays["hard_jitter"][layer, expert] = jitter[layer, expert]
            else:
                arrays["deactivate"][layer, expert] = True
    return _from_numpy(arrays)


def steer_pairs(
    cfg: ModelConfig,
    pairs: Iterable[tuple[int, int]],
    mode: str = "soft",
    strength: float = 1.0,
    edit: RouterEdit | None = None,
    seed: int = 0,
) -> RouterEdit:
    """Steer individual ``(moe_layer, expert)`` pairs — a different expert set per layer, e.g.
    from :func:`experts_by_frequency_difference` or the task-experts stage."""
    by_layer: dict[int, list[int]] = {}
    for layer, expert in pairs:
        by_layer.setdefault(int(layer), []).append(int(expert))
    for layer, experts in sorted(by_layer.items()):
        edit = steer(cfg, experts, [layer], mode, strength, edit, seed)
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


def random_pairs(cfg: ModelConfig, count_per_layer: dict[int, int], seed: int = 0) -> list[tuple[int, int]]:
    """The random-experts ablation: in each layer as many distinct random experts as the real
    steering set has there (seeded)."""
    rng = np.random.default_rng(seed)
    out = []
    for layer, n in sorted(count_per_layer.items()):
        for expert in sorted(rng.choice(cfg.num_experts, size=n, replace=False).tolist()):
            out.append((int(layer), int(expert)))
    return out
