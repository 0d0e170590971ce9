"""Discovery from the command line: --help, --list, --print_config, --validate_only, and config
files that cannot give a config (one ``error:`` line naming the file). In-process through
``rise_jax.launch.cli`` except one subprocess for the real entry point's --help."""

import os
import subprocess
import sys

import ml_collections
import pytest

from rise_jax import launch
from rise_jax.configs import demo
from rise_jax.configs.base import get_base_config
from rise_jax.configs.fields import FIELD_DOCS, field_doc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "configs", "demo.py")


def run_cli(capsys, *args):
    """``python -m rise_jax.launch ARGS`` in this process: (exit status, stdout, stderr)."""
    try:
        launch.cli(["rise_jax.launch", *args])
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    out = capsys.readouterr()
    return code, out.out, out.err


def _fields(config: ml_collections.ConfigDict, prefix: str = ""):
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            yield from _fields(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def test_help_exits_0_and_says_how_to_discover_the_rest(capsys):
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    for flag in ("--list", "--print_config", "--validate_only", "--config", "--workdir"):
        assert flag in out
    r = subprocess.run(
        [sys.executable, "-m", "rise_jax.launch", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0 and "--list" in r.stdout, r.stderr


def test_list_names_configs_variants_stages_sweeps_and_registries(capsys):
    from rise_jax.evaluation.tasks import TASK_KINDS
    from rise_jax.selection.methods import METHODS as SELECTION
    from rise_jax.stages import REGISTRY
    from rise_jax.stages.evaluate import VARIANTS
    from rise_jax.training.methods import METHODS as TRAINING

    code, out, err = run_cli(capsys, "--list")
    assert code == 0, err
    for name in ("demo.py", "qwen3_30b_a3b.py", "phi35_moe.py", "bandarkar.py", "gpt_oss_20b.py", "olmoe.py"):
        assert name in out
    assert "qwen3|phi|gpt_oss|olmoe" in out  # bandarkar's :arg
    assert "'full' (default) or 'test'" in out  # demo's :arg, from its get_config's refusal
    assert "target, method, k, gpus, recipe, lora, train, data" in out  # the paper configs' :arg keys
    for names in (REGISTRY, VARIANTS, TASK_KINDS, SELECTION, TRAINING, ("alpha", "ratios", "zones", "lora_rank")):
        for name in names:
            assert name in out, name


def test_every_config_field_has_a_meaning_and_no_meaning_is_stale():
    base = set(_fields(get_base_config()))
    undocumented = sorted(f for f in base | set(_fields(demo.get_config())) if field_doc(f) is None)
    assert not undocumented, undocumented
    tasks = {f.split(".", 3)[3] for f in base if f.startswith("eval.tasks.")}
    stale = [
        k
        for k in FIELD_DOCS
        if not (k in base or k.startswith("demo.") or (k.startswith("eval.tasks.*.") and k.split(".")[3] in tasks))
    ]
    assert not stale, stale


def test_print_config_shows_every_resolved_field_with_value_and_meaning(capsys, tmp_path):
    workdir = tmp_path / "never_made"
    code, out, err = run_cli(
        capsys, f"--config={DEMO}:test", "--config.select.k=7", f"--workdir={workdir}", "--print_config"
    )
    assert code == 0, err
    rows = [line for line in out.splitlines() if not line.startswith("#")]
    assert len(rows) == len(list(_fields(demo.get_config("test"))))
    assert all("  # " in r and "(no description)" not in r for r in rows)
    assert any(r.startswith("select.k = 7 ") and "number of experts selected" in r for r in rows)
    assert any(r.startswith(f"data.path = '{workdir}/pretrain/corpus/dev'") for r in rows)  # {workdir} filled
    assert not workdir.exists()


def test_validate_only_checks_every_stage_and_touches_no_workdir(capsys, tmp_path):
    workdir = tmp_path / "w"
    code, out, err = run_cli(capsys, f"--config={DEMO}", f"--workdir={workdir}", "--validate_only")
    assert code == 0, err
    assert out.startswith("ok: ") and "train" in out and "not created" in out
    assert not workdir.exists()
    code, _, err = run_cli(
        capsys, f"--config={DEMO}", f"--workdir={workdir}", "--validate_only", "--config.train.lr=-1"
    )
    assert code == 2 and "config.train.lr" in err
    assert not workdir.exists()


def test_config_and_workdir_are_asked_for_by_name(capsys, tmp_path):
    code, _, err = run_cli(capsys, f"--workdir={tmp_path}")
    assert code == 2 and "--config is required" in err
    code, _, err = run_cli(capsys, f"--config={DEMO}")
    assert code == 2 and "--workdir is required" in err


@pytest.mark.parametrize(
    "source,message",
    [
        ("import ml_collections\n\nCONFIG = ml_collections.ConfigDict()\n", "no get_config()"),
        (
            "raise RuntimeError('needs a GPU')\n\ndef get_config():\n    pass\n",
            "raises on import: RuntimeError: needs a GPU",
        ),
        ("def get_config(:\n    return None\n", "does not parse: line 1"),
        (
            "def get_config():\n    return {'seed': 1}\n",
            "get_config() returned a dict, not an ml_collections.ConfigDict",
        ),
    ],
    ids=["no_get_config", "raises_on_import", "does_not_parse", "returns_a_dict"],
)
def test_a_config_file_that_gives_no_config_is_one_line_naming_it(capsys, tmp_path, source, message):
    path = tmp_path / "bad_config.py"
    path.write_text(source)
    code, _, err = run_cli(capsys, f"--config={path}", f"--workdir={tmp_path / 'w'}")
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"error: {path}: ") and message in err, err
    assert not (tmp_path / "w").exists()


def test_the_shared_fields_file_is_named_not_blamed_on_an_override(capsys, tmp_path):
    code, _, err = run_cli(capsys, f"--config={ROOT}/configs/base.py", f"--workdir={tmp_path}")
    assert code == 2 and err.startswith(f"error: {ROOT}/configs/base.py: no get_config() (it holds shared fields")
    code, _, err = run_cli(capsys, f"--config={DEMO}:huge", f"--workdir={tmp_path}")
    assert code == 2 and "configs/demo.py:huge" in err and "'full' (default) or 'test'" in err
