"""Run a sweep: ``python -m rise_jax.sweep --config=configs/<x>.py[:arg] --sweep=alpha --workdir=DIR``.

Each point of the sweep (``configs/sweeps.py``: a list of ``{"dotted.key": value}`` overrides) runs
the pipeline in ``DIR/<index>_<label>``. The routing statistics and analysis depend on none of the
swept selection settings, so they are computed once (first point) and hard-linked into the other
points' workdirs with their pipeline records; every point's own stages then skip them. Results:
``DIR/sweep.json`` (points, overrides, workdirs, eval results) and ``DIR/sweep.md`` (one row per point).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shutil
from typing import Any

import ml_collections
from absl import app, flags, logging

from rise_jax.io_utils import ensure_writable_dir, write_json_atomic, write_text_atomic
from rise_jax.launch import parse_flags, run, run_or_exit
from rise_jax.messages import show_messages, verbose_flag
from rise_jax.stages import REGISTRY
from rise_jax.workdir import Workdir

FLAGS = flags.FLAGS
SHARED_STAGES = ("stats", "analyze")  # depend on no swept (selection, training, eval) setting


def load_sweep(path: str, name: str) -> list[dict[str, Any]]:
    spec = importlib.util.spec_from_file_location("rise_sweeps", path)
    if spec is None or not os.path.isfile(path):
        raise ValueError(f"{path}: sweep file missing")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_sweep(name)


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


def share_stages(src: str, dst: str) -> None:
    """Hard-link the shared stages' artefact directories (those holding ``Stage.outputs``: the
    statistics and the analysis with its figures) and records from ``src`` into ``dst``."""
    a, b = Workdir(src), Workdir(dst)
    for stage in SHARED_STAGES:
        dirs = sorted({os.path.dirname(p) for p in REGISTRY[stage].outputs(a)})
        pairs = [(d, os.path.join(dst, os.path.relpath(d, src))) for d in dirs]
        if not os.path.isfile(a.record(stage)) or any(os.path.exists(d) for _, d in pairs):
            continue
        for s, d in pairs:
            shutil.copytree(s, d, copy_function=os.link)
        os.makedirs(b.records, exist_ok=True)
        shutil.copyfile(a.record(stage), b.record(stage))


def run_sweep(config: ml_collections.ConfigDict, points: list[dict[str, Any]], workdir: str) -> list[dict[str, Any]]:
    ensure_writable_dir(workdir)
    summary, first = [], None
    for i, overrides in enumerate(points):
        point_dir = os.path.join(workdir, f"{i:02d}_{label(overrides)}")
        ensure_writable_dir(point_dir)
        if first is not None:
            share_stages(first, point_dir)
        logging.info(f"=== sweep point {i + 1}/{len(points)}: {overrides} -> {point_dir}")
        run(apply_overrides(config, overrides), point_dir)
        first = first or point_dir
        results_file = Workdir(point_dir).eval_results
        results = json.load(open(results_file, encoding="utf-8"))["results"] if os.path.isfile(results_file) else None
        summary.append({"overrides": overrides, "workdir": point_dir, "results": results})
        write_json_atomic(os.path.join(workdir, "sweep.json"), summary)
    write_text_atomic(os.path.join(workdir, "sweep.md"), sweep_markdown(summary))
    return summary


def sweep_markdown(summary: list[dict[str, Any]]) -> str:
    """One row per point: the overrides, then each variant/task/language's first metric."""
    columns: list[tuple[str, str, str, str]] = []
    for point in summary:
        for variant, tasks in (point["results"] or {}).items():
            for task, langs in tasks.items():
                for lang, scores in langs.items():
                    metric = next(k for k in scores if k not in ("n", "skipped", "truncated"))
                    if (variant, task, lang, metric) not in columns:
                        columns.append((variant, task, lang, metric))
    head = ["point"] + [f"{v}/{t}/{lang} {m}" for v, t, lang, m in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for point in summary:
        res = point["results"] or {}
        cells = [label(point["overrides"])]
        for v, t, lang, m in columns:
            value = res.get(v, {}).get(t, {}).get(lang, {}).get(m)
            cells.append("–" if value is None else f"{value:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    del argv
    show_messages(library_info=verbose_flag())
    points = run_or_exit(load_sweep, FLAGS.sweeps_file, FLAGS.sweep)
    run_or_exit(run_sweep, _CONFIG.value, points, os.path.abspath(FLAGS.workdir))


if __name__ == "__main__":
    from ml_collections import config_flags

    _CONFIG = config_flags.DEFINE_config_file("config", None, "ml_collections config file.")
    flags.DEFINE_string("sweep", None, "Name of a sweep in --sweeps_file.")
    flags.DEFINE_string("sweeps_file", "configs/sweeps.py", "Python file with get_sweep(name).")
    flags.DEFINE_string("workdir", None, "Root directory; one subdirectory per point.")
    flags.mark_flags_as_required(["config", "sweep", "workdir"])
    app.run(main, flags_parser=parse_flags)
