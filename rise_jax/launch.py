"""Entry point: ``python -m rise_jax.launch --config=configs/<name>.py[:arg] --workdir=DIR``.

Runs the stages listed in ``config.stages`` in pipeline order (:mod:`rise_jax.pipeline`: stages
whose artefacts are up to date are skipped); override any config field with ``--config.a.b=value``.
String fields may hold ``{workdir}``, replaced by the absolute workdir.

Discovery: ``--help`` (how to use it), ``--list`` (configs and their ``:arg`` variants, stages,
sweeps, eval variants, task kinds, selection and training methods), ``--print_config`` (the
resolved config, every field with its value and meaning: :mod:`rise_jax.configs.fields`) and
``--validate_only`` (every requested stage's checks; the workdir is neither created nor touched).
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import sys
import types
from collections.abc import Callable
from typing import Any

import ml_collections
from absl import app, flags

from rise_jax.distributed import agree, exit_now, initialize, multi_process, where
from rise_jax.errors import USER_ERRORS, RiseError
from rise_jax.io_utils import ensure_writable_dir
from rise_jax.messages import quiet_library_warnings, show_messages, verbose_flag
from rise_jax.pipeline import parse_stages, run_pipeline, validate_stages

FLAGS = flags.FLAGS
_CONFIG = None  # set in main() by config_flags
ROOT_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")

USAGE = """\
python -m rise_jax.launch --config=configs/<name>.py[:arg] --workdir=DIR [--config.<field>=<value> ...]

Runs the config's stages (config.stages) in pipeline order; rerunning resumes. Discover the rest:
  --list            the configs in configs/ with their :arg variants, the stages, sweeps, eval
                    variants, eval task kinds, selection and training methods
  --print_config    the resolved config of this --config (and overrides): every field, its value
                    and what it means (--workdir optional: fills {workdir})
  --validate_only   run every requested stage's checks and exit; the workdir is not created
  --helpfull        every flag, absl's included
Examples:
  python -m rise_jax.launch --config=configs/demo.py --workdir=/tmp/rise_demo
  python -m rise_jax.launch --config=configs/qwen3_30b_a3b.py:sw,topk,64 --print_config
Docs: README.md ("The pipeline (CLI)"), docs/ARCHITECTURE.md.
"""


class ConfigFileError(RiseError, ValueError):
    """A --config file that cannot give a config; the message names the file."""


def _define_flags(flag_values: flags.FlagValues = FLAGS, argv: list[str] | None = None):
    """Define the launcher's flags on ``flag_values`` (the ``--config.a.b`` overrides are found in
    ``argv``, default ``sys.argv``); returns the config flag's holder. ``--config`` / ``--workdir``
    are checked in :func:`main` (not absl-required), so ``--help`` and ``--list`` need neither."""
    global _CONFIG
    from ml_collections import config_flags

    holder = config_flags.DEFINE_config_file(
        "config",
        None,
        "ml_collections config file (configs/<name>.py[:arg]; --list names them).",
        flag_values=flag_values,
        sys_argv=argv,
    )
    flags.DEFINE_string("workdir", None, "Directory for the artefacts of every stage.", flag_values=flag_values)
    flags.DEFINE_bool(
        "list",
        False,
        "List the configs (with their :arg variants), stages, sweeps, eval variants, task kinds, "
        "selection and training methods, and exit.",
        flag_values=flag_values,
    )
    flags.DEFINE_bool(
        "print_config",
        False,
        "Print the resolved config (every field: value and meaning) and exit.",
        flag_values=flag_values,
    )
    flags.DEFINE_bool(
        "validate_only",
        False,
        "Run every requested stage's validation and exit; the workdir is not created.",
        flag_values=flag_values,
    )
    if flag_values is FLAGS:
        _CONFIG = holder
    return holder


# -- config files ------------------------------------------------------------------------------


def _config_arg(argv: list[str]) -> str | None:
    """The value of ``--config`` in ``argv`` (``--config=X`` or ``--config X``), None if absent."""
    for i, a in enumerate(argv[1:], start=1):
        if a.startswith("--config="):
            return a.split("=", 1)[1]
        if a == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _import_config_module(path: str) -> types.ModuleType:
    """The module of config file ``path``; every way it fails is a :class:`ConfigFileError` naming it."""
    if not os.path.isfile(path):
        raise ConfigFileError(f"{path}: no such config file (python -m rise_jax.launch --list names them)")
    try:
        source = open(path, encoding="utf-8").read()
        compile(source, path, "exec")
    except SyntaxError as err:
        raise ConfigFileError(f"{path}: does not parse: line {err.lineno}: {err.msg}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigFileError(f"{path}: cannot be read: {err}") from None
    name = "rise_jax_config_" + re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # noqa: BLE001 — any failure of the file is reported as one line
        raise ConfigFileError(f"{path}: raises on import: {type(err).__name__}: {err}") from None
    return module


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """``get_config(arg)`` of the config file ``spec`` (``path[:arg]``), checked: a file that is
    missing, does not parse, raises on import, has no ``get_config`` or whose ``get_config``
    raises or returns anything but a ``ConfigDict`` is a :class:`ConfigFileError` naming it."""
    path, _, arg = spec.partition(":")
    module = _import_config_module(path)
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        other = " (it holds shared fields, not a run)" if os.path.basename(path) in ("base.py", "sweeps.py") else ""
        raise ConfigFileError(
            f"{path}: no get_config(){other}; a config file defines get_config([arg]) returning an "
            "ml_collections.ConfigDict (python -m rise_jax.launch --list names them)"
        )
    try:
        config = get_config(arg) if ":" in spec else get_config()
    except Exception as err:  # noqa: BLE001 — a config's own refusal (bad :arg) or its bug, one line
        raise ConfigFileError(f"{spec}: get_config raised {type(err).__name__}: {err}") from None
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigFileError(
            f"{path}: get_config() returned a {type(config).__name__}, not an ml_collections.ConfigDict"
        )
    return config


# -- discovery -----------------------------------------------------------------------------------


def _first_sentence(doc: str | None, limit: int = 110) -> str:
    """A docstring's first sentence as one plain line (no "Entry file ..." / "Stage ``x``:" lead)."""
    text = " ".join((doc or "").strip().split("\n\n")[0].split()).replace("``", "`")
    text = re.sub(r"^(Entry file for `[^`]*`|Stage `\w+`):\s*", "", text)
    m = re.match(r"(.+?)\.(\s+[A-Z(]|$)", text)
    text = m.group(1) if m else text
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _accepted_args(name: str, module: types.ModuleType, get_config: Callable) -> list[str]:
    """What ``configs/<name>.py:arg`` accepts: the ``[:...]`` spelling and examples its docstrings
    give, and the choices its ``get_config`` names when it refuses an unknown arg."""
    docs = [
        module.__doc__ or "",
        get_config.__doc__ or "",
        sys.modules.get(get_config.__module__, module).__doc__ or "",
    ]
    text = "\n".join(docs)
    out = []
    spelled = sorted(set(re.findall(rf"{re.escape(name)}\.py\[(:[^\]]+)\]", text)) - {":arg"})
    examples = re.findall(rf"{re.escape(name)}\.py(:[^`\s\[\]]+)`", text) + re.findall(r"`(:[^`\s]+)`", text)
    named = {n for s in spelled for n in s.lstrip(":").split("|")}
    examples = [e for e in dict.fromkeys(examples) if e.lstrip(":") not in named]
    if spelled:
        out.append(" or ".join(spelled))
    if examples:
        out.append("e.g. " + ", ".join(examples))
    probe = "no_such_field=1"
    try:
        get_config(probe)
    except Exception as err:  # noqa: BLE001 — the refusal names the accepted values
        message = str(err).split("\n")[0]
        for sep in ("; ", ": "):
            tail = message.rsplit(sep, 1)[-1]
            if probe not in tail and tail != message:
                message = tail
                break
        message = re.sub(r",? got .*$", "", message)
        message = re.sub(rf"^\S*{re.escape(name)}\.py\S*\s+", "", message)
        out.append(message)
    return out


def _catalog_configs(config_dir: str) -> list[str]:
    lines = []
    for file in sorted(os.listdir(config_dir)):
        if not file.endswith(".py") or file.startswith("_"):
            continue
        path = os.path.join(config_dir, file)
        name = file[:-3]
        try:
            module = _import_config_module(path)
        except ConfigFileError as err:
            lines.append(f"  {file:<20} (unreadable: {err})")
            continue
        get_config = getattr(module, "get_config", None)
        if not callable(get_config):
            what = "sweeps (see below)" if hasattr(module, "SWEEPS") else "not a run config"
            lines.append(f"  {file:<20} {_first_sentence(module.__doc__)} [{what}]")
            continue
        lines.append(f"  {file:<20} {_first_sentence(module.__doc__)}")
        default = inspect.signature(get_config).parameters
        arg_default = next(iter(default.values())).default if default else None
        accepted = _accepted_args(name, module, get_config)
        if accepted or arg_default not in (None, inspect.Parameter.empty, ""):
            text = "; ".join(accepted)
            if arg_default not in (None, inspect.Parameter.empty, ""):
                text += f" (default {arg_default!r})"
            lines.append(f"  {'':<20}   :arg  {text}")
    return lines


def _catalog_sweeps(config_dir: str) -> list[str]:
    path = os.path.join(config_dir, "sweeps.py")
    try:
        sweeps = getattr(_import_config_module(path), "SWEEPS", {})
    except ConfigFileError as err:
        return [f"  ({err})"]
    lines = []
    for name, points in sweeps.items():
        keys = sorted({k for p in points for k in p})
        lines.append(f"  {name:<12} {len(points)} points over {', '.join(keys)}")
    return lines


def catalog(config_dir: str = ROOT_CONFIGS) -> str:
    """What ``--list`` prints: every name the command line accepts, from the registries."""
    from rise_jax.evaluation.tasks import TASK_KINDS
    from rise_jax.selection.methods import METHODS as SELECTION_METHODS
    from rise_jax.stages import REGISTRY
    from rise_jax.stages.evaluate import VARIANTS
    from rise_jax.training.methods import METHODS as TRAINING_METHODS

    default_stages = parse_stages(_base_stages())
    out = [f"Configs (--config=configs/<name>.py[:arg]; in {config_dir}):", *_catalog_configs(config_dir), ""]
    out.append("Stages (--config.stages=a,b,...; always run in this order; * = in the base config's default):")
    for name, stage in REGISTRY.items():
        doc = _first_sentence(sys.modules[stage.run.__module__].__doc__)
        out.append(f"  {'*' if name in default_stages else ' '} {name:<14} {doc}")
    out += ["", "Sweeps (python -m rise_jax.sweep --config=... --sweep=<name> --workdir=DIR; configs/sweeps.py):"]
    out += _catalog_sweeps(config_dir)
    out += ["", f"Eval variants (--config.eval.variants): {', '.join(VARIANTS)}"]
    out.append(f"Eval task kinds (--config.eval.tasks.<task>.kind): {', '.join(TASK_KINDS)}")
    out.append(f"Selection methods (--config.select.method): {', '.join(SELECTION_METHODS)}")
    out.append(f"Training methods (--config.train.method): {', '.join(TRAINING_METHODS)}")
    out.append("Every field with its value and meaning: --config=<file> --print_config")
    return "\n".join(out)


def _base_stages() -> str:
    from rise_jax.configs.base import get_base_config

    return get_base_config().stages


def format_config(config: ml_collections.ConfigDict, title: str = "") -> str:
    """Every field of ``config`` as ``path = value  # meaning`` (:mod:`rise_jax.configs.fields`)."""
    from rise_jax.configs.fields import field_doc

    rows = []

    def walk(d: Any, prefix: str) -> None:
        for key, value in d.items():
            path = f"{prefix}{key}"
            if isinstance(value, ml_collections.ConfigDict):
                walk(value, path + ".")
            else:
                rows.append((f"{path} = {value!r}", field_doc(path) or "(no description)"))

    walk(config, "")
    width = min(48, max(len(r[0]) for r in rows))
    head = [f"# {title}"] if title else []
    head.append("# override any field with --config.<field>=<value>")
    return "\n".join(head + [f"{left:<{width}}  # {doc}" for left, doc in rows])


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
    if not config.model.checkpoint:
        raise ValueError("config.model.checkpoint is empty: give an HF checkpoint directory or hub id")
    validate_stages(config)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, str]:
    """Validate ``config``, then run the pipeline (its messages on stdout, :mod:`rise_jax.messages`)."""
    show_messages(library_info=verbose_flag())
    if not str(workdir or "").strip():
        raise ValueError("the workdir is empty: name a directory for the run's artefacts (--workdir=DIR)")
    workdir = os.path.abspath(workdir)
    ensure_writable_dir(workdir)
    config = resolve_placeholders(config, workdir)
    agree(lambda: validate_config(config), "validation")  # every process checks before any works
    return run_pipeline(config, workdir)  # holds the workdir's lock (rise_jax.workdir_lock)


def _check_creatable(workdir: str) -> None:
    """The workdir exists as a writable directory or could be created; nothing is created."""
    if os.path.exists(workdir):
        if not os.path.isdir(workdir):
            raise OSError(f"workdir {workdir!r} cannot be created: it is a file")
        if not os.access(workdir, os.W_OK):
            raise OSError(f"workdir {workdir!r} is not writable")
        return
    parent = os.path.dirname(workdir)
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise OSError(f"workdir {workdir!r} cannot be created: {parent!r} is not a writable directory")


def validate_only(config: ml_collections.ConfigDict, workdir: str | None = None) -> list[str]:
    """Every check :func:`run` makes before the first stage starts, without creating or touching
    ``workdir`` (only whether it could be created is checked); returns the stages validated."""
    if workdir:
        workdir = os.path.abspath(workdir)
        _check_creatable(workdir)
        config = resolve_placeholders(config, workdir)
    validate_config(config)
    return parse_stages(config.stages)


def run_or_exit(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``; an error in :data:`USER_ERRORS` is printed as one ``error: ...`` line on
    stderr and exits with status 2 (anything else is a bug and keeps its traceback). In a
    multi-process job the line names the process, anything else is reported too (a collective
    that lost a peer: another process stopped) and the process ends at once
    (:func:`rise_jax.distributed.exit_now`): the others, waiting in a collective with it, fail at
    once instead of after JAX's shutdown timeout."""
    try:
        return fn(*args)
    except USER_ERRORS as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {where()}{message}", file=sys.stderr)
        if multi_process():
            exit_now(2)
        sys.exit(2)
    except Exception as err:
        if not multi_process():
            raise
        import traceback

        text = str(err).strip().split("\n")[0]
        lost = any(w in text for w in ("Gloo", "Connection reset", "connection", "heartbeat", "Socket closed"))
        if not lost:
            traceback.print_exc()
        why = "another process of the job stopped (its error is on its own stderr): " if lost else ""
        print(f"error: {where()}{why}{type(err).__name__}: {text}", file=sys.stderr)
        exit_now(1)


def _usage_error(message: str) -> None:
    print(f"error: {message}\nRun with --help to see how to use it.", file=sys.stderr)
    sys.exit(2)


def _main(flag_values: flags.FlagValues, holder: Any) -> None:
    """What the parsed command line asks for: --list, --print_config, --validate_only or a run."""
    if flag_values.list:
        print(catalog())
        return
    workdir = flag_values.workdir
    if holder.value is None:
        _usage_error("--config is required (python -m rise_jax.launch --list names the configs)")
    config = holder.value
    if flag_values.print_config:
        shown = resolve_placeholders(config, os.path.abspath(workdir)) if workdir else config
        filled = f"; {{workdir}} = {os.path.abspath(workdir)}" if workdir else ""
        print(format_config(shown, f"--config={_config_spec(flag_values)}{filled}"))
    if flag_values.validate_only:
        stages = run_or_exit(validate_only, config, workdir)
        where = f"; workdir {os.path.abspath(workdir)} not created" if workdir else ""
        print(f"ok: {_config_spec(flag_values)}: stages {', '.join(stages)} validated{where}")
    if flag_values.print_config or flag_values.validate_only:
        return
    if not workdir:
        _usage_error("--workdir is required (or --print_config / --validate_only, which need none)")
    run_or_exit(run, config, workdir)


def _config_spec(flag_values: flags.FlagValues) -> str:
    """``path[:arg]`` as given on the command line."""
    from ml_collections import config_flags

    try:
        return config_flags.get_config_filename(flag_values["config"])
    except Exception:  # noqa: BLE001 — only for a title
        return "<config>"


def main(argv: list[str]) -> None:
    del argv
    _main(FLAGS, _CONFIG)


LAUNCH_FLAGS = ("config", "workdir", "list", "print_config", "validate_only")
HELP_FLAGS = ("--help", "-help", "-h", "-?", "--helpshort", "--helpfull", "-helpfull")


def parse_flags(argv: list[str], flag_values: flags.FlagValues = FLAGS) -> list[str]:
    """absl's flag parsing, with ``--help`` printed here (exit 0), the --config file loaded first
    with its errors as one line naming it, and a config override that names no field or has the
    wrong type (raised by ml_collections while parsing) reported as one line instead of a traceback."""
    asked = [a for a in argv[1:] if a.split("=")[0] in HELP_FLAGS]
    if asked:
        print(USAGE)
        if any("helpfull" in a for a in asked):
            print(flag_values.get_help())
        else:
            print("Flags:")
            for name in LAUNCH_FLAGS:
                print(f"  --{name}: {flag_values[name].help}")
        sys.exit(0)
    spec = _config_arg(argv)
    if spec is not None:
        run_or_exit(load_config_file, spec)
    try:
        return flag_values(argv)
    except flags.Error as err:
        print(f"error: {err}\nPass --help to see how to use it.", file=sys.stderr)
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
    does (``SystemExit`` with status 2 and one ``error:`` line; ``--help`` exits 0). For tests and
    notebooks."""
    flag_values = flags.FlagValues()
    holder = _define_flags(flag_values, argv)
    parse_flags(argv, flag_values)
    _main(flag_values, holder)


if __name__ == "__main__":
    quiet_library_warnings()
    run_or_exit(initialize)  # a multi-process job (rise_jax.distributed), before any backend starts
    _define_flags()
    app.run(main, flags_parser=parse_flags)
