"""Depth zones: the shallow / middle / deep split of the MoE layers (RISE, DESIGN §3).

``L1 = round(ρs · L)``, ``L2 = round((ρs + ρm) · L)`` with Python's ``round`` (half to even, as
the paper's reference code does); shallow ``[0, L1)``, middle ``[L1, L2)``, deep ``[L2, L)``.
The default ratios ``(ρs, ρm) = (0.375, 0.25)`` give ``round(0.375 L)`` / ``round(0.625 L)``:
L = 4 -> (2, 2) (empty middle), L = 12 -> (4, 8), L = 48 -> (18, 30), L = 32 -> (12, 20).
``config.select.zone_ratios`` sets them; selection, analysis, plots and the report all ask here.
"""

from __future__ import annotations

from collections.abc import Sequence

ZONES = ("shallow", "middle", "deep")
DEFAULT_RATIOS = (0.375, 0.25)
COLOURS = {"shallow": "#4C72B0", "middle": "#DD8452", "deep": "#55A868"}  # plot shading


def check_ratios(ratios: Sequence[float]) -> tuple[float, float]:
    """``(ρs, ρm)`` as floats; both in [0, 1] with a sum of at most 1, else ValueError naming them."""
    if len(ratios) != 2:
        raise ValueError(f"zone ratios must be (shallow, middle) fractions of the layers, got {tuple(ratios)}")
    rs, rm = (float(r) for r in ratios)
    if not (0.0 <= rs <= 1.0 and 0.0 <= rm <= 1.0 and rs + rm <= 1.0):
        raise ValueError(f"zone ratios {(rs, rm)} must lie in [0, 1] and sum to at most 1")
    return rs, rm


def zone_boundaries(num_layers: int, ratios: Sequence[float] = DEFAULT_RATIOS) -> tuple[int, int]:
    """``(L1, L2)``: the first middle and the first deep layer."""
    rs, rm = check_ratios(ratios)
    return round(rs * num_layers), round((rs + rm) * num_layers)


def zone_ranges(num_layers: int, ratios: Sequence[float] = DEFAULT_RATIOS) -> dict[str, tuple[int, int]]:
    """``{zone: (first, end)}`` half-open layer ranges."""
    l1, l2 = zone_boundaries(num_layers, ratios)
    return {"shallow": (0, l1), "middle": (l1, l2), "deep": (l2, num_layers)}


def zone_of_layers(num_layers: int, ratios: Sequence[float] = DEFAULT_RATIOS) -> list[str]:
    """The zone name of every layer."""
    l1, l2 = zone_boundaries(num_layers, ratios)
    return ["shallow" if i < l1 else "middle" if i < l2 else "deep" for i in range(num_layers)]


def zone_of(layer: int, num_layers: int, ratios: Sequence[float] = DEFAULT_RATIOS) -> str:
    return zone_of_layers(num_layers, ratios)[layer]


def zone_spans(num_layers: int, ratios: Sequence[float] = DEFAULT_RATIOS) -> dict[str, list[int] | None]:
    """``{zone: [first, last]}`` inclusive layer indices, None for an empty zone (artefacts' form)."""
    return {k: ([a, b - 1] if b > a else None) for k, (a, b) in zone_ranges(num_layers, ratios).items()}
