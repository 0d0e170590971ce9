"""Entry point: ``python -m rise_jax.launch --config=configs/<name>.py[:arg] --workdir=DIR``.

Runs the stages listed in ``config.stages`` (comma-separated) in order; override any config field
with ``--config.a.b=value``.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from rise_jax.io_utils import ensure_writable_dir
from rise_jax.stages import STAGES

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "ml_collections config file (configs/<name>.py[:arg]).")
flags.DEFINE_string("workdir", None, "Directory for the artefacts of every stage.")
flags.mark_flags_as_required(["config", "workdir"])


def parse_stages(stages: str | list | tuple) -> list[str]:
    names = [s.strip() for s in (stages.split(",") if isinstance(stages, str) else stages) if s.strip()]
    unknown = [s for s in names if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown} in config.stages; available: {', '.join(STAGES)}")
    if not names:
        raise ValueError("config.stages is empty")
    return names


def run(config, workdir: str) -> None:
    ensure_writable_dir(workdir)
    for name in parse_stages(config.stages):
        logging.info("stage %s", name)
        STAGES[name](config, workdir)


def main(argv: list[str]) -> None:
    del argv
    try:
        run(FLAGS.config, os.path.abspath(FLAGS.workdir))
    except (ValueError, OSError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
