"""Entry point: ``python -m rise_jax.launch --config=configs/<name>.py[:arg] --workdir=DIR``.

Runs the stages listed in ``config.stages`` in pipeline order (:mod:`rise_jax.pipeline`: stages
whose artefacts are up to date are skipped); override any config field with ``--config.a.b=value``.
String fields may hold ``{workdir}``, replaced by the absolute workdir.
"""

from __future__ import annotations

import os
import sys

import ml_collections
from absl import app, flags, logging

from rise_jax.io_utils import ensure_writable_dir
from rise_jax.pipeline import PipelineError, parse_stages, run_pipeline
from rise_jax.stages import RESETS, STAGES

FLAGS = flags.FLAGS
_CONFIG = None  # set in main() by config_flags


def _define_flags() -> None:
    global _CONFIG
    from ml_collections import config_flags

    _CONFIG = config_flags.DEFINE_config_file("config", None, "ml_collections config file (configs/<name>.py[:arg]).")
    flags.DEFINE_string("workdir", None, "Directory for the artefacts of every stage.")
    flags.mark_flags_as_required(["config", "workdir"])


def resolve_placeholders(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
    """A copy of ``config`` with ``{workdir}`` in every string field replaced by ``workdir``."""

    def walk(d: dict) -> dict:
        return {
            k: walk(v) if isinstance(v, dict) else (v.replace("{workdir}", workdir) if isinstance(v, str) else v)
            for k, v in d.items()
        }

    return ml_collections.ConfigDict(walk(config.to_dict()))


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Cheap checks that fail before any model is loaded or built; messages name the field."""
    from rise_jax.api import as_dtype
    from rise_jax.models.dispatch import resolve_impl
    from rise_jax.selection.algorithms import SelectionError
    from rise_jax.stages.eval import VARIANTS
    from rise_jax.stages.select import METHODS

    parse_stages(config.stages)
    as_dtype(config.model.dtype)
    resolve_impl(config.model.dispatch)
    if config.select.method not in METHODS:
        raise SelectionError(
            f"unknown selection method {config.select.method!r} (config.select.method); choose one of {', '.join(METHODS)}"
        )
    unknown = [v.strip() for v in config.eval.variants.split(",") if v.strip() and v.strip() not in VARIANTS]
    if unknown:
        raise ValueError(f"config.eval.variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    if not config.model.get("demo", False) and not config.model.checkpoint:
        raise ValueError("config.model.checkpoint is empty: give an HF checkpoint directory or hub id")


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, str]:
    """Validate ``config``, build the demo model when asked, then run the pipeline."""
    workdir = os.path.abspath(workdir)
    ensure_writable_dir(workdir)
    config = resolve_placeholders(config, workdir)
    validate_config(config)
    if config.model.get("demo", False):
        from rise_jax.demo.pretrain import PretrainOptions, build_demo

        _, checkpoint = build_demo(workdir, PretrainOptions(**config.demo.to_dict()))
        config.model.checkpoint = checkpoint
    return run_pipeline(config, workdir, STAGES, RESETS)


def main(argv: list[str]) -> None:
    del argv
    if not FLAGS["verbosity"].present:  # library INFO logs (orbax, absl) only when asked for
        logging.set_verbosity(logging.WARNING)
    from rise_jax.sharding import maybe_initialize_distributed

    maybe_initialize_distributed()  # multi-host jobs (launch/ scripts); no-op on one process
    try:
        run(_CONFIG.value, FLAGS.workdir)
    except (ValueError, OSError, KeyError, PipelineError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
