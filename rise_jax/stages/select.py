"""Stage ``select``: choose the expert subnetwork -> ``selection.json`` + ``selection_map.png``."""

from __future__ import annotations

import os
from typing import Any

import ml_collections

from rise_jax.checkpoints.hf_load import read_hf_config
from rise_jax.data.languages import get_language
from rise_jax.reporting import plots
from rise_jax.routing.stats import RoutingStats
from rise_jax.selection import algorithms as alg
from rise_jax.selection.artefact import build_artefact, save_selection, selection_path
from rise_jax.stages.common import checkpoint_path
from rise_jax.stages.stats import stats_dir

METHODS = ("rise", "random", "topk", "esft_gate", "esft_token")


def select(stats: RoutingStats, c: ml_collections.ConfigDict) -> dict[str, Any]:
    """Run ``c.method`` on ``stats``; returns the artefact dict (nothing written)."""
    if c.method not in METHODS:
        raise alg.SelectionError(f"unknown selection method {c.method!r}; choose one of {', '.join(METHODS)}")
    target = get_language(c.target).code
    t = stats.index(target)
    freq = stats.frequencies()
    num_layers, num_experts = stats.num_layers, stats.num_experts
    budgets = None
    zones_used = tuple(z.strip() for z in c.zones.split(",") if z.strip())
    params: dict[str, Any] = {"k": int(c.k)}
    if c.method == "rise":
        ratios = tuple(float(r) for r in c.ratios)
        chosen, budgets = alg.rise_select(freq, t, int(c.k), ratios, float(c.alpha), zones_used)
        params.update(ratios=list(ratios), alpha=float(c.alpha), zones_used=list(zones_used))
    elif c.method == "random":
        chosen = alg.random_select(num_layers, num_experts, int(c.k), int(c.seed))
        params.update(seed=int(c.seed))
    elif c.method == "topk":
        chosen = alg.topk_select(freq[t], int(c.k))
    elif c.method == "esft_gate":
        chosen = alg.esft_select(stats.gate_scores()[t], float(c.p_gate), "gate")
        params = {"p": float(c.p_gate)}
    else:
        chosen = alg.esft_select(freq[t] / stats.top_k, float(c.p_token), "token")
        params = {"p": float(c.p_token)}
    rho = alg.interference_mass(freq, chosen)
    interference = {lang: float(rho[i]) for i, lang in enumerate(stats.languages) if lang != target}
    return build_artefact(
        c.method,
        params,
        stats.model,
        target,
        stats.languages,
        chosen,
        interference,
        budgets,
        stats_path="routing_stats",
    )


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    stats = RoutingStats.load(stats_dir(workdir))
    cfg, _ = read_hf_config(checkpoint_path(config, workdir))
    stats.check_model(cfg, stats_dir(workdir))
    artefact = select(stats, config.select)
    save_selection(selection_path(workdir), artefact)
    cells = [(e["layer"], e["expert"], e["zone"]) for e in artefact["experts"]]
    plots.selection_map(
        stats.num_layers,
        stats.num_experts,
        cells,
        os.path.join(workdir, "selection_map.png"),
        f"{artefact['method']} selection for {artefact['target_language']} ({len(cells)} experts)",
    )
    z = artefact["zones"]
    print(
        f"{artefact['method']}: {artefact['num_selected']} experts for {artefact['target_language']} "
        f"(shallow {z['shallow']['count']} / middle {z['middle']['count']} / deep {z['deep']['count']})"
    )
    print("interference mass ρ: " + ", ".join(f"{k} {v:.3f}" for k, v in artefact["interference"].items()))
    return artefact
