"""The pipeline: run the chosen stages in order, skipping those whose artefact is up to date.

Each stage depends on some config sections (:data:`SECTIONS`) and on every stage before it in
:data:`ORDER`. A stage's *fingerprint* is the SHA-256 of those sections, its own and its
predecessors', so a changed training setting changes the fingerprints of ``train`` and every
later stage but not of ``stats``. When a stage finishes, ``<workdir>/.rise/<stage>.json`` records
its fingerprint, the sections it was made from, ``status`` (``running`` while it runs, ``done``
after) and its wall time, written atomically. A later run skips a ``done`` stage whose fingerprint
matches and resumes a ``running`` one; a fingerprint that does not match is reported with the keys
that changed, the stage's resumable state is discarded and it reruns. ``config.force`` reruns
every chosen stage from scratch.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from typing import Any

import ml_collections

from rise_jax.io_utils import write_json_atomic

ORDER = ("inspect", "stats", "analyze", "select", "train", "export", "eval", "report")
DEFAULT_PIPELINE = ("stats", "analyze", "select", "train", "export", "eval", "report")
SECTIONS: dict[str, tuple[str, ...]] = {
    "inspect": ("model", "inspect"),
    "stats": ("model", "demo", "data", "stats"),  # (mesh: placement only, results are equal)
    "analyze": ("analyze",),
    "select": ("select",),
    "train": ("train",),
    "export": (),
    "eval": ("eval",),
    "report": (),
}
# Fields that change how a stage reports, not what it computes.
_IGNORED = {"progress"}


class PipelineError(RuntimeError):
    """A stage that did not finish (e.g. interrupted training); later stages cannot run."""


def parse_stages(stages: str | list | tuple) -> list[str]:
    """Comma-separated stage names -> the list in pipeline order; unknown names are an error."""
    names = [s.strip() for s in (stages.split(",") if isinstance(stages, str) else stages) if s.strip()]
    unknown = [s for s in names if s not in ORDER]
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


def relevant_config(config: ml_collections.ConfigDict, stage: str) -> dict[str, Any]:
    """The config sections ``stage`` depends on: its own and those of every earlier stage."""
    upto = ORDER[: ORDER.index(stage) + 1] if stage != "inspect" else ("inspect",)
    sections = {s for st in upto for s in SECTIONS[st]}
    full = config.to_dict()
    return {s: _clean(full[s]) for s in sorted(sections) if s in full}


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


def record_path(workdir: str, stage: str) -> str:
    return os.path.join(workdir, ".rise", f"{stage}.json")


def run_pipeline(
    config: ml_collections.ConfigDict,
    workdir: str,
    stages: dict[str, Callable[[ml_collections.ConfigDict, str], Any]],
    resets: dict[str, Callable[[str], None]] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, str]:
    """Run ``config.stages``; returns ``{stage: "ran" | "skipped"}``.

    ``resets[stage](workdir)`` discards a stage's resumable state (training checkpoints, partial
    eval results); it is called before a stage reruns with a different fingerprint or with
    ``force``, so a rerun never resumes from state made with another config. A stage that was
    interrupted with the same fingerprint resumes.
    """
    resets = resets or {}
    force = bool(config.get("force", False))
    outcome: dict[str, str] = {}
    for stage in parse_stages(config.stages):
        relevant = relevant_config(config, stage)
        fp = fingerprint(relevant)
        path = record_path(workdir, stage)
        previous = None
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as fh:
                previous = json.load(fh)
        same = previous is not None and previous.get("fingerprint") == fp
        if same and previous.get("status") == "done" and not force:
            log(f"[{stage}] up to date (made {previous.get('finished', '?')}); skipped — force with --config.force")
            outcome[stage] = "skipped"
            continue
        if previous is not None and (not same or force):
            if not same:
                keys = changed_keys(previous.get("config", {}), relevant)
                log(f"[{stage}] config changed since its artefact was made ({', '.join(keys[:8])}); rerunning")
            if stage in resets:
                resets[stage](workdir)
        elif same:
            log(f"[{stage}] resuming an unfinished run")
        record = {"stage": stage, "fingerprint": fp, "config": relevant, "status": "running"}
        write_json_atomic(path, record)
        log(f"[{stage}] running")
        t0 = time.perf_counter()
        result = stages[stage](config, workdir)
        seconds = time.perf_counter() - t0
        status = result.get("status") if isinstance(result, dict) else None
        if status is not None and status != "completed":
            raise PipelineError(f"stage {stage} did not complete ({status}); rerun the same command to resume it")
        record.update(status="done", seconds=round(seconds, 2), finished=time.strftime("%Y-%m-%d %H:%M:%S"))
        write_json_atomic(path, record)
        log(f"[{stage}] done in {seconds:.1f} s")
        outcome[stage] = "ran"
    return outcome
