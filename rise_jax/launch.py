"""Entry point: ``python -m rise_jax.launch --config=configs/<name>.py[:arg] --workdir=DIR``.

Runs the stages listed in ``config.stages`` in pipeline order (:mod:`rise_jax.pipeline`: stages
whose artefacts are up to date are skipped); override any config field with ``--config.a.b=value``.
String fields may hold ``{workdir}``, replaced by the absolute workdir.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import ml_collections
from absl import app, flags

from rise_jax.errors import RiseError
from rise_jax.io_utils import ensure_writable_dir
from rise_jax.messages import show_messages, verbose_flag
from rise_jax.pipeline import run_pipeline, validate_stages
from rise_jax.workdir import Workdir

FLAGS = flags.FLAGS
_CONFIG = None  # set in main() by config_flags


def _define_flags(flag_values: flags.FlagValues = FLAGS, argv: list[str] | None = None):
    """Define ``--config`` and ``--workdir`` on ``flag_values`` (the ``--config.a.b`` overrides are
    found in ``argv``, default ``sys.argv``); returns the config flag's holder."""
    global _CONFIG
    from ml_collections import config_flags

    holder = config_flags.DEFINE_config_file(
        "config",
        None,
        "ml_collections config file (configs/<name>.py[:arg]).",
        flag_values=flag_values,
        sys_argv=argv,
    )
    flags.DEFINE_string("workdir", None, "Directory for the artefacts of every stage.", flag_values=flag_values)
    flags.mark_flags_as_required(["config", "workdir"], flag_values=flag_values)
    if flag_values is FLAGS:
        _CONFIG = holder
    return holder


def resolve_placeholders(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
    """A copy of ``config`` with ``{workdir}`` in every string field replaced by ``workdir``."""

    def walk(d: dict) -> dict:
        return {
            k: walk(v) if isinstance(v, dict) else (v.replace("{workdir}", workdir) if isinstance(v, str) else v)
            for k, v in d.items()
        }

    return ml_collections.ConfigDict(walk(config.to_dict()))


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Cheap checks that fail before any model is loaded or built; messages name the field: the
    model settings every stage shares, then each requested stage's own (``Stage.validate``)."""
    from rise_jax.stages.build import model_settings

    model_settings(config)  # dtype, frozen storage, dispatch: resolved as every stage builds the model
    if not config.model.get("demo", False) and not config.model.checkpoint:
        raise ValueError("config.model.checkpoint is empty: give an HF checkpoint directory or hub id")
    validate_stages(config)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, str]:
    """Validate ``config``, build the demo model when asked, then run the pipeline (its messages
    on stdout, :mod:`rise_jax.messages`)."""
    show_messages(library_info=verbose_flag())
    workdir = os.path.abspath(workdir)
    ensure_writable_dir(workdir)
    config = resolve_placeholders(config, workdir)
    validate_config(config)
    if config.model.get("demo", False):
        from rise_jax.demo.pretrain import PretrainOptions, build_demo

        _, checkpoint = build_demo(Workdir(workdir), PretrainOptions(**config.demo.to_dict()))
        config.model.checkpoint = checkpoint
    return run_pipeline(config, workdir)


# What the CLI reports as one line: the project's own errors, and bad values / missing files /
# unknown keys raised by the libraries it drives (ml_collections, json, the OS).
USER_ERRORS = (RiseError, ValueError, OSError, KeyError)


def run_or_exit(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``; an error in :data:`USER_ERRORS` is printed as one ``error: ...`` line on
    stderr and exits with status 2 (anything else is a bug and keeps its traceback)."""
    try:
        return fn(*args)
    except USER_ERRORS as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str]) -> None:
    del argv
    from rise_jax.sharding import maybe_initialize_distributed

    maybe_initialize_distributed()  # multi-host jobs (launch/ scripts); no-op on one process
    run_or_exit(run, _CONFIG.value, FLAGS.workdir)


def parse_flags(argv: list[str], flag_values: flags.FlagValues = FLAGS) -> list[str]:
    """absl's flag parsing, with a config override that names no field or has the wrong type
    (raised by ml_collections while parsing) reported as one line instead of a traceback."""
    try:
        return flag_values(argv)
    except flags.Error as err:
        print(f"error: {err}\nPass --helpfull to see the flags.", file=sys.stderr)
        sys.exit(2)
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        key = str(err.args[0] if err.args else err).strip("\"'")
        culprit = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.") and f".{key}" in a.split("=")[0]]
        where = culprit[0] if culprit else "a --config override"
        print(f"error: {where}: no config field {key!r} (or a value of the wrong type)", file=sys.stderr)
        sys.exit(2)


def cli(argv: list[str]) -> None:
    """The command line in this process, on fresh flag values (``argv[0]`` is the program name):
    parsing, validation and the run report errors and exit exactly as ``python -m rise_jax.launch``
    does (``SystemExit`` with status 2 and one ``error:`` line). For tests and notebooks."""
    flag_values = flags.FlagValues()
    config = _define_flags(flag_values, argv)
    parse_flags(argv, flag_values)
    run_or_exit(run, config.value, flag_values.workdir)


if __name__ == "__main__":
    _define_flags()
    app.run(main, flags_parser=parse_flags)
