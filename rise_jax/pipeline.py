"""The pipeline: run the chosen stages in order, skipping those whose artefact is up to date.

Stages come from :data:`rise_jax.stages.REGISTRY` (pipeline order). A stage's *fingerprint* is
the SHA-256 of the config it depends on (``Stage.depends_on``: sections or dotted fields) and of
its inputs outside the config (``Stage.inputs``: the content identity of the checkpoint, the
tokenizer and the data files) and, for chained stages, of what every earlier stage depends on — so
a changed training setting changes the fingerprints of ``train`` and every later stage but not of
``stats``. Run-length controls (``train.max_steps``) and display settings (``progress``) are not
part of it.

The whole run holds the workdir's lock (:mod:`rise_jax.workdir_lock`). ``<workdir>/.rise/<stage>.json``
records the fingerprint, the config it was made from, ``status`` (``running`` while it runs;
``done``; or why it stopped), the wall time and the content hash of each output (``outputs``:
{path relative to the workdir: SHA-256 of the file or directory tree}), written atomically.

- A ``done`` stage whose fingerprint matches and whose outputs exist unchanged is skipped; an
  unfinished one resumes. An output whose content changed since its stage wrote it (a hand-edited
  ``selection.json``) is refused, naming the file, by that stage and by every stage that reads it.
- A stage whose fingerprint changed *keeps* its result: state, outputs and record move to
  ``.rise/kept/<stage>/<old fingerprint>/`` (with ``kept.json``: the record and where each file
  came from). If a result made under the new fingerprint is kept there, it is moved back instead of
  recomputed (outcome ``restored``): an edit that is undone costs nothing, and an unfinished one
  resumes. Once a new result completes, the ``config.keep_results`` (default 1) most recently kept
  results of the stage stay and older ones are deleted. ``config.force`` redoes a stage; its result
  so far is kept until the new one exists, and put back if the new run fails before writing any.
- A stage never runs on an earlier stage's artefacts (``Stage.reads``) that are unfinished, were
  made from another config or changed since: it is refused with the reason (add that stage to
  ``config.stages``).
- Progress: every message starts ``[<n>/<total> <stage>]``.
- In a multi-process job (:mod:`rise_jax.distributed`) process 0 alone does this bookkeeping
  (:func:`_plan`, :func:`_finish`) and tells every process the outcome; every process runs a
  device stage (``Stage.spmd``), process 0 alone a host-only one.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from typing import Any

import ml_collections
from absl import logging

from rise_jax.config_values import comma_list
from rise_jax.content_hash import json_sha256, paths_sha256, save_memo, tree_sha256
from rise_jax.distributed import agree, is_writer, on_writer
from rise_jax.errors import RiseError
from rise_jax.io_utils import read_json_object, write_json_atomic
from rise_jax.stages import REGISTRY
from rise_jax.stages.registry import Stage
from rise_jax.workdir import Workdir
from rise_jax.workdir_lock import hold_workdir

ORDER = tuple(REGISTRY)
# Fields that change how a stage reports, how long it runs or how it lays out its batches, not what
# it computes: a field name anywhere, or a dotted path (stats.pack: packed and unpacked replays
# give the same statistics; train.pack changes the batch composition and stays in).
_IGNORED = {"progress", "max_steps", "stats.pack"}


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


def _clean(obj: Any, path: str = "") -> Any:
    if isinstance(obj, dict):
        return {
            k: _clean(v, f"{path}{k}.")
            for k, v in sorted(obj.items())
            if k not in _IGNORED and f"{path}{k}" not in _IGNORED
        }
    if isinstance(obj, (list, tuple)):
        return [_clean(v, path) for v in obj]
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


def relevant_config(config: ml_collections.ConfigDict, stage: str, wd: Workdir | None = None) -> dict[str, Any]:
    """The config ``stage`` depends on, as a nested dict: whole sections, or single fields of a
    section when only those are depended on (``select.zone_ratios``), and its inputs outside the
    config (``Stage.inputs``: content identities; ``wd``, when given, is left out of data trees)."""
    full = config.to_dict()
    out: dict[str, Any] = {}
    for dep in sorted(_dependencies(stage), key=lambda d: d.count(".")):  # sections before fields
        *parents, leaf = dep.split(".")
        src, dst = full, out
        for key in parents:
            src = src.get(key, {}) if isinstance(src, dict) else {}
            dst = dst.setdefault(key, {})
        if isinstance(src, dict) and leaf in src and leaf not in dst:
            dst[leaf] = _clean(src[leaf], f"{dep}.")
    inputs = {}
    for s in _upto(stage):
        if REGISTRY[s].inputs is not None:
            inputs.update(REGISTRY[s].inputs(config, wd))
    if inputs:
        out["inputs"] = inputs
    return out


def fingerprint(relevant: dict[str, Any]) -> str:
    return json_sha256(relevant)


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


def _hash_outputs(stage: Stage, wd: Workdir) -> dict[str, str | None]:
    """Content hashes of the artefacts ``stage`` wrote (relative paths; each file is read once
    more after it was written, and later checks only ``stat`` it: :mod:`rise_jax.content_hash`)."""
    return paths_sha256(stage.outputs(wd), wd.root)


def _changed_outputs(name: str, record: dict[str, Any], wd: Workdir) -> list[str]:
    """The artefacts of stage ``name`` whose content differs from what its record says it wrote."""
    recorded = record.get("outputs") or {}
    return [
        wd.path(rel)
        for rel, digest in sorted(recorded.items())
        if digest is not None and tree_sha256(wd.path(rel)) != digest
    ]


def _changed_error(reader: str, writer: str, files: list[str], wd: Workdir) -> PipelineError:
    return PipelineError(
        f"{files[0]} changed since stage {writer} wrote it"
        + (f" (and {len(files) - 1} more)" if len(files) > 1 else "")
        + f": rerun {writer} (add it to config.stages with --config.force) or restore the file"
        + (f" before {reader}" if reader != writer else "")
        + f"; to use the edited file as it is, delete {wd.record(writer)}"
    )


def _check_inputs(stage: Stage, config: ml_collections.ConfigDict, wd: Workdir, running: set[str]) -> None:
    """Refuse to run ``stage`` on artefacts of an earlier stage that did not finish, were made
    from another config than the current one, or changed since that stage wrote them (unless
    that stage runs first in this invocation)."""
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
        relevant = relevant_config(config, up, wd)
        if record["fingerprint"] != fingerprint(relevant):
            keys = changed_keys(record.get("config", {}), relevant)
            raise PipelineError(
                f"stage {stage.name} would use the artefacts of stage {up}, made from another config "
                f"({', '.join(keys[:8]) or 'its inputs'}); add {up} to config.stages (or restore those settings)"
            )
        changed = _changed_outputs(up, record, wd)
        if changed:
            raise _changed_error(stage.name, up, changed, wd)


def _produced(path: str) -> bool:
    return os.path.isfile(path) or (os.path.isdir(path) and bool(os.listdir(path)))


def _kept_dir(wd: Workdir, stage: str, fp: str) -> str:
    return wd.path(".rise", "kept", stage, fp)


def _kept_paths(stage: Stage, wd: Workdir) -> list[str]:
    """What is kept of a stage's result: its state, outputs and ``Stage.kept`` extras, no duplicates."""
    seen: list[str] = []
    for p in (*stage.state(wd), *stage.outputs(wd), *stage.kept(wd)):
        if p not in seen:
            seen.append(p)
    return seen


def _keep(stage: Stage, wd: Workdir, record: dict[str, Any]) -> str:
    """Move the stage's current result (files and record) into ``.rise/kept/<stage>/<fingerprint>/``
    (renames on one filesystem; an entry already there for that fingerprint is superseded)."""
    dest = _kept_dir(wd, stage.name, record["fingerprint"])
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(dest)
    moved = {}
    for i, path in enumerate(_kept_paths(stage, wd)):
        if os.path.lexists(path):
            name = f"{i}_{os.path.basename(path)}"
            os.replace(path, os.path.join(dest, name))
            moved[name] = os.path.relpath(path, wd.root)
    write_json_atomic(os.path.join(dest, "kept.json"), {"record": record, "files": moved, "kept": _now()})
    os.remove(wd.record(stage.name))
    return dest


def _restore(stage: Stage, wd: Workdir, fp: str) -> dict[str, Any] | None:
    """Move a kept result of ``stage`` made under fingerprint ``fp`` back in place; its record, or
    None when none is kept (or the entry is unreadable: then it is discarded)."""
    src = _kept_dir(wd, stage.name, fp)
    index = os.path.join(src, "kept.json")
    if not os.path.isfile(index):
        shutil.rmtree(src, ignore_errors=True)
        return None
    try:
        kept = read_json_object(index, "kept result", PipelineError)
        record, files = kept["record"], kept["files"]
    except (PipelineError, KeyError, TypeError):
        shutil.rmtree(src, ignore_errors=True)
        return None
    for path in _kept_paths(stage, wd):  # anything a failed run left in place
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)
    for name, rel in files.items():
        os.makedirs(os.path.dirname(wd.path(rel)), exist_ok=True)
        os.replace(os.path.join(src, name), wd.path(rel))
    write_json_atomic(wd.record(stage.name), record)
    shutil.rmtree(src)
    return record


def _prune_kept(stage: Stage, wd: Workdir, fp: str, keep: int) -> None:
    """After ``stage`` completed under ``fp``: drop the kept entry of ``fp`` (superseded) and all
    but the ``keep`` most recently kept others."""
    root = wd.path(".rise", "kept", stage.name)
    if not os.path.isdir(root):
        return
    shutil.rmtree(os.path.join(root, fp), ignore_errors=True)
    entries = sorted(
        (os.path.getmtime(os.path.join(root, e)), e) for e in os.listdir(root) if os.path.isdir(os.path.join(root, e))
    )
    for _, name in entries[: max(0, len(entries) - keep)]:
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    if not os.listdir(root):
        os.rmdir(root)


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def _keep_count(config: ml_collections.ConfigDict) -> int:
    keep = config.get("keep_results", 1)
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
        raise PipelineError(f"config.keep_results = {keep!r}: give a whole number >= 0")
    return keep


def run_pipeline(
    config: ml_collections.ConfigDict, workdir: str, log: Callable[[str], None] = logging.info
) -> dict[str, str]:
    """Run ``config.stages`` holding the workdir's lock; returns ``{stage: "ran" | "skipped" |
    "restored"}`` (module docstring: the rules)."""
    with hold_workdir(workdir):
        try:
            return _run(config, Workdir(workdir), log)
        finally:
            save_memo()


def _run(config: ml_collections.ConfigDict, wd: Workdir, log: Callable[[str], None]) -> dict[str, str]:
    force = bool(config.get("force", False))
    keep = _keep_count(config)
    outcome: dict[str, str] = {}
    stages = agree(lambda: validate_stages(config), "validation")
    running: set[str] = set()
    for number, stage in enumerate(stages, 1):
        tag = f"[{number}/{len(stages)} {stage.name}]"
        # The bookkeeping (records, kept results) is the writer's; every process learns its outcome.
        plan = on_writer(lambda: _plan(stage, config, wd, tag, force, running, log), f"stage {stage.name}")
        if plan["action"] != "run":
            outcome[stage.name] = plan["action"]
            continue
        running.add(stage.name)
        t0 = time.perf_counter()
        result = None
        try:
            if stage.spmd or is_writer():  # a host-only stage runs once; the others wait below
                result = stage.run(config, wd)
        except BaseException:
            if is_writer():
                _undo(stage, wd, plan, tag, log)
            raise
        seconds = time.perf_counter() - t0
        status = on_writer(lambda: _finish(stage, wd, plan, result, seconds, keep, tag, log), f"stage {stage.name}")
        if status != "completed":
            raise PipelineError(f"stage {stage.name} did not complete ({status}); rerun the same command to resume it")
        outcome[stage.name] = "ran"
    return outcome


def _plan(
    stage: Stage,
    config: ml_collections.ConfigDict,
    wd: Workdir,
    tag: str,
    force: bool,
    running: set[str],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Decide what happens to ``stage`` (the module docstring's rules): ``{"action": "skipped" |
    "restored" | "run", ...}``; for ``run`` its ``running`` record is written and the plan holds
    what :func:`_undo` / :func:`_finish` need (JSON: it is handed to every process)."""
    relevant = relevant_config(config, stage.name, wd)
    fp = fingerprint(relevant)
    path = wd.record(stage.name)
    previous = read_record(path)
    if previous is not None and previous["fingerprint"] == fp and previous.get("status") == "done":
        missing = [p for p in stage.outputs(wd) if not os.path.exists(p)]
        changed = [] if missing else _changed_outputs(stage.name, previous, wd)
        if changed and not force:
            raise _changed_error(stage.name, stage.name, changed, wd)
        if not force and not missing:
            log(f"{tag} up to date (made {previous.get('finished', '?')}); skipped — force with --config.force")
            return {"action": "skipped"}
        if missing:
            log(f"{tag} artefact missing ({missing[0]}); rerunning")
    _check_inputs(stage, config, wd, running)
    if previous is not None and previous["fingerprint"] != fp:
        keys = changed_keys(previous.get("config", {}), relevant)
        _keep(stage, wd, previous)
        log(f"{tag} config changed since its artefact was made ({', '.join(keys[:8]) or 'its inputs'}); kept it")
        previous = _restore(stage, wd, fp)
        if previous is not None and previous.get("status") == "done" and not force:
            if all(os.path.exists(p) for p in stage.outputs(wd)) and not _changed_outputs(stage.name, previous, wd):
                log(f"{tag} restored the result made from this config on {previous.get('finished', '?')}")
                return {"action": "restored"}
    moved = None
    if previous is not None and force:  # redo: the result so far is kept until the new one exists
        moved = _keep(stage, wd, previous)
    elif previous is not None:
        log(f"{tag} resuming an unfinished run")
    record = {"stage": stage.name, "fingerprint": fp, "config": relevant, "status": "running"}
    write_json_atomic(path, record)
    log(f"{tag} running")
    return {"action": "run", "record": record, "moved": moved, "had_previous": previous is not None}


def _undo(stage: Stage, wd: Workdir, plan: dict[str, Any], tag: str, log: Callable[[str], None]) -> None:
    """After ``stage`` failed: put its previous result back when it wrote nothing (``force``), or
    remove a record that claims a result nothing was made of."""
    if plan["moved"] and not any(_produced(p) for p in _kept_paths(stage, wd)):
        _restore(stage, wd, plan["record"]["fingerprint"])
        log(f"{tag} failed before writing anything: its previous result is back")
    elif not plan["had_previous"] and not any(_produced(p) for p in _kept_paths(stage, wd)):
        os.remove(wd.record(stage.name))  # nothing was made: no record claims otherwise


def _finish(
    stage: Stage,
    wd: Workdir,
    plan: dict[str, Any],
    result: Any,
    seconds: float,
    keep: int,
    tag: str,
    log: Callable[[str], None],
) -> str:
    """Record how ``stage`` ended; returns its status (``completed`` or why it stopped)."""
    record = plan["record"]
    status = (result.get("status") if isinstance(result, dict) else None) or "completed"
    if status != "completed":
        write_json_atomic(wd.record(stage.name), {**record, "status": status})
        return status
    record.update(status="done", seconds=round(seconds, 2), finished=_now(), outputs=_hash_outputs(stage, wd))
    write_json_atomic(wd.record(stage.name), record)
    _prune_kept(stage, wd, record["fingerprint"], keep)
    log(f"{tag} done in {seconds:.1f} s")
    return status
