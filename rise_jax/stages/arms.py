"""Stage ``arms``: other ways of adapting the model, trained and evaluated beside this run's own.

``arms.sweep`` names a sweep of ``rise_jax/configs/sweeps.py`` (``routing_alignment``: RISE,
RISE + the routing-alignment term, the routers + the term, steering at inference). Each of its
points is an *arm*: this run's config with the point's overrides.

- An arm whose overrides other than ``eval.variants`` are this run's own settings, and whose
  variants this run evaluated, *is* this run: its results are read from ``eval/results.json``.
- Every other arm trains and evaluates in ``arms/<index>_<label>/``, a workdir of its own that
  holds hard links to this run's routing statistics, analysis, task experts and selection, so every
  arm adapts the same experts chosen from the same replay. It evaluates only its adapted variants
  (not ``eval.baseline``) on ``arms.eval_run`` (default ``eval.run``); the baseline is this
  run's, so every task of ``arms.eval_run`` must be one this run evaluates.

The stage is chained (its fingerprint holds every earlier stage's config) and the sweep's points
are among its inputs; an interrupted arm resumes its training from its own checkpoints.

Artefacts: ``arms/arms.json`` (``[{overrides, workdir, results}]``, one entry per arm, in
the sweep's order; ``results`` as ``eval/results.json`` holds them, the baseline included),
``arms/arms.md`` (one row per arm, each variant/task/language's first metric); when the arms
were scored with the ``routing_divergence`` task, the routing-alignment comparison
(:mod:`rise_jax.reporting.alignment`): ``arms/alignment.json``, ``alignment_gain.png``,
``alignment_divergence.png``, and a section of ``arms.md``. The report shows them.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import ml_collections
from absl import logging

from rise_jax.config_values import comma_list, get_field
from rise_jax.configs.sweeps import get_sweep
from rise_jax.distributed import on_writer
from rise_jax.errors import RiseError, SettingError
from rise_jax.io_utils import ensure_writable_dir, read_json_object, write_json_atomic, write_text_atomic
from rise_jax.reporting import alignment
from rise_jax.stages.registry import Stage
from rise_jax.sweep_points import apply_overrides, label, sweep_markdown
from rise_jax.workdir import Workdir


class ArmsError(RiseError, ValueError):
    """A bad ``config.arms`` or an arm that cannot be built from this run."""


VARIANTS_KEY = "eval.variants"


def _stage(name: str) -> Stage:
    """Another stage's record, through the registry (stages never import each other)."""
    from rise_jax import stages  # the registry imports this module

    return stages.REGISTRY[name]


def _arm_config(config: ml_collections.ConfigDict, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
    """The arm's config: the point's overrides, its adapted variants only, ``arms.eval_run``."""
    try:
        arm = apply_overrides(config, overrides)
    except KeyError as err:
        raise ArmsError(f"config.arms.sweep = {config.arms.sweep!r}: {err.args[0]}") from None
    arm.eval.variants = ",".join(v for v in comma_list(arm.eval.variants) if v != config.eval.baseline)
    arm.eval.run = config.arms.eval_run or config.eval.run
    return arm


def is_this_run(config: ml_collections.ConfigDict, overrides: dict[str, Any]) -> bool:
    """The point asks for nothing this run did not do: every override but ``eval.variants`` equals
    this run's value, and its variants are among this run's."""
    for key, value in overrides.items():
        try:
            ours = get_field(config, key)
        except SettingError:
            return False
        if key == VARIANTS_KEY:
            if not set(comma_list(value)) <= set(comma_list(config.eval.variants)):
                return False
        elif ours != value:
            return False
    return True


def validate(config: ml_collections.ConfigDict) -> None:
    c = config.arms
    if not c.sweep:
        raise ArmsError(
            "config.arms.sweep is empty: name a sweep of rise_jax/configs/sweeps.py "
            "(e.g. routing_alignment), or leave 'arms' out of config.stages"
        )
    try:
        points = get_sweep(c.sweep)
    except ValueError as err:
        raise ArmsError(f"config.arms.sweep: {err}") from None
    missing = [t for t in comma_list(c.eval_run) if t not in comma_list(config.eval.run)]
    if missing:
        raise ArmsError(
            f"config.arms.eval_run = {c.eval_run!r}: {missing} not in config.eval.run = "
            f"{config.eval.run!r}; the arms are compared with this run's baseline on each task, so "
            "this run must evaluate every task the arms do"
        )
    for overrides in points:
        if not is_this_run(config, overrides):
            arm = _arm_config(config, overrides)
            for stage in ("train", "eval"):
                _stage(stage).validate(arm)


def _link_shared(src: Workdir, dst: Workdir) -> None:
    """Hard links to this run's statistics, analysis, task routing and selection (read-only there)."""
    for path in (src.stats, src.analysis, src.task_routing, src.selection, src.selection_map):
        target = os.path.join(dst.root, os.path.relpath(path, src.root))
        if not os.path.exists(path) or os.path.exists(target):
            continue
        if os.path.isdir(path):
            shutil.copytree(path, target, copy_function=os.link)
        else:
            os.link(path, target)


def _results(path: str) -> dict[str, Any]:
    return read_json_object(path, "eval results", ArmsError).get("results") or {}


def run(config: ml_collections.ConfigDict, wd: Workdir) -> dict[str, Any]:
    points = get_sweep(config.arms.sweep)
    ensure_writable_dir(wd.arms)
    own = _results(wd.eval_results)
    baseline = config.eval.baseline
    summary = []
    for i, overrides in enumerate(points):
        if is_this_run(config, overrides):
            wanted = comma_list(overrides.get(VARIANTS_KEY, config.eval.variants))
            logging.info(f"arm {i + 1}/{len(points)}: {overrides} is this run (its eval results)")
            summary.append({"overrides": overrides, "workdir": wd.root, "results": {v: own[v] for v in wanted}})
            continue
        arm_wd = Workdir(os.path.join(wd.arms, f"{i:02d}_{label(overrides)}"))
        ensure_writable_dir(arm_wd.root)
        on_writer(lambda arm_wd=arm_wd: _link_shared(wd, arm_wd), "the arm's links to this run's artefacts")
        logging.info(f"arm {i + 1}/{len(points)}: {overrides} -> {arm_wd.root}")
        arm = _arm_config(config, overrides)
        outcome = _stage("train").run(arm, arm_wd)
        if isinstance(outcome, dict) and outcome.get("status", "completed") != "completed":
            return outcome  # stopped (a signal): the next run resumes this arm's training
        scored = _stage("eval").run(arm, arm_wd)  # what eval/results.json holds (every process has it)
        tasks = comma_list(arm.eval.run)
        results = {baseline: {t: own[baseline][t] for t in tasks if t in own.get(baseline, {})}}
        results.update(scored)
        summary.append({"overrides": overrides, "workdir": arm_wd.root, "results": results})
        write_json_atomic(wd.arms_summary, summary)  # the arms so far
    write_json_atomic(wd.arms_summary, summary)
    text = sweep_markdown(summary)
    target = config.train.get("language", "") or config.select.target
    section = alignment.write_comparison(summary, target, wd.arms)  # arms/alignment.json + plots
    if section:
        text += "\n" + section
    write_text_atomic(wd.arms_table, text)
    logging.info(f"arms ({config.arms.sweep}, {len(points)} arms) -> {wd.arms_table}")
    return {"status": "completed"}


STAGE = Stage(
    "arms",
    ("arms",),
    run,
    validate=validate,
    reads=("stats", "analyze", "task_experts", "select", "train", "eval"),
    outputs=lambda wd: (wd.arms_summary, wd.arms_table),
    state=lambda wd: (wd.arms,),
    inputs=lambda config, wd: (
        {"arms_points": json.loads(json.dumps(get_sweep(config.arms.sweep), default=str))} if config.arms.sweep else {}
    ),
)
