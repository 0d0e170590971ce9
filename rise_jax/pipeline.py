"""The pipeline: run the chosen stages in order, skipping those whose artefact is up to date.

Stages come from :data:`rise_jax.stages.REGISTRY` (pipeline order). A stage's *fingerprint* is
the SHA-256 of the config it depends on (``Stage.depends_on``: sections or dotted fields) and of
its inputs outside the config (``Stage.inputs``: the checkpoint's identity) and, for chained
stages, of what every earlier stage depends on — so a changed training setting changes the
fingerprints of ``train`` and every later stage but not of ``stats``. Run-length controls
(``train.max_steps``) and display settings (``progress``) are not part of it.

``<workdir>/.rise/<stage>.json`` records the fingerprint, the config it was made from, ``status``
(``running`` while it runs; ``done``; or why it stopped) and the wall time, written atomically.
A later run skips a ``done`` stage whose fingerprint matches and whose outputs exist, and resumes
an unfinished one. A stage whose fingerprint changed (or ``config.force``) reruns: its resumable
state and last results (``Stage.state``) are first set aside in ``.rise/previous/<stage>/``,
deleted once the new run completes, and put back — with the old record — if the new run fails
before writing any of them (a rejected edit destroys nothing). A stage never runs on an earlier
stage's artefacts (``Stage.reads``) that are unfinished or were made from another config: it is
refused with the reason (add that stage to ``config.stages``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

import ml_collections
from absl import logging

from rise_jax.config_values import comma_list
from rise_jax.errors import RiseError
from rise_jax.io_utils import read_json_object, write_json_atomic
from rise_jax.stages import REGISTRY
from rise_jax.stages.registry import Stage
from rise_jax.workdir import Workdir

ORDER = tuple(REGISTRY)
# Fields that change how a stage reports or how long it runs, not what it computes.
_IGNORED = {"progress", "max_steps"}


class PipelineError(RiseError, RuntimeError):
    """A stage that did not finish (e.g. interrupted training); later stages cannot run."""


def parse_stages(stages: str | list | tuple) -> list[str]:
    """Comma-separated stage names -> the list in pipeline order; unknown names are an error."""
    names = comma_list(stages)
    unknown = [s for s in names if s not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown} in config.stages; available: {', '.join(ORDER)}")
    if not names:
        raise ValueError("config.stages is empty")
    return sorted(set(names), key=ORDER.index)


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in sorted(obj.items()) if k not in _IGNORED}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _upto(stage: str) -> list[str]:
    """``stage`` and, when chained, every earlier chained stage and every unchained stage whose
    artefacts one of them reads (``eval`` steering by ``task_experts``' sets depends on its config)."""
    if not REGISTRY[stage].chained:
        return [stage]
    chain = [s for s in ORDER[: ORDER.index(stage) + 1] if REGISTRY[s].chained]
    read = {up for s in chain for up in REGISTRY[s].reads if not REGISTRY[up].chained}
    return [s for s in ORDER if s in chain or s in read]


def _dependencies(stage: str) -> list[str]:
    """What ``stage`` depends on: its own ``depends_on`` and, when chained, every earlier stage's."""
    return sorted({dep for s in _upto(stage) for dep in REGISTRY[s].depends_on})


def relevant_config(config: ml_collections.ConfigDict, stage: str) -> dict[str, Any]:
    """The config ``stage`` depends on, as a nested dict: whole sections, or single fields of a
    section when only those are depended on (``select.zone_ratios``)."""
    full = config.to_dict()
    out: dict[str, Any] = {}
    for dep in sorted(_dependencies(stage), key=lambda d: d.count(".")):  # sections before fields
        *parents, leaf = dep.split(".")
        src, dst = full, out
        for key in parents:
            src = src.get(key, {}) if isinstance(src, dict) else {}
            dst = dst.setdefault(key, {})
        if isinstance(src, dict) and leaf in src and leaf not in dst:
            dst[leaf] = _clean(src[leaf])
    inputs = {}
    for s in _upto(stage):
        if REGISTRY[s].inputs is not None:
            inputs.update(REGISTRY[s].inputs(config))
    if inputs:
        out["inputs"] = inputs
    return out


def fingerprint(relevant: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else k))
    return out


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    a, b = _flat(old), _flat(new)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def validate_stages(config: ml_collections.ConfigDict) -> list[Stage]:
    """The requested stages, each one's config validated, before any of them runs."""
    chosen = [REGISTRY[name] for name in parse_stages(config.stages)]
    for stage in chosen:
        stage.validate(config)
    return chosen


def read_record(path: str) -> dict[str, Any] | None:
    """A pipeline record, None when absent; an unreadable one is an error naming the file."""
    if not os.path.lexists(path):
        return None
    record = read_json_object(path, "pipeline record (delete it to redo that stage)", PipelineError)
    if not isinstance(record.get("fingerprint"), str):
        raise PipelineError(f"{path}: not a pipeline record (no fingerprint); delete it to redo that stage")
    return record


def _check_inputs(stage: Stage, config: ml_collections.ConfigDict, wd: Workdir, running: set[str]) -> None:
    """Refuse to run ``stage`` on artefacts of an earlier stage that did not finish or were made
    from another config than the current one (unless that stage runs first in this invocation)."""
    for up in stage.reads:
        if up in running:
            continue
        record = read_record(wd.record(up))
        if record is None:  # artefacts placed by hand (or never made): the stage itself checks them
            continue
        if record.get("status") != "done":
            raise PipelineError(
                f"stage {stage.name} needs the artefacts of stage {up}, which did not finish "
                f"({record.get('status')}); add {up} to config.stages"
            )
        missing = [p for p in REGISTRY[up].outputs(wd) if not os.path.exists(p)]
        if missing:
            raise PipelineError(
                f"stage {stage.name} needs {missing[0]}, an artefact of stage {up} that is missing; "
                f"add {up} to config.stages"
            )
        relevant = relevant_config(config, up)
        if record["fingerprint"] != fingerprint(relevant):
            keys = changed_keys(record.get("config", {}), relevant)
            raise PipelineError(
                f"stage {stage.name} would use the artefacts of stage {up}, made from another config "
                f"({', '.join(keys[:8]) or 'its inputs'}); add {up} to config.stages (or restore those settings)"
            )


def _produced(path: str) -> bool:
    return os.path.isfile(path) or (os.path.isdir(path) and bool(os.listdir(path)))


def _set_aside(stage: Stage, wd: Workdir) -> list[tuple[str, str]]:
    """Move the stage's state into ``.rise/previous/<stage>/`` (same filesystem: renames)."""
    stash = wd.path(".rise", "previous", stage.name)
    shutil.rmtree(stash, ignore_errors=True)  # left by a run that never finished: superseded
    moved = []
    for i, path in enumerate(stage.state(wd)):
        if os.path.lexists(path):
            os.makedirs(stash, exist_ok=True)
            dest = os.path.join(stash, f"{i}_{os.path.basename(path)}")
            os.replace(path, dest)
            moved.append((path, dest))
    return moved


def _put_back(stage: Stage, wd: Workdir, moved: list[tuple[str, str]]) -> bool:
    """Restore what :func:`_set_aside` moved if the new run wrote none of it; True if restored."""
    if any(_produced(path) for path in stage.state(wd)):
        return False
    for path, dest in moved:
        if os.path.isdir(path):  # created empty by the failed run
            shutil.rmtree(path)
        os.replace(dest, path)
    shutil.rmtree(wd.path(".rise", "previous", stage.name), ignore_errors=True)
    return True


def run_pipeline(
    config: ml_collections.ConfigDict, workdir: str, log: Callable[[str], None] = logging.info
) -> dict[str, str]:
    """Run ``config.stages``; returns ``{stage: "ran" | "skipped"}`` (module docstring: the rules)."""
    wd = Workdir(workdir)
    force = bool(config.get("force", False))
    outcome: dict[str, str] = {}
    stages = validate_stages(config)
    running = set()
    for stage in stages:
        relevant = relevant_config(config, stage.name)
        fp = fingerprint(relevant)
        path = wd.record(stage.name)
        previous = read_record(path)
        same = previous is not None and previous.get("fingerprint") == fp
        missing = [p for p in stage.outputs(wd) if not os.path.exists(p)]
        if same and previous.get("status") == "done" and not force and not missing:
            log(
                f"[{stage.name}] up to date (made {previous.get('finished', '?')}); skipped — force with --config.force"
            )
            outcome[stage.name] = "skipped"
            continue
        _check_inputs(stage, config, wd, running)
        moved: list[tuple[str, str]] = []
        if previous is not None and (not same or force):
            if not same:
                keys = changed_keys(previous.get("config", {}), relevant)
                log(f"[{stage.name}] config changed since its artefact was made ({', '.join(keys[:8])}); rerunning")
            moved = _set_aside(stage, wd)
        elif same and previous.get("status") == "done":
            log(f"[{stage.name}] artefact missing ({missing[0]}); rerunning")
        elif same:
            log(f"[{stage.name}] resuming an unfinished run")
        record = {"stage": stage.name, "fingerprint": fp, "config": relevant, "status": "running"}
        write_json_atomic(path, record)
        log(f"[{stage.name}] running")
        running.add(stage.name)
        t0 = time.perf_counter()
        try:
            result = stage.run(config, wd)
        except BaseException:
            if moved and _put_back(stage, wd, moved):
                write_json_atomic(path, previous)
                log(f"[{stage.name}] failed before writing anything: its previous state and results are back")
            elif previous is None and not any(_produced(p) for p in stage.state(wd) + stage.outputs(wd)):
                os.remove(path)  # nothing was made: no record claims otherwise
            raise
        seconds = time.perf_counter() - t0
        status = result.get("status") if isinstance(result, dict) else None
        if status is not None and status != "completed":
            write_json_atomic(path, {**record, "status": status})
            raise PipelineError(f"stage {stage.name} did not complete ({status}); rerun the same command to resume it")
        record.update(status="done", seconds=round(seconds, 2), finished=time.strftime("%Y-%m-%d %H:%M:%S"))
        write_json_atomic(path, record)
        shutil.rmtree(wd.path(".rise", "previous", stage.name), ignore_errors=True)
        log(f"[{stage.name}] done in {seconds:.1f} s")
        outcome[stage.name] = "ran"
    return outcome
