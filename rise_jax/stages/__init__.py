"""Pipeline stages: each ``run(config, workdir)`` reads earlier artefacts and writes its own."""

from __future__ import annotations

from collections.abc import Callable

from rise_jax.stages import analyze, eval, export, inspect, report, select, stats, train

STAGES: dict[str, Callable] = {
    "inspect": inspect.run,
    "stats": stats.run,
    "analyze": analyze.run,
    "select": select.run,
    "train": train.run,
    "export": export.run,
    "eval": eval.run,
    "report": report.run,
}

# Discard a stage's resumable state before it reruns under another config (rise_jax.pipeline).
RESETS: dict[str, Callable[[str], None]] = {"train": train.reset, "eval": eval.reset}
