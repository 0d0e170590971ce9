"""Pipeline stages: each ``run(config, workdir)`` reads earlier artefacts and writes its own."""

from __future__ import annotations

from collections.abc import Callable

from rise_jax.stages import inspect

STAGES: dict[str, Callable] = {"inspect": inspect.run}
