"""The rooms of the package import only what docs/ARCHITECTURE.md says they may."""

import ast
import os

import rise_jax

PACKAGE = os.path.dirname(os.path.abspath(rise_jax.__file__))
BASE = {"errors", "config_values", "zones", "workdir", "io_utils", "messages"}  # import nothing but each other
ALLOWED = {
    "models": {"errors"},
    "checkpoints": {"models"},
    "tokenizer": set(),
    "data": set(),
    "routing": {"models", "data"},
    "selection": {"models"},
    "training": {"models", "data"},
    "evaluation": {"models", "data"},
    "reporting": set(),
    "demo": {"models", "checkpoints", "data"},
    "api": {"models", "checkpoints", "sharding"},  # load_model(mesh=...) places by sharding.py's rules
    "sharding": {"models"},
    "hlo_collectives": set(),
    "configs": {"selection", "training"},
    "stages": {
        "models",
        "checkpoints",
        "tokenizer",
        "data",
        "routing",
        "selection",
        "training",
        "evaluation",
        "reporting",
        "api",
        "sharding",
    },
    "pipeline": {"stages"},
    "launch": {"pipeline", "api", "models", "demo", "sharding"},
    "sweep": {"launch", "stages", "reporting"},
    "__init__": {"api", "models", "tokenizer"},
}


def _imports():
    """(room, module, imported rise_jax module) for every import in the package."""
    for dirpath, _, files in os.walk(PACKAGE):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(dirpath, name)
            module = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".")
            room = module.split(".")[1]
            for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rise_jax."):
                    targets = [f"{node.module}.{a.name}" for a in node.names]
                elif isinstance(node, ast.Import):
                    targets = [a.name for a in node.names if a.name.startswith("rise_jax.")]
                else:
                    continue
                for target in targets:
                    yield room, module, target


def test_each_room_imports_only_the_rooms_it_may():
    bad = []
    for room, module, target in _imports():
        dest = target.split(".")[1]
        allowed = BASE if room in BASE else ALLOWED[room] | BASE
        if dest != room and dest not in allowed:
            bad.append(f"{module} imports {target}")
    assert not bad, bad


def test_no_stage_imports_another_stage():
    shared = {"common", "registry"}
    bad = [
        f"{module} imports {target}"
        for room, module, target in _imports()
        if room == "stages"
        and target.startswith("rise_jax.stages.")
        and target.split(".")[2] not in shared
        and module not in ("rise_jax.stages.__init__", "rise_jax.stages")
    ]
    assert not bad, bad
