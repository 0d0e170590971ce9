"""Sharded execution on 8 simulated CPU devices equals the single-device results."""

import json
import os
import subprocess
import sys

import pytest
from hf_reference import make_hf_model, save_hf_model

from rise_jax.sharding import make_mesh, param_spec

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module", params=["auto", "blocked"])  # auto = grouped_scan on CPU; blocked = the GPU default
def sharded_results(tmp_path_factory, request):
    # 8 experts, vocab 128, hidden 32: every sharded dimension divides by 8.
    path = save_hf_model(make_hf_model("qwen3_moe", seed=2), str(tmp_path_factory.mktemp("q")))
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    r = subprocess.run(
        [sys.executable, os.path.join(HERE, "sharded_check.py"), path, request.param],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_each_device_holds_an_eighth_of_the_sharded_parameters(sharded_results):
    assert sharded_results["sharded_fraction_per_device"] == pytest.approx(1 / 8)
    assert sharded_results["expert_shard_shape"] == [3, 1, 32, 16]  # [layers, E/8, H, I]
    assert sharded_results["expert_devices"] == 8


def test_replay_statistics_equal_single_device(sharded_results):
    assert sharded_results["replay_counts_equal"]
    assert sharded_results["replay_mass_err"] < 1e-4


def test_training_step_equals_single_device_with_sharded_trainables(sharded_results):
    assert sharded_results["train_loss_err"] < 1e-5
    assert sharded_results["train_weight_err"] < 1e-5
    assert sharded_results["trainable_shard_rows"] == 1  # 8 selected experts over 8 devices
    assert sharded_results["adam_mu_shard_rows"] == 1


def test_greedy_generation_equals_single_device(sharded_results):
    assert sharded_results["generation_equal"]


def test_partition_rules_and_mesh_errors():
    from jax.sharding import PartitionSpec as P

    assert param_spec(("layers", "moe", "experts", "gate_proj"), (48, 128, 2048, 768), 8) == P(
        None, "model", None, None
    )
    assert param_spec(("layers", "moe", "router"), (48, 2048, 128), 8) == P()
    assert param_spec(("layers", "attn", "o_proj", "kernel"), (48, 4096, 2048), 8) == P(None, "model", None)
    assert param_spec(("embed_tokens", "embedding"), (151936, 2048), 8) == P("model", None)
    assert param_spec(("layers", "moe", "experts", "gate_proj"), (32, 16, 4096, 6400), 3) == P()  # 16 % 3: replicated
    with pytest.raises(ValueError, match="but 1 devices are present"):
        make_mesh(model=8)


def test_new_family_leaves_get_partition_rules_that_fit_them():
    """GPT-OSS expert biases split with their experts; sinks, router bias and Qwen2-MoE's shared
    expert gate (width 1) are replicated; the shared expert splits like a dense MLP."""
    from jax.sharding import PartitionSpec as P

    assert param_spec(("layers", "moe", "experts", "down_bias"), (24, 32, 2880), 8) == P(None, "model", None)
    assert param_spec(("layers", "moe", "router_bias"), (24, 32), 8) == P()
    assert param_spec(("layers", "attn", "sinks"), (24, 64), 8) == P()
    shared = ("layers", "moe", "shared_expert", "down_proj", "kernel")
    assert param_spec(shared, (24, 5632, 2048), 8) == P(None, "model", None)
    assert param_spec(("layers", "moe", "shared_expert_gate", "kernel"), (24, 2048, 1), 8) == P()
