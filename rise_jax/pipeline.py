"""The pipeline: run the chosen stages in order, skipping those whose artefact is up to date.

Stages come from :data:`rise_jax.stages.REGISTRY` (pipeline order). A stage's *fingerprint* is
the SHA-256 of the config it depends on (``Stage.depends_on``: sections or dotted fields) and,
for chained stages, of what every earlier stage depends on — so a changed training setting changes
the fingerprints of ``train`` and every later stage but not of ``stats``. When a stage finishes,
``<workdir>/.rise/<stage>.json`` records its fingerprint, the config it was made from, ``status``
(``running`` while it runs, ``done`` after) and its wall time, written atomically. A later run
skips a ``done`` stage whose fingerprint matches and resumes a ``running`` one; a fingerprint that
does not match is reported with the keys that changed, the stage's resumable state is discarded
(``Stage.reset``) and it reruns. ``config.force`` reruns every chosen stage from scratch.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import ml_collections
from absl import logging

from rise_jax.config_values import comma_list
from rise_jax.errors import RiseError
from rise_jax.io_utils import write_json_atomic
from rise_jax.stages import REGISTRY
from rise_jax.stages.registry import Stage
from rise_jax.workdir import Workdir

ORDER = tuple(REGISTRY)
# Fields that change how a stage reports, not what it computes.
_IGNORED = {"progress"}


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


def _dependencies(stage: str) -> list[str]:
    """What ``stage`` depends on: its own ``depends_on`` and, when chained, every earlier stage's."""
    st = REGISTRY[stage]
    upto = [s for s in ORDER[: ORDER.index(stage) + 1] if REGISTRY[s].chained] if st.chained else [stage]
    return sorted({dep for s in upto for dep in REGISTRY[s].depends_on})


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


def record_path(workdir: str, stage: str) -> str:
    return Workdir(workdir).record(stage)


def validate_stages(config: ml_collections.ConfigDict) -> list[Stage]:
    """The requested stages, each one's config validated, before any of them runs."""
    chosen = [REGISTRY[name] for name in parse_stages(config.stages)]
    for stage in chosen:
        stage.validate(config)
    return chosen


def run_pipeline(
    config: ml_collections.ConfigDict, workdir: str, log: Callable[[str], None] = logging.info
) -> dict[str, str]:
    """Run ``config.stages``; returns ``{stage: "ran" | "skipped"}``.

    A stage's ``reset`` discards its resumable state (training checkpoints, partial eval results);
    it is called before a stage reruns with a different fingerprint or with ``force``, so a rerun
    never resumes from state made with another config. A stage that was interrupted with the same
    fingerprint resumes.
    """
    wd = Workdir(workdir)
    force = bool(config.get("force", False))
    outcome: dict[str, str] = {}
    for stage in validate_stages(config):
        relevant = relevant_config(config, stage.name)
        fp = fingerprint(relevant)
        path = wd.record(stage.name)
        previous = None
        try:
            with open(path, encoding="utf-8") as fh:
                previous = json.load(fh)
        except FileNotFoundError:
            pass
        same = previous is not None and previous.get("fingerprint") == fp
        if same and previous.get("status") == "done" and not force:
            log(
                f"[{stage.name}] up to date (made {previous.get('finished', '?')}); skipped — force with --config.force"
            )
            outcome[stage.name] = "skipped"
            continue
        if previous is not None and (not same or force):
            if not same:
                keys = changed_keys(previous.get("config", {}), relevant)
                log(f"[{stage.name}] config changed since its artefact was made ({', '.join(keys[:8])}); rerunning")
            if stage.reset is not None:
                stage.reset(wd)
        elif same:
            log(f"[{stage.name}] resuming an unfinished run")
        record = {"stage": stage.name, "fingerprint": fp, "config": relevant, "status": "running"}
        write_json_atomic(path, record)
        log(f"[{stage.name}] running")
        t0 = time.perf_counter()
        result = stage.run(config, wd)
        seconds = time.perf_counter() - t0
        status = result.get("status") if isinstance(result, dict) else None
        if status is not None and status != "completed":
            raise PipelineError(f"stage {stage.name} did not complete ({status}); rerun the same command to resume it")
        record.update(status="done", seconds=round(seconds, 2), finished=time.strftime("%Y-%m-%d %H:%M:%S"))
        write_json_atomic(path, record)
        log(f"[{stage.name}] done in {seconds:.1f} s")
        outcome[stage.name] = "ran"
    return outcome
