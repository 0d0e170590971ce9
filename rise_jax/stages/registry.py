"""What a pipeline stage is: the one record the pipeline, launch's validation and sweeps read.

Each stage module declares ``STAGE = Stage(...)``; :data:`rise_jax.stages.REGISTRY` lists them
in pipeline order. A stage's *fingerprint* (:mod:`rise_jax.pipeline`) hashes the config it
``depends_on`` — whole sections (``"train"``) or single fields (``"select.zone_ratios"``) — and,
for chained stages, everything every earlier stage depends on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import ml_collections

from rise_jax.workdir import Workdir

Config = ml_collections.ConfigDict


def _nothing_to_check(config: Config) -> None:
    del config


@dataclasses.dataclass(frozen=True)
class Stage:
    """One pipeline stage.

    name: the ``config.stages`` name. depends_on: config sections or dotted fields its artefacts
    are made from. run: ``run(config, workdir)`` reads earlier artefacts and writes its own; it may
    return ``{"status": ...}`` (anything but ``"completed"`` means unfinished). validate: cheap
    checks of the config (no model, no data), run for every requested stage before the first
    starts; raises an error naming the field. reads: the earlier stages whose artefacts it uses
    (the pipeline refuses to run it on artefacts that are unfinished or were made from another
    config). outputs: the artefacts it writes (a ``done`` stage whose outputs vanished reruns;
    sweeps share them). state: the paths of its resumable state and last results (training
    checkpoints, partial eval results): set aside when it reruns under another config, deleted
    once the new run completes, put back if the new run fails before writing any of them.
    inputs: ``inputs(config, workdir)``, what it is made from outside the config, as a JSON-able
    dict that changes when they change (the content identity of the checkpoint and data files,
    leaving out anything under ``workdir`` when it is not None), fingerprinted with the config.
    kept: paths beyond ``state`` and ``outputs`` that belong to its result (figures), moved with it
    when the result is kept for a later restore (:mod:`rise_jax.pipeline`). chained: its fingerprint
    includes every earlier stage's config and inputs (False for ``inspect``, which reads only the
    checkpoint). spmd: it drives the devices (replay, training, export, evaluation), so in a
    multi-process job every process runs it, each feeding its own share of every batch
    (:mod:`rise_jax.distributed`); False for a host-only stage (analysis, selection, correlation,
    the report), which the writer runs alone while the others wait.
    """

    name: str
    depends_on: tuple[str, ...]
    run: Callable[[Config, Workdir], Any]
    validate: Callable[[Config], None] = _nothing_to_check
    reads: tuple[str, ...] = ()
    outputs: Callable[[Workdir], tuple[str, ...]] = lambda wd: ()
    state: Callable[[Workdir], tuple[str, ...]] = lambda wd: ()
    inputs: Callable[[Config, Workdir | None], dict[str, Any]] | None = None
    kept: Callable[[Workdir], tuple[str, ...]] = lambda wd: ()
    chained: bool = True
    spmd: bool = True
