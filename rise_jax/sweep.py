"""Run a sweep: ``python -m rise_jax.sweep --config=configs/<x>.py[:arg] --sweep=alpha --workdir=DIR``.

Each point of the sweep (``configs/sweeps.py``: a list of ``{"dotted.key": value}`` overrides) runs
the pipeline in ``DIR/<index>_<label>``. The pretrained model (the demo's) and the routing
statistics and analysis depend on none of the swept selection settings, so they are computed once
(first point) and hard-linked into the other points' workdirs with their pipeline records; every
point's own stages then skip them (a point whose settings differ for one of them redoes it: its
fingerprint differs). Results:
``DIR/sweep.json`` (points, overrides, workdirs, eval results), ``DIR/sweep.md`` (one row per point,
then the plots) and ``DIR/sweep_<task>_<metric>.png`` (each task's first metric over the points,
one series per variant and language: the paper's Fig. 3-4 for the α, ρ, K and zone sweeps). When
the points were evaluated with the ``routing_divergence`` task (sweep ``routing_alignment``),
``sweep.md`` ends with the routing-alignment comparison (:mod:`rise_jax.reporting.alignment`:
``alignment.json``, ``alignment_gain.png``, ``alignment_divergence.png``).
"""

from __future__ import annotations

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
from rise_jax.reporting import alignment
from rise_jax.reporting.plots import sweep_plot
from rise_jax.stages import REGISTRY
from rise_jax.sweep_points import apply_overrides, label, point_value, result_columns, sweep_markdown  # noqa: F401 (apply_overrides, label: the sweep API)
from rise_jax.workdir import Workdir

FLAGS = flags.FLAGS
SHARED_STAGES = ("pretrain", "stats", "analyze")  # depend on no swept (selection, training, eval) setting


def load_sweep(path: str, name: str) -> list[dict[str, Any]]:
    spec = importlib.util.spec_from_file_location("rise_sweeps", path)
    if spec is None or not os.path.isfile(path):
        raise ValueError(f"{path}: sweep file missing")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_sweep(name)


def share_stages(src: str, dst: str) -> None:
    """Hard-link the shared stages' artefact directories (those holding ``Stage.outputs``: the
    pretrained model with its corpus and state, the statistics, the analysis with its figures) and
    records from ``src`` into ``dst``."""
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
    plots = sweep_plots(summary, workdir)
    text = sweep_markdown(summary, plots)
    target = config.train.get("language", "") or config.select.target
    section = alignment.write_comparison(summary, target, workdir)  # the sweep routing_alignment's
    if section:
        text += "\n" + section
    write_text_atomic(os.path.join(workdir, "sweep.md"), text)
    return summary


def _axis(summary: list[dict[str, Any]]) -> tuple[list[str], str, list[float] | None]:
    """(point labels, x label, numeric x or None). Numeric when every point overrides the same
    one key with a number (α, K); otherwise the labels are the overridden values (ρ, zones)."""
    keys = {tuple(p["overrides"]) for p in summary}
    if len(keys) == 1 and len(next(iter(keys))) == 1:
        key = next(iter(keys))[0]
        values = [p["overrides"][key] for p in summary]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            return [f"{v:g}" for v in values], key, [float(v) for v in values]

        def show(v: Any) -> str:
            return "(" + ", ".join(f"{x:.3g}" for x in v) + ")" if isinstance(v, list | tuple) else str(v)

        return [show(v) for v in values], key, None
    return [label(p["overrides"]) for p in summary], "point", None


def sweep_plots(summary: list[dict[str, Any]], workdir: str) -> list[str]:
    """``sweep_<task>_<metric>.png`` per task with results: its first metric at every point, one
    series per variant and language. Returns the file names."""
    columns = result_columns(summary)
    if not columns:
        return []
    points, xlabel, x = _axis(summary)
    files = []
    for task, metric in dict.fromkeys((t, m) for _, t, _, m in columns):
        series = {
            f"{v}/{lang}": [point_value(p, (v, t, lang, m)) for p in summary]
            for v, t, lang, m in columns
            if (t, m) == (task, metric)
        }
        name = f"sweep_{task}_{metric}.png"
        sweep_plot(points, series, os.path.join(workdir, name), f"{task}: {metric} over the sweep", xlabel, metric, x)
        files.append(name)
    return files


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
