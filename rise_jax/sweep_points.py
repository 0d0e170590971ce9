"""A sweep's points: dotted-key overrides applied to a config, a point's label, and the table with
one row per point. Shared by the sweep command (:mod:`rise_jax.sweep`) and the ``arms`` stage
(:mod:`rise_jax.stages.arms`), which runs a sweep's points beside a run of its own.

A point's ``results`` are ``eval/results.json``'s: variant -> task -> language -> scores."""

from __future__ import annotations

import copy
from typing import Any

import ml_collections


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
    """A copy of ``config`` with dotted-key overrides; an unknown key is an error naming it."""
    out = copy.deepcopy(config)
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            if p not in node:
                raise KeyError(f"sweep override {key!r}: no config section {p!r}")
            node = node[p]
        if leaf not in node:
            raise KeyError(f"sweep override {key!r}: no config field {leaf!r}")
        node[leaf] = value
    return out


def label(overrides: dict[str, Any]) -> str:
    text = "_".join(f"{k.split('.')[-1]}={v}" for k, v in overrides.items())
    return "".join(ch if ch.isalnum() or ch in "=._-" else "-" for ch in text)[:80]


def result_columns(summary: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """(variant, task, language, metric) of every result, each task's first metric only."""
    columns: list[tuple[str, str, str, str]] = []
    for point in summary:
        for variant, tasks in (point["results"] or {}).items():
            for task, langs in tasks.items():
                for lang, scores in langs.items():
                    metric = next(k for k in scores if k not in ("n", "skipped", "truncated"))
                    if (variant, task, lang, metric) not in columns:
                        columns.append((variant, task, lang, metric))
    return columns


def point_value(point: dict[str, Any], column: tuple[str, str, str, str]) -> float | None:
    v, t, lang, m = column
    return (point["results"] or {}).get(v, {}).get(t, {}).get(lang, {}).get(m)


def sweep_markdown(summary: list[dict[str, Any]], plots: list[str] = ()) -> str:
    """One row per point: the overrides, then each variant/task/language's first metric; then the plots."""
    columns = result_columns(summary)
    head = ["point"] + [f"{v}/{t}/{lang} {m}" for v, t, lang, m in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for point in summary:
        cells = [label(point["overrides"])]
        for column in columns:
            value = point_value(point, column)
            cells.append("–" if value is None else f"{value:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    if plots:
        lines += ["", *(f"![{name[:-4]}]({name})" for name in plots)]
    return "\n".join(lines) + "\n"
