"""The routing-alignment comparison (sweep ``routing_alignment``, ``rise_jax/configs/sweeps.py``):
per way of adapting the model to the target language — RISE (``experts``), RISE + the alignment
term, routers + the alignment term, steering at inference — its gain on the target language, the
change on the other languages, and the target's middle-layer routing divergence from English
before and after (the ``routing_divergence`` eval task on the base and on the adapted model).

Pure functions over the sweep's summary (``[{overrides, results}]``, ``results`` as
``eval/results.json`` holds them: variant -> task -> language -> scores)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from rise_jax.io_utils import write_json_atomic
from rise_jax.reporting.plots import sweep_plot

PLOTS = ("alignment_gain.png", "alignment_divergence.png")  # what comparison_plots writes, in order

DIVERGENCE_TASK = "routing_divergence"
AFTER = {"trained": "", "steered": "steering at inference"}  # variant -> row name ("" = the point's method)


def point_name(overrides: dict[str, Any]) -> str:
    """``experts`` / ``routers`` / ``experts+routers``, ``+ align`` when the point trains with the term."""
    method = str(overrides.get("train.method", "experts"))
    name = "RISE (experts)" if method == "experts" else method
    return f"{name} + align" if float(overrides.get("train.align_weight", 0.0) or 0.0) > 0 else name


def _primary(scores: dict[str, Any]) -> str:
    return next(k for k in scores if k not in ("n", "skipped", "truncated"))


def comparison_rows(summary: Sequence[dict[str, Any]], target: str) -> list[dict[str, Any]]:
    """One row per (point, adapted variant): ``name``, ``task`` / ``metric`` (the first eval task
    other than the divergence, its first metric), ``before`` / ``after`` / ``gain`` on ``target``,
    ``others`` (mean change over the other languages of that task), ``div_before`` / ``div_after``
    (the divergence task's score on ``target``, None without it)."""
    rows = []
    for point in summary:
        results = point.get("results") or {}
        base = results.get("base", {})
        for variant, label in AFTER.items():
            if variant not in results:
                continue
            after = results[variant]
            row: dict[str, Any] = {"name": label or point_name(point["overrides"]), "variant": variant}
            task = next((t for t in after if t != DIVERGENCE_TASK and target in after[t] and t in base), None)
            if task is not None:
                metric = _primary(after[task][target])
                before_t, after_t = base[task][target][metric], after[task][target][metric]
                others = [
                    after[task][lang][metric] - base[task][lang][metric]
                    for lang in after[task]
                    if lang != target and lang in base[task]
                ]
                row.update(
                    task=task,
                    metric=metric,
                    before=before_t,
                    after=after_t,
                    gain=after_t - before_t,
                    others=float(np.mean(others)) if others else None,
                )
            div_b = base.get(DIVERGENCE_TASK, {}).get(target, {}).get("divergence")
            div_a = after.get(DIVERGENCE_TASK, {}).get(target, {}).get("divergence")
            row.update(div_before=div_b, div_after=div_a)
            rows.append(row)
    return rows


def _cell(value: Any) -> str:
    return "–" if value is None else f"{value:.4f}"


def _delta(value: Any) -> str:
    return "–" if value is None else f"{value:+.4f}"


def comparison_markdown(rows: Sequence[dict[str, Any]], target: str, plots: Sequence[str] = ()) -> str:
    """The comparison as a Markdown section (table, then the plots)."""
    if not rows:
        return ""
    task = next((r for r in rows if "task" in r), {})
    name, metric = task.get("task", "?"), task.get("metric", "")
    what = name if metric in ("", name) else f"{name} {metric}"
    lines = [
        f"## Routing alignment vs RISE on {target}",
        "",
        f"Target-language {what} before → after (base → adapted), the mean change on the other languages, "
        f"and {target}'s middle-layer routing divergence from English (entropy-normalised JS, lower = closer) "
        "before and after. Steering changes no weight: its row is the RISE point's base model with the "
        "router edit of `eval.steer`.",
        "",
        f"| method | {target} before | {target} after | Δ {target} | Δ others (mean) | divergence before | divergence after |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {_cell(r.get('before'))} | {_cell(r.get('after'))} | {_delta(r.get('gain'))} "
            f"| {_delta(r.get('others'))} | {_cell(r['div_before'])} | {_cell(r['div_after'])} |"
        )
    if plots:
        lines += ["", *(f"![{name[:-4]}]({name})" for name in plots)]
    return "\n".join(lines) + "\n"


def comparison_plots(rows: Sequence[dict[str, Any]], target: str, directory: str) -> list[str]:
    """``alignment_gain.png`` (Δ target, Δ others per method) and ``alignment_divergence.png``
    (divergence before / after per method); the file names written."""
    if not rows:
        return []
    names = [r["name"] for r in rows]
    files = []
    if any(r.get("gain") is not None for r in rows):
        metric = next(r["metric"] for r in rows if "metric" in r)
        series = {f"Δ {target}": [r.get("gain") for r in rows], "Δ others (mean)": [r.get("others") for r in rows]}
        sweep_plot(names, series, os.path.join(directory, PLOTS[0]), f"change in {metric}", "method", metric)
        files.append(PLOTS[0])
    if any(r["div_after"] is not None for r in rows):
        series = {"before": [r["div_before"] for r in rows], "after": [r["div_after"] for r in rows]}
        title = f"{target}: middle-layer routing divergence from English"
        sweep_plot(names, series, os.path.join(directory, PLOTS[1]), title, "method", "D_H-JS")
        files.append(PLOTS[1])
    return files


def write_comparison(summary: Sequence[dict[str, Any]], target: str, directory: str) -> str:
    """When the points were scored with the ``routing_divergence`` task: ``alignment.json`` (the
    :func:`comparison_rows`) and the two plots in ``directory``, and the comparison's Markdown
    section, returned; otherwise nothing is written and the section is empty."""
    rows = comparison_rows(summary, target)
    if not any(r["div_after"] is not None for r in rows):
        return ""
    write_json_atomic(os.path.join(directory, "alignment.json"), rows)
    return comparison_markdown(rows, target, comparison_plots(rows, target, directory))
