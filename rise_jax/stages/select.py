"""Stage ``select``: choose the expert subnetwork -> ``selection.json`` + ``selection_map.png``."""

from __future__ import annotations

import os
from typing import Any

import ml_collections
from absl import logging

from rise_jax.checkpoints.hf_load import read_hf_config
from rise_jax.config_values import comma_list, positive_ints
from rise_jax.data.languages import get_language, language_field, parse_languages
from rise_jax.reporting import plots
from rise_jax.routing.stats import RoutingStats, StatsError
from rise_jax.selection import algorithms as alg
from rise_jax.selection.artefact import build_artefact, save_selection
from rise_jax.selection.methods import SelectionInputs, get_method
from rise_jax.stages.common import checkpoint_path, files_identity, zone_ratios
from rise_jax.stages.registry import Stage
from rise_jax.workdir import Workdir
from rise_jax.zones import ZONES


def select(stats: RoutingStats, c: ml_collections.ConfigDict) -> dict[str, Any]:
    """Run ``c.method`` on ``stats``; returns the artefact dict (nothing written)."""
    method = get_method(c.method, "config.select.method")
    target = get_language(c.target).code
    freq = stats.frequencies()
    zr = zone_ratios(c)
    inputs = SelectionInputs(freq, stats.index(target), stats.top_k, stats.gate_scores, zr)
    choice = method.select(inputs, c)
    rho = alg.interference_mass(freq, choice.experts)
    interference = {lang: float(rho[i]) for i, lang in enumerate(stats.languages) if lang != target}
    return build_artefact(
        c.method,
        choice.params,
        stats.model,
        target,
        stats.languages,
        choice.experts,
        interference,
        choice.budgets,
        stats_path="routing_stats",
        zone_ratios=zr,
    )


def validate(config: ml_collections.ConfigDict) -> None:
    c = config.select
    method = get_method(c.method, "config.select.method")
    unknown = [z for z in comma_list(c.zones) if z not in ZONES]
    if unknown or not comma_list(c.zones):
        raise alg.SelectionError(f"config.select.zones = {c.zones!r}: choose a non-empty subset of {', '.join(ZONES)}")
    zone_ratios(c)
    positive_ints(config, "select.k")
    languages = parse_languages(config.data.languages, "config.data.languages", allow_empty=False)
    target = language_field(c.target, "config.select.target")
    if target not in languages:
        raise StatsError(  # refused before the replay that would make statistics without it
            f"config.select.target = {c.target!r}: language {target!r} is not in the routing statistics "
            f"(config.data.languages: {', '.join(languages)})"
        )
    if method.validate is not None:
        method.validate(c)
    if method.takes_k and os.path.isfile(os.path.join(config.model.checkpoint, "config.json")):
        cfg, _ = read_hf_config(config.model.checkpoint)  # K against the pool before hours of replay
        if int(c.k) > cfg.num_moe_layers * cfg.num_experts:
            raise alg.SelectionError(
                f"config.select.k: K = {c.k} exceeds the pool of {cfg.num_moe_layers * cfg.num_experts} experts "
                f"({cfg.num_moe_layers} MoE layers x {cfg.num_experts} experts of {config.model.checkpoint})"
            )


def run(config: ml_collections.ConfigDict, wd: Workdir) -> dict[str, Any]:
    stats = RoutingStats.load(wd.stats)
    cfg, _ = read_hf_config(checkpoint_path(config))
    stats.check_model(cfg, wd.stats)
    artefact = select(stats, config.select)
    save_selection(wd.selection, artefact)
    cells = [(e["layer"], e["expert"], e["zone"]) for e in artefact["experts"]]
    plots.selection_map(
        stats.num_layers,
        stats.num_experts,
        cells,
        wd.selection_map,
        f"{artefact['method']} selection for {artefact['target_language']} ({len(cells)} experts)",
    )
    z = artefact["zones"]
    logging.info(
        f"{artefact['method']}: {artefact['num_selected']} experts for {artefact['target_language']} "
        f"(shallow {z['shallow']['count']} / middle {z['middle']['count']} / deep {z['deep']['count']})"
    )
    logging.info("interference mass ρ: " + ", ".join(f"{k} {v:.3f}" for k, v in artefact["interference"].items()))
    return artefact


def inputs(config: ml_collections.ConfigDict, wd: Workdir | None) -> dict[str, Any]:
    """What the selection is made from outside the config: the content of an ESFT expert-config
    JSON (method ``esft_json``), so that a file edited in place selects again."""
    path = str(config.select.get("esft_config", "") or "")
    return {"esft_config": files_identity(path, wd)} if path else {}


STAGE = Stage(
    "select",
    ("select",),
    run,
    validate=validate,
    inputs=inputs,
    reads=("stats",),
    outputs=lambda wd: (wd.selection, wd.selection_map),
    spmd=False,
)
