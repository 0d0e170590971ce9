"""The CLI: ``python -m rise_jax.launch`` with the inspect stage, overrides and config errors."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def launch(*args, cwd=ROOT):
    """``python -m rise_jax.launch ARGS`` in its own process (the real entry point)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, "-m", "rise_jax.launch", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def launch_here(capsys, *args):
    """The same command line in this process (``rise_jax.launch.cli``): (exit status, stderr)."""
    from rise_jax.launch import cli

    try:
        cli(["rise_jax.launch", *args])
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    return code, capsys.readouterr().err


def test_inspect_prints_and_writes_summary_and_orbax_params(tmp_path, qwen_dir):
    r = launch(
        "--config=configs/qwen3_30b_a3b.py",
        f"--config.model.checkpoint={qwen_dir}",
        "--config.model.dtype=float32",
        "--config.inspect.save_params=True",
        "--config.stages=inspect",
        f"--workdir={tmp_path}",
    )
    assert r.returncode == 0, r.stderr
    assert "zones        shallow 0-0 | middle 1-1 | deep 2-2" in r.stdout
    info = json.load(open(tmp_path / "inspect.json"))
    assert info["model_type"] == "qwen3_moe" and info["num_experts"] == 8 and info["moe_layers"] == 3
    assert info["params"]["experts"] == 3 * 8 * 3 * 32 * 16

    import orbax.checkpoint as ocp

    import rise_jax

    _, params = rise_jax.load_model(qwen_dir, dtype="float32", progress=False)
    restored = ocp.StandardCheckpointer().restore(info["params_checkpoint"], params)
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(restored), strict=True):
        np.testing.assert_array_equal(a, b)


def test_full_size_zones_and_parameter_counts_from_config_only():
    from rise_jax.stages.inspect_model import parameter_counts
    from rise_jax.zones import zone_spans as zones

    assert zones(48) == {"shallow": [0, 17], "middle": [18, 29], "deep": [30, 47]}
    assert zones(32) == {"shallow": [0, 11], "middle": [12, 19], "deep": [20, 31]}
    assert zones(4)["middle"] is None
    import rise_jax

    qwen30b = rise_jax.config_from_hf_dict(
        {
            "model_type": "qwen3_moe",
            "vocab_size": 151936,
            "hidden_size": 2048,
            "intermediate_size": 6144,
            "moe_intermediate_size": 768,
            "num_hidden_layers": 48,
            "num_attention_heads": 32,
            "num_key_value_heads": 4,
            "head_dim": 128,
            "num_experts": 128,
            "num_experts_per_tok": 8,
            "norm_topk_prob": True,
            "rope_theta": 1000000.0,
        }
    )
    counts = parameter_counts(qwen30b)
    assert 30.4e9 < counts["total"] < 30.6e9  # "30.5B in total"
    assert 3.2e9 < counts["active_per_token"] < 3.4e9  # "3.3B activated"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--config.stages=inspect,nosuch"], "unknown stage(s) ['nosuch']"),
        (["--config.model.nosuchkey=1"], "nosuchkey"),
        (
            ["--config.stages=stats", "--config.model.checkpoint=/does/not/exist"],
            "/does/not/exist: checkpoint directory does not exist",
        ),
        (["--config.model.dtype=int8"], "unknown dtype 'int8'"),
        (["--config.model.dispatch=magic"], "unknown MoE dispatch 'magic'"),
        (["--config.inspect.load_weights=maybe"], "load_weights"),
        (["--config.train.lr=fast"], "lr"),
        (["--config.select.method=magic"], "unknown selection method 'magic' (config.select.method)"),
        (["--config.eval.variants=base,tuned"], "config.eval.variants: unknown ['tuned']"),
        (["--config.model.checkpoint="], "config.model.checkpoint is empty"),
    ],
)
def test_config_errors_are_clear(tmp_path, capsys, args, message):
    code, err = launch_here(capsys, f"--config={ROOT}/configs/demo.py", f"--workdir={tmp_path}", *args)
    assert code != 0
    assert message in err


def test_unwritable_workdir_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    code, err = launch_here(capsys, f"--config={ROOT}/configs/demo.py", f"--workdir={blocker / 'sub'}")
    assert code != 0 and "cannot be created" in err


@pytest.mark.parametrize(
    "error",
    [
        "rise_jax.training.loop.TrainingError",
        "rise_jax.pipeline.PipelineError",
        "rise_jax.checkpoints.hf_load.CheckpointError",
        "rise_jax.errors.SettingError",
    ],
)
def test_every_domain_error_is_reported_as_one_line_with_status_2(capsys, error):
    """A non-finite loss (TrainingError) and every other RiseError reach the user as one line."""
    import importlib

    from rise_jax import errors
    from rise_jax.launch import run_or_exit

    module, name = error.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, errors.RiseError)

    def fail():
        raise cls("non-finite loss (nan) at micro-step 3; the last good state is checkpointed")

    with pytest.raises(SystemExit) as exit_info:
        run_or_exit(fail)
    assert exit_info.value.code == 2
    assert (
        capsys.readouterr().err == "error: non-finite loss (nan) at micro-step 3; the last good state is checkpointed\n"
    )


def test_a_bug_keeps_its_traceback():
    from rise_jax.launch import run_or_exit

    with pytest.raises(ZeroDivisionError):
        run_or_exit(lambda: 1 / 0)


def test_an_unknown_config_field_is_one_line_not_a_traceback(tmp_path, capsys):
    want = ["error: --config.model.kk: no config field 'kk' (or a value of the wrong type)"]
    r = launch("--config=configs/demo.py", f"--workdir={tmp_path}", "--config.model.kk=1")  # the real entry point
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == want
    code, err = launch_here(capsys, f"--config={ROOT}/configs/demo.py", f"--workdir={tmp_path}", "--config.model.kk=1")
    assert code == 2 and err.strip().splitlines() == want


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("train.lr", -1e-5, r"config.train.lr = -1e-05: must be >= 0"),
        ("train.epochs", 0, r"config.train.epochs = 0: must be a whole number >= 1"),
        ("train.grad_accum", 0, r"config.train.grad_accum = 0"),
        ("stats.batch_size", 0, r"config.stats.batch_size = 0"),
        ("eval.batch_size", 0, r"config.eval.batch_size = 0"),
        ("select.k", 0, r"config.select.k = 0"),
        ("select.ratios", (0.5, 0.4, 0.3), r"config.select.ratios: .*sum to 1.2 > 1"),
    ],
)
def test_every_setting_is_checked_before_any_model_is_built(tmp_path, field, value, message):
    """All requested stages' settings are validated first: nothing is built, loaded or written."""
    from rise_jax import launch as launch_lib
    from rise_jax.configs import demo
    from rise_jax.errors import RiseError

    c = demo.get_config("test")
    section, key = field.split(".")
    c[section][key] = value
    with pytest.raises(RiseError, match=message):
        launch_lib.run(c, str(tmp_path))
    assert os.listdir(tmp_path) == []  # not even the demo model was started
