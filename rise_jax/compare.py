"""Compare two runs: ``python -m rise_jax.compare WORKDIR_A WORKDIR_B [--out DIR]``.

Prints the differences as Markdown and writes ``DIR/compare.md`` and ``DIR/compare.html`` (one
self-contained page, :mod:`rise_jax.reporting.html`; ``DIR`` defaults to the current directory):

* **Config**: the keys whose values differ, dotted (``select.k``), from the ``config`` dicts of the
  pipeline records ``.rise/<stage>.json`` (each stage's record holds the settings it depends on;
  where two records of one workdir disagree, the most recently finished wins). The workdir's own
  path inside string values reads ``{workdir}``, so two workdirs of one config show no difference.
* **Selection**: ``selection.json`` of each (:mod:`rise_jax.selection.artefact`): method, target,
  size, then per MoE layer the experts each selected, how many both did and their Jaccard
  similarity, and the same over every (layer, expert).
* **Eval**: ``eval/results.json`` of each (``{"config", "results": {variant: {task: {lang:
  {metric: value}}}}}``): every variant, task and language both evaluated, on the task's primary
  metric (``rise_jax.evaluation.tasks.TASK_KINDS[kind].primary``), A, B and B − A (the Δ from the
  unrounded values, ``reporting.tables.delta_and_decimals``).

A part one run lacks says so. A missing workdir, one holding none of these artefacts, or an
unreadable one is a :class:`CompareError`, printed as one ``error:`` line (exit status 2).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from absl import app, flags

from rise_jax.errors import RiseError
from rise_jax.evaluation.tasks import TASK_KINDS
from rise_jax.io_utils import read_json_object, write_text_atomic
from rise_jax.launch import run_or_exit
from rise_jax.reporting import html as html_report
from rise_jax.reporting.tables import delta_and_decimals
from rise_jax.workdir import Workdir

FLAGS = flags.FLAGS


class CompareError(RiseError):
    """A workdir that cannot be compared: missing, empty of artefacts, or unreadable."""


def _read(path: str, what: str) -> dict[str, Any] | None:
    return read_json_object(path, what, CompareError) if os.path.isfile(path) else None


class Run:
    """The artefacts of one workdir that a comparison reads."""

    def __init__(self, root: str, label: str):
        if not os.path.isdir(root):
            raise CompareError(f"{root}: no such workdir")
        self.label = label
        self.wd = Workdir(os.path.abspath(root))
        self.records = self._records()
        self.selection = _read(self.wd.selection, "selection")
        self.results = _read(self.wd.eval_results, "eval results")
        if not (self.records or self.selection or self.results):
            raise CompareError(
                f"{root}: not a rise_jax workdir (no .rise/<stage>.json records, selection.json or eval/results.json)"
            )

    def _records(self) -> list[dict[str, Any]]:
        if not os.path.isdir(self.wd.records):
            return []
        out = []
        for name in sorted(os.listdir(self.wd.records)):
            path = os.path.join(self.wd.records, name)
            if name.endswith(".json") and os.path.isfile(path):
                rec = read_json_object(path, "pipeline record", CompareError)
                if "stage" in rec:
                    out.append(rec)
        return sorted(out, key=lambda r: (r.get("finished") or "", r["stage"]))

    def config(self) -> dict[str, Any]:
        """Every record's settings, flattened to dotted keys (later records win)."""
        flat: dict[str, Any] = {}
        for rec in self.records:
            flat.update(flatten(rec.get("config") or {}))
        root = self.wd.root
        return {k: v.replace(root, "{workdir}") if isinstance(v, str) else v for k, v in flat.items()}


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


MISSING = object()


def config_diff(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(key, value in a, value in b)`` for every key whose values differ (:data:`MISSING` where
    one run has no such key), sorted by key."""
    return [
        (k, a.get(k, MISSING), b.get(k, MISSING))
        for k in sorted(set(a) | set(b))
        if a.get(k, MISSING) != b.get(k, MISSING)
    ]


def _experts(sel: dict[str, Any]) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    for e in sel.get("experts", []):
        out.setdefault(int(e["layer"]), set()).add(int(e["expert"]))
    return out


def jaccard(a: set, b: set) -> float | None:
    """|a ∩ b| / |a ∪ b|; None when both are empty."""
    union = a | b
    return len(a & b) / len(union) if union else None


def selection_overlap(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """``{"layers": [{layer, a, b, shared, jaccard}], "total": {a, b, shared, jaccard}}`` of two
    ``selection.json`` artefacts (layers either selected in, ascending)."""
    ea, eb = _experts(a), _experts(b)
    layers = []
    for layer in sorted(set(ea) | set(eb)):
        sa, sb = ea.get(layer, set()), eb.get(layer, set())
        layers.append({"layer": layer, "a": len(sa), "b": len(sb), "shared": len(sa & sb), "jaccard": jaccard(sa, sb)})
    pa = {(layer, e) for layer, s in ea.items() for e in s}
    pb = {(layer, e) for layer, s in eb.items() for e in s}
    total = {"a": len(pa), "b": len(pb), "shared": len(pa & pb), "jaccard": jaccard(pa, pb)}
    return {"layers": layers, "total": total}


def primary_metric(results: dict[str, Any], task: str, scores: dict[str, Any]) -> str | None:
    """The task's primary metric (its kind from ``results["config"]``); else its first numeric score."""
    kind = (((results.get("config") or {}).get("tasks") or {}).get(task) or {}).get("kind")
    if kind in TASK_KINDS:
        return TASK_KINDS[kind].primary
    skip = {"n", "skipped", "truncated", "tokens"}
    return next((k for k, v in scores.items() if k not in skip and isinstance(v, int | float)), None)


def eval_deltas(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """``[{variant, task, language, metric, a, b}]`` for every variant, task and language both
    runs evaluated (in A's order), on the task's primary metric."""
    ra, rb = a.get("results") or {}, b.get("results") or {}
    rows = []
    for variant, tasks in ra.items():
        for task, langs in tasks.items():
            for lang, scores in langs.items():
                other = ((rb.get(variant) or {}).get(task) or {}).get(lang)
                metric = primary_metric(a, task, scores)
                if other is None or metric is None or scores.get(metric) is None or other.get(metric) is None:
                    continue
                rows.append(
                    {
                        "variant": variant,
                        "task": task,
                        "language": lang,
                        "metric": metric,
                        "a": scores[metric],
                        "b": other[metric],
                    }
                )
    return rows


def _value(v: Any) -> str:
    if v is MISSING:
        return "(absent)"
    text = "`" + repr(v).replace("|", "\\|").replace("`", "'") + "`"
    return text if len(text) <= 80 else text[:78] + "…`"


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def render(a: Run, b: Run) -> str:
    """The comparison as Markdown."""
    title = [os.path.basename(r.wd.root.rstrip(os.sep)) for r in (a, b)]
    out = [
        f"# rise_jax: {title[0]} vs {title[1]}\n",
        f"- **A** `{a.wd.root}`",
        f"- **B** `{b.wd.root}`\n",
        "## Config keys that differ\n",
    ]
    if not (a.records and b.records):
        lacking = " and ".join(r.label for r in (a, b) if not r.records)
        out.append(f"No pipeline records (`.rise/<stage>.json`) in {lacking}.\n")
    else:
        diff = config_diff(a.config(), b.config())
        if diff:
            out += ["| key | A | B |", "|---|---|---|"]
            out += [f"| `{k}` | {_value(va)} | {_value(vb)} |" for k, va, vb in diff]
            out.append("")
        else:
            out.append("The two runs' recorded settings are the same.\n")
    out.append("## Selection overlap\n")
    if not (a.selection and b.selection):
        lacking = " and ".join(r.label for r in (a, b) if not r.selection)
        out.append(f"No `selection.json` in {lacking} (the select stage has not run).\n")
    else:
        sa, sb = a.selection, b.selection
        out += ["| | A | B |", "|---|---|---|"]
        for key in ("method", "target_language", "num_selected"):
            out.append(f"| {key} | {sa.get(key, '–')} | {sb.get(key, '–')} |")
        params = sorted(set(sa.get("params") or {}) | set(sb.get("params") or {}))
        for key in params:
            va, vb = (sa.get("params") or {}).get(key, "–"), (sb.get("params") or {}).get(key, "–")
            out.append(f"| params.{key} | {va} | {vb} |")
        ov = selection_overlap(sa, sb)
        t = ov["total"]
        out += [
            "",
            f"Shared experts: **{t['shared']}** of {t['a']} (A) and {t['b']} (B); Jaccard **{_fmt(t['jaccard'])}**.\n",
            "| layer | A | B | shared | Jaccard |",
            "|---:|---:|---:|---:|---:|",
        ]
        out += [f"| {r['layer']} | {r['a']} | {r['b']} | {r['shared']} | {_fmt(r['jaccard'])} |" for r in ov["layers"]]
        out.append(f"| **total** | {t['a']} | {t['b']} | {t['shared']} | {_fmt(t['jaccard'])} |\n")
    out.append("## Eval deltas (B − A)\n")
    if not (a.results and b.results):
        lacking = " and ".join(r.label for r in (a, b) if not r.results)
        out.append(f"No `eval/results.json` in {lacking} (the eval stage has not run).\n")
    else:
        rows = eval_deltas(a.results, b.results)
        if not rows:
            out.append("The two runs share no evaluated variant, task and language.\n")
        else:
            deltas, d = delta_and_decimals([(r["b"], r["a"]) for r in rows])
            out += ["| variant | task | language | metric | A | B | B − A |", "|---|---|---|---|---:|---:|---:|"]
            for r, delta in zip(rows, deltas, strict=True):
                out.append(
                    f"| {r['variant']} | {r['task']} | {r['language']} | {r['metric']} | {r['a']:.{d}f} | "
                    f"{r['b']:.{d}f} | {delta:+.{d}f} |"
                )
            out.append("")
    return "\n".join(out)


def compare(workdir_a: str, workdir_b: str, out: str | None = None) -> tuple[str, list[str]]:
    """The Markdown comparison of two workdirs and the files written (``out``: ``compare.md`` and
    ``compare.html``; nothing written without it)."""
    a, b = Run(workdir_a, "A"), Run(workdir_b, "B")
    text = render(a, b)
    files = []
    if out is not None:
        body = html_report.markdown_to_html(text, out)
        files.append(write_text_atomic(os.path.join(out, "compare.md"), text))
        files.append(
            write_text_atomic(
                os.path.join(out, "compare.html"), html_report.page(text.splitlines()[0].lstrip("# "), body)
            )
        )
    return text, files


USAGE = "usage: python -m rise_jax.compare WORKDIR_A WORKDIR_B [--out DIR]"


def _define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    flags.DEFINE_string("out", ".", "Directory for compare.md and compare.html.", flag_values=flag_values)


def _main(argv: list[str], flag_values: flags.FlagValues = FLAGS) -> None:
    if len(argv) != 3:
        print(f"error: {USAGE}", file=sys.stderr)
        sys.exit(2)
    text, files = run_or_exit(compare, argv[1], argv[2], flag_values.out)
    print(text)
    for path in files:
        print(f"-> {path}")


def cli(argv: list[str]) -> None:
    """The command line in this process on fresh flag values (``argv[0]`` is the program name):
    errors exit as ``python -m rise_jax.compare`` does (status 2, one ``error:`` line)."""
    flag_values = flags.FlagValues()
    _define_flags(flag_values)
    try:
        rest = flag_values(argv)
    except flags.Error as err:
        print(f"error: {err}\n{USAGE}", file=sys.stderr)
        sys.exit(2)
    _main(rest, flag_values)


if __name__ == "__main__":
    _define_flags()
    app.run(_main)
