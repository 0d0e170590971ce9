"""Reading the rows of a benchmark file, whatever form it was published in — JSONL, a JSON list,
Parquet (the HF hub's form), CSV or TSV with a header — so that every reader in
:mod:`rise_jax.evaluation.formats` and :mod:`rise_jax.evaluation.multilingual_mc` names the file
and the line or row of a bad item the same way."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from typing import Any

from rise_jax.errors import RiseError


class FormatError(RiseError, ValueError):
    """A file that is not in the format it was read as (the message names the file and row)."""


def _delimited(path: str, text: str) -> list[tuple[str, dict[str, Any]]]:
    """Rows of a CSV / TSV with a header line (tab-separated when the header has a tab), keyed by
    the header's column names; ``where`` names the file's line."""
    lines = text.splitlines(keepends=True)
    if not lines:
        return []
    delimiter = "\t" if "\t" in lines[0] else ","
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL  # TSVs keep quotes as text
    reader = csv.reader(lines, delimiter=delimiter, quoting=quoting)
    header = next(reader)
    rows = []
    for n, values in enumerate(reader, 2):
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            raise FormatError(f"{path}: line {n}: {len(values)} columns, the header has {len(header)}")
        rows.append((f"{path}: line {n}", dict(zip(header, values, strict=True))))
    return rows


def read_rows(path: str) -> list[tuple[str, dict[str, Any]]]:
    """``(where, row)`` of a JSONL, JSON list, Parquet, CSV or TSV file; ``where`` names file and
    line/row."""
    if not os.path.isfile(path):
        raise FormatError(f"{path}: missing")
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        return [(f"{path}: row {i}", row) for i, row in enumerate(pq.read_table(path).to_pylist())]
    with open(path, encoding="utf-8", newline="") as fh:
        text = fh.read()
    if path.endswith((".csv", ".tsv")):
        return _delimited(path, text)
    if path.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise FormatError(f"{path}: not JSON ({err})") from err
        if isinstance(data, dict) and isinstance(data.get("Data"), list):  # official TriviaQA
            data = data["Data"]
        if not isinstance(data, list):
            raise FormatError(f"{path}: expected a list of rows (or TriviaQA's {{'Data': [...]}})")
        return [(f"{path}: row {i}", row) for i, row in enumerate(data)]
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append((f"{path}: line {n}", json.loads(line)))
            except json.JSONDecodeError as err:
                raise FormatError(f"{path}: line {n}: not JSON ({err})") from err
    return rows


def convert_rows(
    path: str, what: str, convert: Callable[[dict[str, Any], int], dict[str, Any] | None]
) -> list[dict[str, Any]]:
    """``convert(row, index)`` of every row of a file (the one reader of row files for every
    task; a ``None`` result drops the row, e.g. another language's row of a multilingual file); a
    row it cannot read is an error naming the file, the line or row and ``what`` it should be
    (e.g. "an ARC item"); a file without rows is an error too."""
    items = []
    for i, (where, row) in enumerate(read_rows(path)):
        try:
            if not isinstance(row, dict):
                raise TypeError(f"expected an object, got {type(row).__name__}")
            item = convert(row, i)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
            raise FormatError(f"{where}: not {what} ({type(err).__name__}: {err})") from err
        if item is not None:
            items.append(item)
    if not items:
        raise FormatError(f"{path}: empty dataset (no {what} rows)")
    return items
