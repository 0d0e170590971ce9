"""Markdown tables of evaluation results, laid out like the paper's Table 3.

Rows are settings (variants such as ``base``, ``trained``, ``pruned``), columns are languages plus
``Avg``; below them, ``Δ <variant>`` rows give the difference to the baseline setting.
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
    variants = list(results)
    header = ["setting", *languages, "Avg"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def row_values(variant: str) -> list[float | None]:
        vals = [results[variant].get(lang, {}).get(metric) for lang in languages]
        present = [v for v in vals if v is not None]
        return [*vals, sum(present) / len(present) if present and len(present) == len(vals) else None]

    table = {v: row_values(v) for v in variants}
    for v in variants:
        lines.append("| " + " | ".join([v, *(_fmt(x) for x in table[v])]) + " |")
    if baseline in table:
        for v in variants:
            if v == baseline:
                continue
            deltas = [None if a is None or b is None else a - b for a, b in zip(table[v], table[baseline], strict=True)]
            lines.append("| " + " | ".join([f"Δ {v}", *(_fmt(x, signed=True) for x in deltas)]) + " |")
    return "\n".join(lines) + "\n"
