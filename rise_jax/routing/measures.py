"""The analysis-measure registry: what the ``analyze`` stage computes into ``analysis/analysis.json``.

Each :class:`Measure` reads the routing statistics (:class:`AnalysisInputs`) and returns a
:class:`Measured`: its entries of ``analysis.json`` (in :data:`MEASURES` order) and the figures it
wants drawn (:class:`Figure`: a ``reporting.plots`` function and its arguments; this room does not
draw). The formulas live in :mod:`rise_jax.routing.analysis`. Adding a measure is a function here
(or in a module of its own) and one entry in :data:`MEASURES`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from rise_jax.routing import analysis
from rise_jax.routing.stats import RoutingStats

ZONE_KEYS = ("shallow", "middle", "deep", "avg", "all")


@dataclasses.dataclass(frozen=True)
class AnalysisInputs:
    """The statistics and the ``config.analyze`` settings every measure may read."""

    stats: RoutingStats
    reference: str  # the reference language's code (overlap and divergence are measured against it)
    global_top_n: int
    layer_top_n: int
    zone_ratios: tuple[float, float]
    groups: dict[str, str]  # language -> "high" | "low" (resource group)

    @property
    def languages(self) -> list[str]:
        return self.stats.languages

    @functools.cached_property
    def freq(self) -> np.ndarray:
        """``[Λ, L, E]`` activation frequencies."""
        return self.stats.frequencies()


@dataclasses.dataclass(frozen=True)
class Figure:
    """A figure for the stage to draw: ``reporting.plots.<plot>(path=<analysis>/<file>, **kwargs)``."""

    plot: str
    file: str
    kwargs: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Measured:
    entries: dict[str, Any]
    figures: tuple[Figure, ...] = ()


@dataclasses.dataclass(frozen=True)
class Measure:
    name: str
    compute: Callable[[AnalysisInputs], Measured]


def nan_to_none(x: Any) -> Any:
    """NaN as null (JSON has no NaN)."""
    if isinstance(x, float) and np.isnan(x):
        return None
    return x


def per_language(values: np.ndarray | None, langs: list[str]) -> dict[str, list] | None:
    """``{lang: [L]}`` with NaN as null; None for statistics written before the measure existed."""
    if values is None:
        return None
    return {lang: [nan_to_none(float(v)) for v in values[i]] for i, lang in enumerate(langs)}


def _curves(file: str, values: np.ndarray, x: AnalysisInputs, title: str, ylabel: str, langs=None) -> Figure:
    languages = x.languages if langs is None else langs
    kwargs = dict(values=values, languages=languages, title=title, ylabel=ylabel, zone_ratios=x.zone_ratios)
    return Figure("layer_curves", file, kwargs)


def global_overlap(x: AnalysisInputs) -> Measured:
    """Jaccard of the languages' global top-N expert sets, and its means within and between the
    resource groups (the paper's routing isolation)."""
    n = x.global_top_n
    gj = analysis.global_jaccard_matrix(x.stats.counts, n)
    entries = {
        "global_top_n": n,
        "global_jaccard": gj.tolist(),
        "group_overlap": analysis.group_overlap(gj, [x.groups[lang] for lang in x.languages]),
    }
    heatmap = dict(matrix=gj, languages=x.languages, title=f"Global top-{n} expert overlap")
    return Measured(entries, (Figure("overlap_heatmap", "overlap_heatmap.png", heatmap),))


def layerwise_overlap(x: AnalysisInputs) -> Measured:
    """Per layer, each language's top-n Jaccard against the reference; zone means (Table 2)."""
    n = x.layer_top_n
    lj = analysis.layerwise_jaccard(x.freq, x.stats.index(x.reference), n)
    zavg = analysis.zone_averages(lj, x.zone_ratios)
    zone_j = {lang: {z: nan_to_none(float(zavg[z][i])) for z in ZONE_KEYS} for i, lang in enumerate(x.languages)}
    entries = {
        "layer_top_n": n,
        "layerwise_jaccard": {lang: lj[i].tolist() for i, lang in enumerate(x.languages)},
        "zone_jaccard": zone_j,
    }
    title = f"Layer-wise routing similarity with {x.reference} (top-{n} Jaccard)"
    return Measured(entries, (_curves("layerwise_similarity.png", lj, x, title, "Jaccard similarity"),))


def routing_entropy(x: AnalysisInputs) -> Measured:
    """Mean per-token routing entropy and, where recorded, the entropy of each sequence's mean
    routing distribution (the companion study's; the one drawn when present)."""
    entropy, seq_entropy = x.stats.mean_entropy(), x.stats.sequence_entropy()
    entries = {
        "entropy": {lang: entropy[i].tolist() for i, lang in enumerate(x.languages)},
        "sequence_entropy": per_language(seq_entropy, x.languages),
    }
    title = "Routing entropy per layer" + ("" if seq_entropy is None else " (of each sequence's mean distribution)")
    values = entropy if seq_entropy is None else seq_entropy
    return Measured(entries, (_curves("routing_entropy.png", values, x, title, "entropy (nats)"),))


def consistency(x: AnalysisInputs) -> Measured:
    """Inter-token routing consistency: mean top-k Jaccard of token pairs within a sequence."""
    values = x.stats.consistency()
    figures = ()
    if values is not None:
        title = "Inter-token routing consistency (top-k Jaccard of token pairs within a sequence)"
        figures = (_curves("routing_consistency.png", np.nan_to_num(values), x, title, "Jaccard similarity"),)
    return Measured({"consistency": per_language(values, x.languages)}, figures)


def top_experts(x: AnalysisInputs) -> Measured:
    """Each language's most activated experts per layer, and its activation heatmap."""
    freq = x.freq
    entries = {
        "top_experts": {lang: analysis.top_experts(freq[i], x.layer_top_n) for i, lang in enumerate(x.languages)}
    }
    figures = tuple(
        Figure(
            "activation_heatmap",
            f"activation_{lang}.png",
            dict(freq=freq[i], title=f"Expert activation frequency: {lang}"),
        )
        for i, lang in enumerate(x.languages)
    )
    return Measured(entries, figures)


def divergence(x: AnalysisInputs) -> Measured:
    """Entropy-normalised JSD from the reference language on parallel text (replays that kept
    per-sequence distributions only)."""
    s, ref = x.stats, x.reference
    if ref not in s.seq_probs:
        return Measured({})
    div, pairs = {}, {}
    for lang in x.languages:
        if lang != ref and lang in s.seq_probs:
            curve, n = analysis.parallel_divergence(
                s.seq_probs[lang], s.seq_ids[lang], s.seq_probs[ref], s.seq_ids[ref]
            )
            div[lang], pairs[lang] = curve.tolist(), n
    figures = ()
    if div:
        title = f"Routing divergence from {ref} on parallel text"
        values = np.array(list(div.values()))
        figures = (_curves("divergence.png", values, x, title, "entropy-normalised JS divergence", list(div)),)
    return Measured({"divergence": div, "divergence_pairs": pairs}, figures)


MEASURES: dict[str, Measure] = {
    m.name: m
    for m in (
        Measure("global_overlap", global_overlap),
        Measure("layerwise_overlap", layerwise_overlap),
        Measure("routing_entropy", routing_entropy),
        Measure("consistency", consistency),
        Measure("top_experts", top_experts),
        Measure("divergence", divergence),
    )
}
