"""Markdown tables of evaluation results, laid out like the paper's Table 3.

Rows are settings (variants such as ``base``, ``trained``, ``pruned``), columns are languages plus
``Avg`` (or, for the general-ability tasks, one column per task and metric, as the paper's
Table 4); below them, ``Δ <variant>`` rows give the difference to the baseline setting.

Every Δ is the difference of the unrounded values, rounded once; the table shows as many decimals
(2 to :data:`MAX_DECIMALS`) as it takes for each shown Δ to equal the difference of the shown
values (``1.92 → 1.92`` never reads ``+0.01``). Where no precision up to ``MAX_DECIMALS`` does,
the Δ shown is the difference of the shown values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MIN_DECIMALS, MAX_DECIMALS = 2, 4


def _fmt(x: float | None, signed: bool = False, decimals: int = MIN_DECIMALS) -> str:
    if x is None:
        return "–"
    text = f"{x:+.{decimals}f}" if signed else f"{x:.{decimals}f}"
    return "+" + text[1:] if signed and float(text) == 0 else text  # never "-0.00"


def _shown(x: float, decimals: int) -> float:
    """``x`` as the table shows it at ``decimals``."""
    return float(f"{x:.{decimals}f}")


def delta_and_decimals(pairs: Sequence[tuple[float, float]]) -> tuple[list[float], int]:
    """For ``(after, before)`` pairs: the deltas to show and the decimals to show every value
    with, the fewest (from ``MIN_DECIMALS``) at which each rounded ``after - before`` equals
    ``shown(after) - shown(before)``; past ``MAX_DECIMALS``, the differences of the shown values."""
    for d in range(MIN_DECIMALS, MAX_DECIMALS + 1):
        if all(_shown(a - b, d) == _shown(_shown(a, d) - _shown(b, d), d) for a, b in pairs):
            return [a - b for a, b in pairs], d
    d = MAX_DECIMALS
    return [_shown(a, d) - _shown(b, d) for a, b in pairs], d


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
    compared = [v for v in rows if baseline in rows and v != baseline]
    pairs = [
        (a, b)
        for v in compared
        for a, b in zip(rows[v], rows[baseline], strict=True)
        if a is not None and b is not None
    ]
    deltas, d = delta_and_decimals(pairs)
    shown_deltas = iter(deltas)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for v, values in rows.items():
        lines.append("| " + " | ".join([v, *(_fmt(x, decimals=d) for x in values)]) + " |")
    for v in compared:
        row = [
            None if a is None or b is None else next(shown_deltas) for a, b in zip(rows[v], rows[baseline], strict=True)
        ]
        lines.append("| " + " | ".join([f"Δ {v}", *(_fmt(x, signed=True, decimals=d) for x in row)]) + " |")
    return "\n".join(lines) + "\n"


def tasks_table(per_task: dict[str, dict[str, dict[str, float]]], baseline: str | None = "base") -> str:
    """Every task on one table, task × language × variant: ``per_task[task][variant][language]``
    (a task's primary metric) -> rows ``task | variant`` then ``task | Δ variant`` against
    ``baseline``; columns the union of the tasks' languages (first seen first) and ``mean`` (over
    the languages the row has: tasks cover different languages; a Δ row's over the languages both
    rows have); ``–`` where a task has none."""
    languages = list(dict.fromkeys(lang for variants in per_task.values() for v in variants.values() for lang in v))

    def cells(values: dict[str, float]) -> list[float | None]:
        present = [values[lang] for lang in languages if lang in values]
        return [values.get(lang) for lang in languages] + [sum(present) / len(present) if present else None]

    rows, deltas = [], []
    for task, variants in per_task.items():
        for variant, values in variants.items():
            rows.append((task, variant, cells(values)))
        if baseline in variants:  # Δ over the languages both rows have (the mean too)
            for variant, values in variants.items():
                if variant != baseline:
                    shared = [lang for lang in values if lang in variants[baseline]]
                    after, before = ({lang: x[lang] for lang in shared} for x in (values, variants[baseline]))
                    deltas.append((task, variant, cells(after), cells(before)))
    pairs = [(a, b) for _, _, after, before in deltas for a, b in zip(after, before, strict=True) if None not in (a, b)]
    shown, d = delta_and_decimals(pairs)
    shown_deltas = iter(shown)
    header = ["task", "setting", *languages, "mean"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for task in per_task:
        lines += [
            "| " + " | ".join([t, v, *(_fmt(x, decimals=d) for x in vals)]) + " |" for t, v, vals in rows if t == task
        ]
        for t, v, after, before in deltas:
            if t == task:
                diffs = [None if None in (a, b) else next(shown_deltas) for a, b in zip(after, before, strict=True)]
                lines.append(
                    "| " + " | ".join([t, f"Δ {v}", *(_fmt(x, signed=True, decimals=d) for x in diffs)]) + " |"
                )
    return "\n".join(lines) + "\n"
