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
    starts; raises an error naming the field. reset: discards resumable state made under another
    config (training checkpoints, partial results). outputs: the artefacts it writes (sweeps share
    them). chained: its fingerprint includes every earlier stage's config (False for ``inspect``,
    which reads only the checkpoint).
    """

    name: str
    depends_on: tuple[str, ...]
    run: Callable[[Config, Workdir], Any]
    validate: Callable[[Config], None] = _nothing_to_check
    reset: Callable[[Workdir], None] | None = None
    outputs: Callable[[Workdir], tuple[str, ...]] = lambda wd: ()
    chained: bool = True
