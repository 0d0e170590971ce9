"""Pipeline stages: each ``run(config, workdir)`` reads earlier artefacts and writes its own."""

from __future__ import annotations

from collections.abc import Callable

from rise_jax.stages import analyze, eval, export, inspect, select, stats, train

STAGES: dict[str, Callable] = {
    "inspect": inspect.run,
    "stats": stats.run,
    "analyze": analyze.run,
    "select": select.run,
    "train": train.run,
    "export": export.run,
    "eval": eval.run,
}
