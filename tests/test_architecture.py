"""The rooms of the package import only what docs/ARCHITECTURE.md says they may."""

import ast
import os

import rise_jax

PACKAGE = os.path.dirname(os.path.abspath(rise_jax.__file__))
BASE = {
    "errors",
    "config_values",
    "zones",
    "workdir",
    "io_utils",
    "messages",
    "content_hash",
    "workdir_lock",
    "distributed",
    "sweep_points",
}  # import nothing but each other
ALLOWED = {
    "models": {"errors"},
    "checkpoints": {"models"},
    "tokenizer": set(),
    "data": set(),
    "routing": {"models", "data"},
    "selection": {"models"},
    "training": {"models", "data", "checkpoints"},  # a method's export (PEFT) and original weights
    "evaluation": {"models", "data"},
    "reporting": set(),
    "demo": {"models", "checkpoints", "data"},
    "testbed": {"models", "checkpoints", "training", "demo"},  # pretraining: the demo's corpus, orbax state
    "api": {"models", "checkpoints", "sharding"},  # load_model(mesh=...) places by sharding.py's rules
    "sharding": {"models"},
    "hlo_collectives": set(),
    "configs": {"selection", "training", "evaluation", "data"},
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
        "configs",  # the arms stage runs a sweep of configs/sweeps.py
        "testbed",
    },
    "pipeline": {"stages"},
    # stages.build: model settings; --list names the configs and the registries of methods and tasks
    "launch": {
        "pipeline",
        "stages",
        "api",
        "models",
        "sharding",
        "configs",
        "selection",
        "training",
        "evaluation",
    },
    "compare": {"launch", "evaluation", "reporting"},
    "sweep": {"launch", "stages", "reporting"},
    "study": {"launch", "sweep", "reporting", "testbed"},
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
    shared = {"common", "registry", "build"}
    bad = [
        f"{module} imports {target}"
        for room, module, target in _imports()
        if room == "stages"
        and target.startswith("rise_jax.stages.")
        and target.split(".")[2] not in shared
        and module not in ("rise_jax.stages.__init__", "rise_jax.stages")
    ]
    assert not bad, bad


BUILDER = "rise_jax.stages.build"
MODEL_MAKERS = {"load_model", "load_hf_checkpoint", "MoEModel", "RuntimeOptions"}


def test_stages_build_the_model_only_through_the_one_builder():
    """Every stage gets its model from ``stages/build.py`` (``build_model`` / ``abstract_params``):
    no other stage module names ``load_model``, ``load_hf_checkpoint``, ``MoEModel`` or
    ``RuntimeOptions`` (imported, called or constructed)."""
    bad = []
    stages = os.path.join(PACKAGE, "stages")
    for name in sorted(os.listdir(stages)):
        module = f"rise_jax.stages.{name[:-3]}"
        if not name.endswith(".py") or module == BUILDER:
            continue
        tree = ast.parse(open(os.path.join(stages, name), encoding="utf-8").read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                names = {a.name for a in node.names}
            elif isinstance(node, ast.Name):
                names = {node.id}
            elif isinstance(node, ast.Attribute):
                names = {node.attr}
            else:
                continue
            bad += [f"{module}:{node.lineno} uses {n}" for n in names & MODEL_MAKERS]
    assert not bad, bad


def test_the_builder_is_the_one_place_model_settings_are_resolved():
    """``frozen_dtype`` / ``frozen_groups`` / ``dispatch`` are read from the config by the builder
    only (launch validates through it), and ``"auto"`` is resolved by ``RuntimeOptions.impl``."""
    readers = []
    for dirpath, _, files in os.walk(PACKAGE):
        for name in files:
            path = os.path.join(dirpath, name)
            if not name.endswith(".py") or path.endswith(os.path.join("stages", "build.py")):
                continue
            for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
                reads = isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load)
                if reads and node.attr in ("frozen_dtype", "frozen_groups", "dispatch"):
                    inner = node.value
                    if isinstance(inner, ast.Attribute) and inner.attr == "model":  # config.model.<setting>
                        readers.append(f"{os.path.relpath(path, PACKAGE)}:{node.lineno} reads model.{node.attr}")
    assert not readers, readers
    resolvers = []
    for dirpath, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                text = open(os.path.join(dirpath, name), encoding="utf-8").read()
                resolvers += [f"{name}" for _ in range(text.count("resolve_impl("))]
    assert sorted(resolvers) == ["dispatch.py", "dispatch.py", "transformer.py"], resolvers
