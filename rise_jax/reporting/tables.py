"""Markdown tables of evaluation results, laid out like the paper's Table 3.

Rows are settings (variants such as ``base``, ``trained``, ``pruned``), columns are languages plus
``Avg`` (or, for the general-ability tasks, one column per task and metric, as the paper's
Table 4); below them, ``Δ <variant>`` rows give the difference to the baseline setting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _fmt(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "–"
    return f"{x:+.2f}" if signed else f"{x:.2f}"


def results_table(
    results: dict[str, dict[str, dict[str, Any]]],
    metric: str,
    languages: Sequence[str],
    baseline: str | None = "base",
) -> str:
    """``results[variant][language][metric]`` -> a markdown table with Avg and deltas to ``baseline``."""

    def row_values(variant: str) -> list[float | None]:
        vals = [results[variant].get(lang, {}).get(metric) for lang in languages]
        present = [v for v in vals if v is not None]
        return [*vals, sum(present) / len(present) if present and len(present) == len(vals) else None]

    return variants_table({v: row_values(v) for v in results}, [*languages, "Avg"], baseline)


def variants_table(rows: dict[str, list[float | None]], columns: Sequence[str], baseline: str | None = "base") -> str:
    """One row per setting (``rows[variant]`` = one value per column), then ``Δ <variant>`` rows
    against ``baseline`` (the paper's before → after layout)."""
    header = ["setting", *columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for v, values in rows.items():
        lines.append("| " + " | ".join([v, *(_fmt(x) for x in values)]) + " |")
    if baseline in rows:
        for v, values in rows.items():
            if v == baseline:
                continue
            deltas = [None if a is None or b is None else a - b for a, b in zip(values, rows[baseline], strict=True)]
            lines.append("| " + " | ".join([f"Δ {v}", *(_fmt(x, signed=True) for x in deltas)]) + " |")
    return "\n".join(lines) + "\n"
