"""Stage ``analyze``: routing overlap, layer-wise convergence-divergence, entropy -> ``analysis/``.

Every measure of :data:`rise_jax.routing.measures.MEASURES` runs in turn; each adds its keys to
``analysis/analysis.json`` and names its figures. Keys: ``languages``, ``reference``, ``zones``,
``resource_groups`` {lang: high | low}, ``model`` (the replayed model as the statistics record it:
type, layers, experts, ``dtype``, ``frozen_dtype``); ``global_top_n``, ``global_jaccard`` [Λ][Λ],
``group_overlap`` {within_high, within_low, between}: mean global Jaccard within and between the
groups, null for a group of fewer than two; ``layer_top_n``, ``layerwise_jaccard`` {lang: [L]},
``zone_jaccard`` {lang: {shallow, middle, deep, avg (mean of the zone means: Table 2 "Avg."), all
(every layer)}}; ``entropy`` {lang: [L]} (mean per-token routing entropy, nats),
``sequence_entropy`` {lang: [L]} (mean over sequences of the entropy of the sequence's
token-averaged routing distribution: the companion study's routing entropy, nats); ``consistency``
{lang: [L]} (inter-token routing consistency: mean top-k Jaccard of token pairs within a
sequence); ``top_experts`` {lang: [L][n]}; ``divergence`` {lang: [L]} (Bandarkar et al.'s
entropy-normalised JSD from the reference language,
:func:`~rise_jax.routing.analysis.entropy_normalised_jsd`) and ``divergence_pairs`` (parallel text
only). ``analysis/table2.md``: layer-wise Jaccard vs the reference by zone, as the paper's Table 2.
PNGs: ``overlap_heatmap.png``, ``layerwise_similarity.png``, ``routing_entropy.png``,
``routing_consistency.png``, ``divergence.png`` (parallel text), ``activation_<lang>.png``.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections
from absl import logging

from rise_jax.config_values import positive_ints
from rise_jax.data.languages import language_field, parse_languages, resource_groups
from rise_jax.errors import SettingError
from rise_jax.io_utils import write_json_atomic, write_text_atomic
from rise_jax.reporting import plots
from rise_jax.routing.measures import MEASURES, AnalysisInputs
from rise_jax.routing.stats import RoutingStats
from rise_jax.stages.common import replayed_reference, zone_ratios
from rise_jax.stages.registry import Stage
from rise_jax.workdir import Workdir
from rise_jax.zones import zone_spans


def table2_markdown(zone_j: dict[str, dict[str, float]], reference: str, n: int) -> str:
    lines = [
        f"Layer-wise routing overlap with {reference} (Jaccard of per-layer top-{n} experts), averaged by zone.",
        "",
        "| language | shallow | middle | deep | Avg. | all layers |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    for lang, row in zone_j.items():
        cells = " | ".join(fmt(row[z]) for z in ("shallow", "middle", "deep", "avg", "all"))
        lines.append(f"| {lang} | {cells} |")
    lines += [
        "",
        "Avg. = mean of the three zone means (the paper's Table 2); all layers = mean over every layer.",
    ]
    return "\n".join(lines) + "\n"


def validate(config: ml_collections.ConfigDict) -> None:
    zone_ratios(config.select)
    positive_ints(config, "analyze.global_top_n")
    layer_top_n = config.analyze.layer_top_n
    if isinstance(layer_top_n, bool) or not isinstance(layer_top_n, int) or layer_top_n < 0:
        raise SettingError(f"config.analyze.layer_top_n = {layer_top_n!r}: must be a whole number >= 0 (0 = top-k)")
    replayed_reference(config, SettingError, "the analysis compares every language with it")
    parse_languages(config.analyze.get("low_resource", ""), "config.analyze.low_resource")


def run(config: ml_collections.ConfigDict, wd: Workdir) -> dict[str, Any]:
    stats = RoutingStats.load(wd.stats)
    cfg_a = config.analyze
    reference = language_field(cfg_a.reference, "config.analyze.reference")  # "eng" and "en" alike
    stats.index(reference)  # a reference the statistics lack fails before any measure
    zr = zone_ratios(config.select)
    groups = resource_groups(stats.languages, cfg_a.get("low_resource", ""))
    inputs = AnalysisInputs(
        stats, reference, int(cfg_a.global_top_n), int(cfg_a.layer_top_n) or stats.top_k, zr, groups
    )
    result: dict[str, Any] = {
        "languages": stats.languages,
        "reference": reference,
        "zones": zone_spans(stats.num_layers, zr),
        "resource_groups": groups,
        "model": stats.model,  # the replayed model: type, layers, experts, dtype, frozen_dtype
    }
    figures = []
    for measure in MEASURES.values():
        measured = measure.compute(inputs)
        result.update(measured.entries)
        figures += measured.figures

    table2 = table2_markdown(result["zone_jaccard"], reference, inputs.layer_top_n)
    write_json_atomic(wd.analysis_json, result)
    write_text_atomic(wd.table2, table2)
    for figure in figures:
        getattr(plots, figure.plot)(path=os.path.join(wd.analysis, figure.file), **figure.kwargs)
    print(table2)
    logging.info(f"analysis -> {wd.analysis}")
    return result


# Zone averages use the selection's zone boundaries: the one select field analysis depends on.
STAGE = Stage(
    "analyze",
    ("analyze", "select.zone_ratios"),
    run,
    validate=validate,
    reads=("stats",),
    outputs=lambda wd: (wd.analysis_json, wd.table2),
    kept=lambda wd: tuple(
        os.path.join(wd.analysis, name)
        for name in sorted(os.listdir(wd.analysis) if os.path.isdir(wd.analysis) else ())
        if name.endswith(".png") and not name.startswith(("correlation_", "task_experts"))
    ),
    spmd=False,
)
