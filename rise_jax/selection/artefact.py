"""``selection.json``: the chosen expert subnetwork, readable without rise_jax.

Keys: ``method``, ``params`` (K, ratios, alpha, zones_used, seed, p ...), ``model``
{model_type, num_moe_layers, num_experts, top_k}, ``target_language``, ``languages``,
``num_selected``, ``zones`` {``boundaries``: [L1, L2], per zone {``layers``: [first, last] or null,
``budget``, ``count``}}, ``experts``: [{``layer`` (MoE-layer index), ``expert``, ``zone``,
``scores``}] sorted by (layer, expert), ``interference``: {language: ρ_λ} for every non-target
language (expected selected-expert activations per token), ``stats``: the statistics it came from.
"""

from __future__ import annotations

import json
from typing import Any

from rise_jax.io_utils import write_json_atomic
from rise_jax.models.config import ModelConfig
from rise_jax.selection.algorithms import Selected, SelectionError
from rise_jax.zones import DEFAULT_RATIOS, ZONES, zone_boundaries, zone_ranges


def build_artefact(
    method: str,
    params: dict[str, Any],
    model: dict[str, Any],
    target: str,
    languages: list[str],
    selection: list[Selected],
    interference: dict[str, float],
    budgets: dict[str, int] | None = None,
    stats_path: str = "",
    zone_ratios: tuple[float, float] = DEFAULT_RATIOS,
) -> dict[str, Any]:
    num_layers = int(model["num_moe_layers"])
    ranges = zone_ranges(num_layers, zone_ratios)
    zones: dict[str, Any] = {"boundaries": list(zone_boundaries(num_layers, zone_ratios))}
    for z in ZONES:
        lo, hi = ranges[z]
        zones[z] = {
            "layers": [lo, hi - 1] if hi > lo else None,
            "budget": None if budgets is None else int(budgets[z]),
            "count": sum(1 for s in selection if s.zone == z),
        }
    return {
        "method": method,
        "params": params,
        "model": {k: model[k] for k in ("model_type", "num_moe_layers", "num_experts", "top_k")},
        "target_language": target,
        "languages": languages,
        "num_selected": len(selection),
        "zones": zones,
        "experts": [{"layer": s.layer, "expert": s.expert, "zone": s.zone, "scores": s.scores} for s in selection],
        "interference": interference,
        "stats": stats_path,
    }


def save_selection(path: str, artefact: dict[str, Any]) -> str:
    return write_json_atomic(path, artefact)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_selection(path: str, sel: Any) -> dict[str, Any]:
    """``sel`` (the JSON read from ``path``) is a selection artefact: every key the stages read is
    there with its type, and it agrees with itself (``num_selected`` = the experts listed, zone
    counts, no expert twice). Errors name the file and the key."""
    if not isinstance(sel, dict):
        raise SelectionError(f"{path}: not a selection artefact (expected a JSON object)")
    for key in ("model", "experts", "target_language"):
        if key not in sel:
            raise SelectionError(f"{path}: not a selection artefact (no {key!r})")
    model, experts = sel["model"], sel["experts"]
    if not isinstance(model, dict):
        raise SelectionError(f"{path}: 'model' is not an object")
    for key in ("num_moe_layers", "num_experts", "top_k"):
        if not _whole(model.get(key)) or model[key] < 1:
            raise SelectionError(f"{path}: model.{key} = {model.get(key)!r}: expected a whole number >= 1")
    if not isinstance(sel["target_language"], str) or not sel["target_language"]:
        raise SelectionError(f"{path}: target_language = {sel['target_language']!r}: expected a language code")
    if not isinstance(experts, list):
        raise SelectionError(f"{path}: 'experts' is not a list")
    seen = set()
    for i, e in enumerate(experts):
        if not isinstance(e, dict) or not all(_whole(e.get(k)) for k in ("layer", "expert")):
            raise SelectionError(f"{path}: experts[{i}] = {e!r}: expected {{'layer': int, 'expert': int, ...}}")
        if (e["layer"], e["expert"]) in seen:
            raise SelectionError(f"{path}: experts[{i}]: (layer {e['layer']}, expert {e['expert']}) is listed twice")
        seen.add((e["layer"], e["expert"]))
    if "num_selected" in sel and sel["num_selected"] != len(experts):
        raise SelectionError(
            f"{path}: num_selected = {sel['num_selected']!r}, but 'experts' lists {len(experts)}: the file is "
            "inconsistent (rerun the select stage)"
        )
    zones = sel.get("zones")
    if isinstance(zones, dict):
        for z in ZONES:
            if isinstance(zones.get(z), dict) and "count" in zones[z]:
                listed = sum(1 for e in experts if e.get("zone") == z)
                if zones[z]["count"] != listed:
                    raise SelectionError(
                        f"{path}: zones.{z}.count = {zones[z]['count']!r}, but 'experts' lists {listed} in zone {z}"
                    )
    return sel


def load_selection(path: str, cfg: ModelConfig | None = None) -> dict[str, Any]:
    """Read ``selection.json``; with ``cfg``, refuse a selection made for another model shape."""
    try:
        with open(path, encoding="utf-8") as fh:
            sel = json.load(fh)
    except FileNotFoundError as err:
        raise SelectionError(f"{path}: missing (run the select stage first)") from err
    except (OSError, UnicodeDecodeError, RecursionError, ValueError) as err:  # JSONDecodeError is a ValueError
        raise SelectionError(f"{path}: unreadable selection: {err}") from err
    check_selection(path, sel)
    if cfg is not None:
        m = sel["model"]
        have = (m["num_moe_layers"], m["num_experts"], m["top_k"])
        want = (cfg.num_moe_layers, cfg.num_experts, cfg.top_k)
        if have != want:
            raise SelectionError(
                f"{path}: selection made for (MoE layers, experts, top-k) = {tuple(have)}, but the model has {want}"
            )
        for e in sel["experts"]:
            if not (0 <= e["layer"] < cfg.num_moe_layers and 0 <= e["expert"] < cfg.num_experts):
                raise SelectionError(f"{path}: expert (layer {e['layer']}, expert {e['expert']}) is out of range")
    return sel
