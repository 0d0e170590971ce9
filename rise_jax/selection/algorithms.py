"""Expert selection: RISE Algorithm 1 and the baselines, on activation statistics.

Inputs are the per-language frequencies ``a[λ, l, i]`` (and, for ESFT-Gate, the gate scores);
outputs are ``(layer, expert)`` pairs sorted by (layer, expert). Formulas (paper / DESIGN §3):

* Zones (:mod:`rise_jax.zones`): ``L1 = round(ρs L)``, ``L2 = round((ρs + ρm) L)``, by default
  ``round(0.375 L)`` / ``round(0.625 L)``; shallow ``[0, L1)``, middle ``[L1, L2)``, deep ``[L2, L)``.
* Specificity ``S = a[λ*] / ā`` (ā = mean over languages, target included; 0 -> 1e-8).
* Overlap ``O = 1 / (1 + CV)``, ``CV = σ_λ / μ_λ`` (population std; μ = 0 -> 1e-8).
* Composite scores ``Spec = S (1 + α a[λ*])``, ``Ovlp = O (1 + α ā)``.
* Budgets ``Ks = ⌊K ρs⌋``, ``Km = ⌊K ρm⌋``, ``Kd = K − Ks − Km``; a zone whose pool is smaller
  than its budget spills the excess to the zone with most room left.
* Algorithm 1: shallow by Spec, middle by Ovlp, deep by Spec, each the top ``K_zone`` of all its
  (layer, expert) candidates; ties -> lower layer, then lower expert. Candidates are ranked by
  scores computed in float32, as the reference implementation computes them, so values equal in
  real arithmetic tie (float64 round-off would order some of them arbitrarily); the recorded
  scores are the float64 ones.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from rise_jax.errors import RiseError
from rise_jax.zones import DEFAULT_RATIOS, ZONES, zone_of, zone_ranges

EPS = 1e-8


class SelectionError(RiseError, ValueError):
    """Selection inputs that cannot give a valid subnetwork; the message says which value."""


@dataclasses.dataclass(frozen=True)
class Selected:
    layer: int
    expert: int
    zone: str
    scores: dict[str, float]


def rise_scores(freq: np.ndarray, target: int, alpha: float = 10.0) -> dict[str, np.ndarray]:
    """Every score of Algorithm 1, each ``[L, E]``, in the dtype of ``freq``."""
    if freq.shape[0] < 2:
        raise SelectionError(
            f"RISE needs statistics for at least 2 languages (specificity and overlap are undefined for "
            f"{freq.shape[0]})"
        )
    a_t = freq[target]
    mean = freq.mean(axis=0)
    std = freq.std(axis=0)  # population std (ddof = 0)
    specificity = a_t / np.where(mean == 0, EPS, mean)
    cv = std / np.where(mean == 0, EPS, mean)
    overlap = 1.0 / (1.0 + cv)
    return {
        "freq_target": a_t,
        "freq_mean": mean,
        "specificity": specificity,
        "overlap": overlap,
        "spec": specificity * (1 + alpha * a_t),
        "ovlp": overlap * (1 + alpha * mean),
    }


def check_budget_ratios(ratios: tuple[float, float, float]) -> None:
    """Budget ratios (shallow, middle, deep): three fractions in [0, 1] summing to at most 1."""
    if len(ratios) != 3:
        raise SelectionError(f"ratios must be (shallow, middle, deep), got {ratios}")
    for name, r in zip(ZONES, ratios, strict=True):
        if not 0.0 <= r <= 1.0:
            raise SelectionError(f"ratio for {name} = {r} is outside [0, 1]")
    if sum(ratios) > 1.0 + 1e-9:
        raise SelectionError(f"ratios {tuple(ratios)} sum to {sum(ratios):.6g} > 1")


def zone_budgets(
    k: int,
    ratios: tuple[float, float, float],
    num_layers: int,
    num_experts: int,
    zones_used: tuple[str, ...] = ZONES,
    zone_ratios: tuple[float, float] = DEFAULT_RATIOS,
) -> dict[str, int]:
    """Split ``K`` over the zones: floors of ``K ρ`` for each used zone but the last, which takes
    the remainder; then overflow beyond a zone's pool goes to the zone with most room left
    (ties: shallow, middle, deep order). Unused zones (ablations) get nothing."""
    check_budget_ratios(ratios)
    unknown = [z for z in zones_used if z not in ZONES]
    if unknown or not zones_used:
        raise SelectionError(f"zones_used must be a non-empty subset of {ZONES}, got {zones_used}")
    ranges = zone_ranges(num_layers, zone_ratios)
    capacity = {z: (ranges[z][1] - ranges[z][0]) * num_experts if z in zones_used else 0 for z in ZONES}
    if k < 1:
        raise SelectionError(f"K must be >= 1, got {k}")
    if k > sum(capacity.values()):
        raise SelectionError(
            f"K = {k} exceeds the pool of {sum(capacity.values())} experts "
            f"({num_layers} layers x {num_experts} experts{'' if zones_used == ZONES else ' in ' + '+'.join(zones_used)})"
        )
    used = [z for z in ZONES if z in zones_used]
    r = {z: ratios[ZONES.index(z)] for z in used}
    total = sum(r.values())
    if len(used) < 3:  # ablation: renormalise the remaining ratios (equal split if all zero)
        r = {z: (r[z] / total if total > 0 else 1 / len(used)) for z in used}
    budget = {z: 0 for z in ZONES}
    for z in used[:-1]:
        budget[z] = math.floor(k * r[z])
    budget[used[-1]] = k - sum(budget.values())
    while True:
        over = [z for z in ZONES if budget[z] > capacity[z]]
        if not over:
            return budget
        z = over[0]
        excess = budget[z] - capacity[z]
        budget[z] = capacity[z]
        room = {y: capacity[y] - budget[y] for y in ZONES if y != z}
        dest = max(room, key=lambda y: (room[y], -ZONES.index(y)))
        budget[dest] += excess


def _top_k_cells(score: np.ndarray, layers: range, k: int) -> list[tuple[int, int]]:
    """The ``k`` best (layer, expert) cells in ``layers``; ties -> lower layer, lower expert."""
    if k == 0:
        return []
    cells = [(layer, e) for layer in layers for e in range(score.shape[1])]
    values = np.array([score[c] for c in cells])
    order = np.lexsort((np.arange(len(cells)), -values))  # stable: cells are in (layer, expert) order
    return [cells[i] for i in order[:k]]


def rise_select(
    freq: np.ndarray,
    target: int,
    k: int,
    ratios: tuple[float, float, float],
    alpha: float = 10.0,
    zones_used: tuple[str, ...] = ZONES,
    zone_ratios: tuple[float, float] = DEFAULT_RATIOS,
) -> tuple[list[Selected], dict[str, int]]:
    """RISE Algorithm 1 -> (selection sorted by (layer, expert), per-zone budgets)."""
    num_layers, num_experts = freq.shape[1:]
    budgets = zone_budgets(k, ratios, num_layers, num_experts, zones_used, zone_ratios)
    scores = rise_scores(np.asarray(freq, np.float64), target, alpha)
    ranking = rise_scores(np.asarray(freq, np.float32), target, alpha)  # the reference's arithmetic
    ranges = zone_ranges(num_layers, zone_ratios)
    chosen: list[Selected] = []
    for zone in ZONES:
        key = "ovlp" if zone == "middle" else "spec"
        for cell in _top_k_cells(ranking[key], range(*ranges[zone]), budgets[zone]):
            chosen.append(Selected(cell[0], cell[1], zone, {n: float(v[cell]) for n, v in scores.items()}))
    return sorted(chosen, key=lambda s: (s.layer, s.expert)), budgets


def random_select(
    num_layers: int, num_experts: int, k: int, seed: int, zone_ratios: tuple[float, float] = DEFAULT_RATIOS
) -> list[Selected]:
    """K experts uniformly from all L·E (seeded ``numpy`` generator)."""
    if not 1 <= k <= num_layers * num_experts:
        raise SelectionError(f"K = {k} must be in [1, {num_layers * num_experts}] (the pool of L x E experts)")
    flat = np.random.default_rng(seed).choice(num_layers * num_experts, size=k, replace=False)
    cells = sorted((int(f) // num_experts, int(f) % num_experts) for f in flat)
    return [Selected(layer, e, zone_of(layer, num_layers, zone_ratios), {}) for layer, e in cells]


def topk_select(freq_target: np.ndarray, k: int, zone_ratios: tuple[float, float] = DEFAULT_RATIOS) -> list[Selected]:
    """The K largest ``a[λ*, l, i]`` over all layers."""
    num_layers, num_experts = freq_target.shape
    if not 1 <= k <= num_layers * num_experts:
        raise SelectionError(f"K = {k} must be in [1, {num_layers * num_experts}] (the pool of L x E experts)")
    cells = _top_k_cells(freq_target, range(num_layers), k)
    return [
        Selected(layer, e, zone_of(layer, num_layers, zone_ratios), {"freq_target": float(freq_target[layer, e])})
        for layer, e in sorted(cells)
    ]


def esft_select(
    score: np.ndarray, p: float, score_name: str, zone_ratios: tuple[float, float] = DEFAULT_RATIOS
) -> list[Selected]:
    """ESFT (per layer): sort experts by score, keep the shortest prefix whose cumulative score
    reaches ``p`` (the expert that crosses ``p`` is included)."""
    if not 0.0 < p <= 1.0:
        raise SelectionError(f"ESFT threshold p = {p} must be in (0, 1]")
    num_layers = score.shape[0]
    out = []
    for layer in range(num_layers):
        row = score[layer]
        order = np.lexsort((np.arange(row.size), -row))
        cum = np.cumsum(row[order])
        n = int(np.searchsorted(cum, p - 1e-12, side="left")) + 1
        n = min(n, row.size)
        for e in sorted(order[:n]):
            out.append(Selected(layer, int(e), zone_of(layer, num_layers, zone_ratios), {score_name: float(row[e])}))
    return out


def interference_mass(freq: np.ndarray, selection: list[Selected]) -> np.ndarray:
    """``ρ_λ = Σ_l Σ_{i ∈ S_l} a[λ, l, i]`` for every language λ: expected selected-expert
    activations per token."""
    if not selection:
        return np.zeros(freq.shape[0])
    layers = np.array([s.layer for s in selection])
    experts = np.array([s.expert for s in selection])
    return freq[:, layers, experts].sum(axis=1)
