"""The install holds everywhere: requirements.txt names every distribution a runtime path imports,
the test requirements name torch's CPU build, and the stated Python range is the one we run in."""

import ast
import importlib.metadata
import os
import re
import sys
import tomllib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "rise_jax")

# Test- and benchmark-only distributions: never a runtime dependency.
TEST_ONLY = {"torch", "peft", "lm-eval", "accelerate"}
# Imported by a library on a path rise_jax runs, not by rise_jax itself: the distribution, what
# needs it, and a call in rise_jax's source that proves the path is taken.
INDIRECT = {
    "jinja2": ("transformers renders chat templates with it", "apply_chat_template("),
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(path: str) -> set[str]:
    names = set()
    for line in open(path, encoding="utf-8"):
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        names.add(_norm(re.split(r"[\s;<>=!~\[@]", line, maxsplit=1)[0]))
    return names


def _runtime_imports() -> dict[str, set[str]]:
    """Top-level third-party modules imported anywhere under rise_jax/ -> the files importing them."""
    found: dict[str, set[str]] = {}
    for dirpath, _, files in os.walk(PACKAGE):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(dirpath, name)
            for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
                if isinstance(node, ast.Import):
                    modules = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.split(".")[0]
                    if top != "rise_jax" and top not in sys.stdlib_module_names:
                        found.setdefault(top, set()).add(os.path.relpath(path, ROOT))
    return found


def _runtime_distributions() -> dict[str, set[str]]:
    """Distribution (normalised) -> the files whose imports need it."""
    by_module = importlib.metadata.packages_distributions()
    out: dict[str, set[str]] = {}
    for module, files in _runtime_imports().items():
        dists = by_module.get(module)
        assert dists, f"{module} (imported by {sorted(files)}) is installed by no distribution here"
        out.setdefault(_norm(dists[0]), set()).update(files)
    return out


def _sources() -> str:
    text = []
    for dirpath, _, files in os.walk(PACKAGE):
        text += [open(os.path.join(dirpath, f), encoding="utf-8").read() for f in files if f.endswith(".py")]
    return "\n".join(text)


def test_requirements_name_every_distribution_a_runtime_path_imports():
    listed = _requirement_names(os.path.join(ROOT, "requirements.txt"))
    missing = {d: sorted(f)[:3] for d, f in _runtime_distributions().items() if d not in listed}
    assert not missing, f"imported by rise_jax but not in requirements.txt: {missing}"


@pytest.mark.parametrize("dist", sorted(INDIRECT))
def test_requirements_name_what_libraries_need_on_our_paths(dist):
    why, call = INDIRECT[dist]
    assert call in _sources(), f"no {call} in rise_jax any more: drop {dist} from INDIRECT"
    assert _norm(dist) in _requirement_names(os.path.join(ROOT, "requirements.txt")), f"{dist}: {why}"


def test_runtime_requirements_hold_no_test_only_distribution():
    listed = _requirement_names(os.path.join(ROOT, "requirements.txt"))
    assert not listed & {_norm(d) for d in TEST_ONLY}


def test_pyproject_dependencies_cover_the_runtime_imports():
    project = tomllib.load(open(os.path.join(ROOT, "pyproject.toml"), "rb"))["project"]
    declared = {_norm(re.split(r"[\s;<>=!~\[@]", d, maxsplit=1)[0]) for d in project["dependencies"]}
    needed = set(_runtime_distributions()) | {_norm(d) for d in INDIRECT}
    assert not needed - declared, f"missing from pyproject dependencies: {sorted(needed - declared)}"


def test_test_requirements_name_torch_as_its_cpu_build():
    text = open(os.path.join(ROOT, "requirements-test.txt"), encoding="utf-8").read()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in text
    pins = re.findall(r"^torch==(\S+?)(?:;\s*(.+))?$", text, flags=re.M)
    linux = [v for v, marker in pins if 'sys_platform == "linux"' in marker]
    assert linux and linux[0].endswith("+cpu"), pins
    installed = importlib.metadata.version("torch") if _installed("torch") else None
    if installed is not None and sys.platform == "linux":
        assert installed.split("+")[0] == linux[0].split("+")[0], (installed, linux)


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.version(dist)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def _version_range(spec: str) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """``">=3.11"`` or ``">=3.11,<3.14"`` -> ((3, 11), None or (3, 14)); nothing else accepted."""
    low = high = None
    for part in spec.replace(" ", "").split(","):
        m = re.fullmatch(r"(>=|<)(\d+)\.(\d+)", part)
        assert m, f"requires-python part {part!r}: use >=X.Y and <X.Y only"
        version = (int(m.group(2)), int(m.group(3)))
        low, high = (version, high) if m.group(1) == ">=" else (low, version)
    assert low is not None, spec
    return low, high


def test_the_running_python_is_inside_requires_python_and_the_classifiers():
    project = tomllib.load(open(os.path.join(ROOT, "pyproject.toml"), "rb"))["project"]
    low, high = _version_range(project["requires-python"])
    running = sys.version_info[:2]
    assert running >= low and (high is None or running < high), (running, project["requires-python"])
    minors = [
        tuple(map(int, c.rsplit(" ", 1)[1].split(".")))
        for c in project["classifiers"]
        if re.search(r"Python :: 3\.\d+$", c)
    ]
    assert minors and min(minors) == low, (minors, low)
    assert all(high is None or m < high for m in minors)
    assert running in minors, f"running Python {running} is not among the classifiers {minors}"
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    stated = f"Python {low[0]}.{low[1]}–{max(minors)[0]}.{max(minors)[1]}"
    assert stated in readme, f"README should state {stated!r}"
