"""Stage ``correlate``: a language's task score against how closely its routing follows English.

Bandarkar et al. (§4) find a strong correlation between a language's performance and its mean
middle-layer routing divergence from English. For every eval task (``correlate.tasks``, default
all tasks in ``eval/results.json``) and one variant (``correlate.variant``, default ``base``),
each language's primary metric is paired with its mean divergence
(:func:`~rise_jax.routing.analysis.entropy_normalised_jsd`, ``analysis.json``'s ``divergence``)
over ``correlate.layers`` (MoE layers as ``"8-35"``; default: the middle zone), and Pearson r and
Spearman ρ are computed with their p-values (``scipy.stats``), over every language that has both a
score and a divergence curve. ``correlate.mean`` names tasks (``all``: every task correlated)
whose primary metrics are averaged per language into one more row, ``mean``, over the languages
every one of them scored (a knowledge score made of several benchmarks, as a point per language).

Artefacts: ``analysis/correlation.json`` ({task: {metric, variant, languages, layers, points
[{language, divergence, score}], pearson_r, pearson_p, spearman_rho, spearman_p, n, note}}, the
``mean`` row with its ``tasks`` too);
the four statistics are null, with a ``note``, when every language has the same score),
``analysis/correlation.md`` (one row per task) and ``analysis/correlation_<task>.png`` (labelled
scatter plot). Needs parallel text in the replay (divergence) and at least three non-English
languages scored by the eval stage.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import ml_collections
from absl import logging

from rise_jax.config_values import comma_list, int_ranges
from rise_jax.errors import RiseError
from rise_jax.evaluation.tasks import TASK_KINDS
from rise_jax.io_utils import read_json_object, write_json_atomic, write_text_atomic
from rise_jax.reporting import plots
from rise_jax.routing.analysis import performance_alignment
from rise_jax.stages.registry import Stage
from rise_jax.workdir import Workdir


class CorrelationError(RiseError, ValueError):
    """Missing or insufficient inputs for the performance-alignment correlation."""


MEAN = "mean"  # the row of correlate.mean


def validate(config: ml_collections.ConfigDict) -> None:
    c = config.correlate
    if c.layers:
        int_ranges(c.layers)
    named = [n for n in comma_list(c.tasks) + comma_list(c.get("mean", "")) if n != "all"]
    unknown = [n for n in named if n not in config.eval.tasks]
    if unknown:
        raise CorrelationError(
            f"config.correlate: unknown eval task(s) {unknown} in tasks / mean; choose from {', '.join(config.eval.tasks)}"
        )
    if "all" in comma_list(c.get("mean", "")) and len(comma_list(c.mean)) > 1:
        raise CorrelationError(f"config.correlate.mean = {c.mean!r}: 'all' or task names, not both")


def _primary(config: ml_collections.ConfigDict, task: str) -> str:
    """The primary metric of an eval task (its kind's, :data:`~rise_jax.evaluation.tasks.TASK_KINDS`)."""
    kind = config.eval.tasks[task].kind if task in config.eval.tasks else task
    return TASK_KINDS[kind].primary if kind in TASK_KINDS else "accuracy"


def mean_scores(scored: dict[str, Any], metrics: dict[str, str]) -> dict[str, float]:
    """Per language, the mean of the tasks' metrics (``metrics``: task -> metric), over the
    languages every task scored."""
    per_task = [{lang: s[m] for lang, s in scored[t].items() if m in s} for t, m in metrics.items()]
    shared = [lang for lang in per_task[0] if all(lang in p for p in per_task[1:])]
    return {lang: sum(float(p[lang]) for p in per_task) / len(per_task) for lang in shared}


def correlation_markdown(result: dict[str, Any]) -> str:
    lines = [
        "Task score against mean routing divergence from English (layers as listed), across languages.",
        "",
        "| task | metric | variant | layers | n | Pearson r (p) | Spearman ρ (p) |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    notes = []
    for task, r in result.items():
        layers = f"{r['layers'][0]}–{r['layers'][-1]}"
        if r["pearson_r"] is None:
            pearson = spearman = "–"
            notes.append(f"{task}: {r['note']}.")
        else:
            pearson = f"{r['pearson_r']:.3f} ({r['pearson_p']:.3g})"
            spearman = f"{r['spearman_rho']:.3f} ({r['spearman_p']:.3g})"
        lines.append(f"| {task} | {r['metric']} | {r['variant']} | {layers} | {r['n']} | {pearson} | {spearman} |")
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def run(config: ml_collections.ConfigDict, wd: Workdir) -> dict[str, Any]:
    c = config.correlate
    for path, stage in ((wd.analysis_json, "analyze"), (wd.eval_results, "eval")):
        if not os.path.isfile(path):
            raise CorrelationError(f"{path}: missing (run the {stage} stage first)")
    analysis = read_json_object(wd.analysis_json, "analysis", CorrelationError)
    divergence = analysis.get("divergence")
    if not divergence:
        raise CorrelationError(
            f"{wd.analysis_json}: no divergence curves (replay a parallel source such as FLoRes with stats.divergence)"
        )
    if c.layers:
        layers = list(int_ranges(c.layers))
    else:
        middle = (analysis.get("zones") or {}).get("middle")
        if not middle:
            raise CorrelationError(f"{wd.analysis_json}: the model has no middle zone; set correlate.layers")
        layers = list(range(middle[0], middle[1] + 1))
    num_layers = len(next(iter(divergence.values())))
    bad = [layer for layer in layers if not 0 <= layer < num_layers]
    if bad:
        raise CorrelationError(f"correlate.layers: MoE layer {bad[0]} out of range [0, {num_layers})")
    results = read_json_object(wd.eval_results, "eval results", CorrelationError).get("results", {})
    if c.variant not in results:
        raise CorrelationError(
            f"{wd.eval_results}: no results for variant {c.variant!r} (have: {', '.join(results) or 'none'})"
        )
    scored = results[c.variant]
    tasks = comma_list(c.tasks) or list(scored)
    for task in tasks:
        if task not in scored:
            raise CorrelationError(f"{wd.eval_results}: no {c.variant} results for task {task!r}")
    rows: dict[str, tuple[str, dict[str, float], dict[str, Any]]] = {}  # name -> (metric, scores, extra)
    for task in tasks:
        metric = _primary(config, task)
        rows[task] = (metric, {lang: s[metric] for lang, s in scored[task].items() if metric in s}, {})
    averaged = tasks if comma_list(c.get("mean", "")) == ["all"] else comma_list(c.get("mean", ""))
    if averaged:
        missing = [t for t in averaged if t not in scored]
        if missing:
            raise CorrelationError(f"{wd.eval_results}: no {c.variant} results for task(s) {missing} of correlate.mean")
        metrics = {t: _primary(config, t) for t in averaged}
        label = "mean(" + ", ".join(f"{t} {m}" for t, m in metrics.items()) + ")"
        rows[MEAN] = (label, mean_scores(scored, metrics), {"tasks": list(averaged)})
    out: dict[str, Any] = {}
    for task, (metric, per_lang, extra) in rows.items():
        try:
            r = performance_alignment(per_lang, divergence, layers)
        except ValueError as err:
            raise CorrelationError(f"task {task}: {err}") from err
        out[task] = {"metric": metric, "variant": c.variant, **extra, **r}
        plots.scatter(
            [p["divergence"] for p in r["points"]],
            [p["score"] for p in r["points"]],
            r["languages"],
            os.path.join(wd.analysis, f"correlation_{task}.png"),
            f"{task}: "
            + (r["note"] if r["pearson_r"] is None else f"r = {r['pearson_r']:.2f}, ρ = {r['spearman_rho']:.2f}")
            + f" (n = {r['n']})",
            f"mean divergence from English, MoE layers {layers[0]}–{layers[-1]}",
            metric,
        )
        if r["pearson_r"] is None:
            logging.info(f"correlate {task}: {r['note']} (n={r['n']})")
        else:
            logging.info(
                f"correlate {task}: Pearson r {r['pearson_r']:.3f} (p {r['pearson_p']:.3g}), "
                f"Spearman ρ {r['spearman_rho']:.3f} (p {r['spearman_p']:.3g}), n={r['n']}"
            )
    write_json_atomic(wd.correlation, out)
    table = correlation_markdown(out)
    write_text_atomic(wd.correlation_table, table)
    print(table)
    return out


def correlated_inputs(config: ml_collections.ConfigDict, wd: Workdir | None) -> dict[str, Any]:
    """What the correlation is made from, by content: the scores of ``correlate.variant`` in
    ``eval/results.json`` and the divergence curves and zones of ``analysis/analysis.json`` — so a
    rerun whose eval changed only other variants (a new selection changes ``trained``, not
    ``base``) reuses the correlation."""
    if wd is None:
        return {}

    def digest(path: str, pick) -> str | None:
        if not os.path.isfile(path):
            return None
        try:
            doc = read_json_object(path, "input", CorrelationError)
        except CorrelationError:
            return None
        return hashlib.sha256(json.dumps(pick(doc), sort_keys=True, default=str).encode()).hexdigest()

    variant = config.correlate.variant
    return {
        "scores": digest(wd.eval_results, lambda d: (d.get("results") or {}).get(variant)),
        "divergence": digest(wd.analysis_json, lambda d: [d.get("divergence"), d.get("zones")]),
        "task_kinds": {name: task.kind for name, task in config.eval.tasks.items()},
    }


STAGE = Stage(
    "correlate",
    ("correlate",),
    run,
    validate=validate,
    reads=("analyze", "eval"),
    outputs=lambda wd: (wd.correlation, wd.correlation_table),
    kept=lambda wd: tuple(
        os.path.join(wd.analysis, name)
        for name in sorted(os.listdir(wd.analysis) if os.path.isdir(wd.analysis) else ())
        if name.startswith("correlation_") and name.endswith(".png")
    ),
    inputs=correlated_inputs,
    chained=False,
    spmd=False,
)
