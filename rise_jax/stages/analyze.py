"""Stage ``analyze``: routing overlap, layer-wise convergence-divergence, entropy -> ``analysis/``.

Artefacts: ``analysis/analysis.json`` (keys: ``languages``, ``reference``, ``global_top_n``,
``global_jaccard`` [Λ][Λ], ``layer_top_n``, ``layerwise_jaccard`` {lang: [L]}, ``zone_jaccard``
{lang: {shallow, middle, deep, avg (mean of the zone means: Table 2 "Avg."), all (every layer)}}, ``divergence`` {lang: [L]} (Bandarkar et al.'s
entropy-normalised JSD from the reference language, :func:`~rise_jax.routing.analysis.entropy_normalised_jsd`)
and ``divergence_pairs`` (parallel text only), ``entropy`` {lang: [L]} (mean per-token routing
entropy, nats), ``sequence_entropy`` {lang: [L]} (mean over sequences of the entropy of the
sequence's token-averaged routing distribution: the companion study's routing entropy, nats),
``consistency`` {lang: [L]} (inter-token routing consistency: mean top-k Jaccard of token pairs
within a sequence), ``top_experts`` {lang: [L][n]}, ``zones``,
``resource_groups`` {lang: high | low}, ``group_overlap`` {within_high, within_low, between}: mean
global Jaccard within and between the groups, null for a group of fewer than two), ``model``
(the replayed model as the statistics record it: type, layers, experts, ``dtype``, ``frozen_dtype``);
``analysis/table2.md`` (layer-wise Jaccard vs the reference by zone, as the paper's Table 2);
PNGs: ``overlap_heatmap.png``, ``layerwise_similarity.png``, ``routing_entropy.png``,
``routing_consistency.png``, ``divergence.png`` (parallel text), ``activation_<lang>.png``.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from rise_jax.config_values import positive_ints
from rise_jax.data.languages import resource_groups
from rise_jax.io_utils import write_json_atomic, write_text_atomic
from rise_jax.reporting import plots
from rise_jax.routing import analysis
from rise_jax.routing.stats import RoutingStats
from rise_jax.stages.common import zone_ratios
from rise_jax.stages.registry import Stage
from rise_jax.workdir import Workdir
from rise_jax.zones import zone_spans


def _nan_to_none(x: Any) -> Any:
    if isinstance(x, float) and np.isnan(x):
        return None
    return x


def _per_language(values: np.ndarray | None, langs: list[str]) -> dict[str, list] | None:
    """``{lang: [L]}`` with NaN as null; None for statistics written before the measure existed."""
    if values is None:
        return None
    return {lang: [_nan_to_none(float(v)) for v in values[i]] for i, lang in enumerate(langs)}


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


def run(config: ml_collections.ConfigDict, wd: Workdir) -> dict[str, Any]:
    stats = RoutingStats.load(wd.stats)
    cfg_a = config.analyze
    ref = stats.index(cfg_a.reference)
    langs = stats.languages
    freq = stats.frequencies()
    n_global = int(cfg_a.global_top_n)
    n_layer = int(cfg_a.layer_top_n) or stats.top_k
    out_dir = wd.analysis

    gj = analysis.global_jaccard_matrix(stats.counts, n_global)
    lj = analysis.layerwise_jaccard(freq, ref, n_layer)
    zr = zone_ratios(config.select)
    zavg = analysis.zone_averages(lj, zr)
    zone_j = {
        lang: {z: _nan_to_none(float(zavg[z][i])) for z in ("shallow", "middle", "deep", "avg", "all")}
        for i, lang in enumerate(langs)
    }
    entropy = stats.mean_entropy()
    result: dict[str, Any] = {
        "languages": langs,
        "reference": cfg_a.reference,
        "global_top_n": n_global,
        "global_jaccard": gj.tolist(),
        "layer_top_n": n_layer,
        "layerwise_jaccard": {lang: lj[i].tolist() for i, lang in enumerate(langs)},
        "zone_jaccard": zone_j,
        "entropy": {lang: entropy[i].tolist() for i, lang in enumerate(langs)},
        "sequence_entropy": _per_language(stats.sequence_entropy(), langs),
        "consistency": _per_language(stats.consistency(), langs),
        "top_experts": {lang: analysis.top_experts(freq[i], n_layer) for i, lang in enumerate(langs)},
        "zones": zone_spans(stats.num_layers, zr),
    }
    groups = resource_groups(langs, cfg_a.get("low_resource", ""))
    result["resource_groups"] = groups
    result["model"] = stats.model  # the replayed model: type, layers, experts, dtype, frozen_dtype
    result["group_overlap"] = analysis.group_overlap(gj, [groups[lang] for lang in langs])
    ref_lang = cfg_a.reference
    if ref_lang in stats.seq_probs:
        div, pairs = {}, {}
        for lang in langs:
            if lang != ref_lang and lang in stats.seq_probs:
                curve, n = analysis.parallel_divergence(
                    stats.seq_probs[lang], stats.seq_ids[lang], stats.seq_probs[ref_lang], stats.seq_ids[ref_lang]
                )
                div[lang], pairs[lang] = curve.tolist(), n
        result["divergence"], result["divergence_pairs"] = div, pairs
        if div:
            plots.layer_curves(
                np.array(list(div.values())),
                list(div),
                os.path.join(out_dir, "divergence.png"),
                f"Routing divergence from {ref_lang} on parallel text",
                "entropy-normalised JS divergence",
                zr,
            )

    write_json_atomic(wd.analysis_json, result)
    write_text_atomic(wd.table2, table2_markdown(zone_j, ref_lang, n_layer))
    plots.overlap_heatmap(
        gj, langs, os.path.join(out_dir, "overlap_heatmap.png"), f"Global top-{n_global} expert overlap"
    )
    plots.layer_curves(
        lj,
        langs,
        os.path.join(out_dir, "layerwise_similarity.png"),
        f"Layer-wise routing similarity with {ref_lang} (top-{n_layer} Jaccard)",
        "Jaccard similarity",
        zr,
    )
    seq_entropy = stats.sequence_entropy()
    plots.layer_curves(
        entropy if seq_entropy is None else seq_entropy,
        langs,
        os.path.join(out_dir, "routing_entropy.png"),
        "Routing entropy per layer" + ("" if seq_entropy is None else " (of each sequence's mean distribution)"),
        "entropy (nats)",
        zr,
    )
    consistency = stats.consistency()
    if consistency is not None:
        plots.layer_curves(
            np.nan_to_num(consistency),
            langs,
            os.path.join(out_dir, "routing_consistency.png"),
            "Inter-token routing consistency (top-k Jaccard of token pairs within a sequence)",
            "Jaccard similarity",
            zr,
        )
    for i, lang in enumerate(langs):
        plots.activation_heatmap(
            freq[i], os.path.join(out_dir, f"activation_{lang}.png"), f"Expert activation frequency: {lang}"
        )
    print(table2_markdown(zone_j, ref_lang, n_layer))
    logging.info(f"analysis -> {out_dir}")
    return result


# Zone averages use the selection's zone boundaries: the one select field analysis depends on.
STAGE = Stage(
    "analyze",
    ("analyze", "select.zone_ratios"),
    run,
    validate=validate,
    reads=("stats",),
    outputs=lambda wd: (wd.analysis_json, wd.table2),
)
