"""What the family registry adds: MXFP4 experts (GPT-OSS hub checkpoints), config errors named,
and the registry's contract (every family parses and writes back its own config)."""

import json
import os

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch
from fixture_data import MGSM, TINY_VOCAB
from hf_reference import FAMILIES, hf_forward, load_hf_model, make_hf_model, padded_batch, save_hf_model
from safetensors.torch import save_file
from transformers.integrations.mxfp4 import convert_moe_packed_tensors

import rise_jax
from rise_jax.checkpoints import CheckpointError, mxfp4
from rise_jax.models.families import FAMILIES as REGISTRY
from rise_jax.models.families import config_from_hf_dict, config_to_hf_dict


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_mxfp4_dequantisation_is_bit_identical_to_transformers(dtype):
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, (3, 10, 4, 16), dtype=np.uint8)
    scales = rng.integers(100, 150, (3, 10, 4), dtype=np.uint8)
    ref = convert_moe_packed_tensors(torch.tensor(blocks), torch.tensor(scales), dtype=dtype)
    ours = mxfp4.dequantize(blocks, scales)
    assert ours.shape == tuple(ref.shape) == mxfp4.dequantized_shape(blocks.shape)
    if dtype == torch.bfloat16:
        got = ours.astype(ml_dtypes.bfloat16).view(np.uint16)
        want = ref.view(torch.int16).numpy().view(np.uint16)
    else:
        got, want = ours.view(np.uint32), ref.view(torch.int32).numpy().view(np.uint32)
    np.testing.assert_array_equal(got, want)  # bit patterns, signed zeros included


def _mxfp4_checkpoint(tmp_path, drop: str | None = None):
    """A GPT-OSS checkpoint whose experts are random MXFP4 blocks/scales (hub layout), and the HF
    model holding transformers' own dequantisation of them."""
    hf = make_hf_model("gpt_oss", seed=7, intermediate_size=32, swiglu_limit=7.0)
    cfg = hf.config
    e, h, i = cfg.num_local_experts, cfg.hidden_size, cfg.intermediate_size
    rng = np.random.default_rng(1)
    state = {k: v.contiguous() for k, v in hf.state_dict().items()}
    for layer in range(cfg.num_hidden_layers):
        experts = hf.model.layers[layer].mlp.experts
        for name, rows, cols in (("gate_up_proj", 2 * i, h), ("down_proj", h, i)):
            blocks = rng.integers(0, 256, (e, rows, cols // 32, 16), dtype=np.uint8)
            scales = rng.integers(118, 124, (e, rows, cols // 32), dtype=np.uint8)
            key = f"model.layers.{layer}.mlp.experts.{name}"
            del state[key]
            state[key + "_blocks"], state[key + "_scales"] = torch.tensor(blocks), torch.tensor(scales)
            with torch.no_grad():
                getattr(experts, name).copy_(
                    convert_moe_packed_tensors(torch.tensor(blocks), torch.tensor(scales), dtype=torch.float32)
                )
    if drop:
        del state[drop]
    path = tmp_path / "mxfp4"
    path.mkdir()
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    config = cfg.to_dict()
    config["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.self_attn"]}
    (path / "config.json").write_text(json.dumps(config))
    return str(path), hf


def test_a_checkpoint_with_mxfp4_experts_loads_and_matches_hf_logits(tmp_path):
    path, hf = _mxfp4_checkpoint(tmp_path)
    model, params = rise_jax.load_model(path, dtype="float32", progress=False)
    ids, mask = padded_batch(model.cfg.vocab_size, [14, 9], 14, [False, True], seed=3)
    ref, _ = hf_forward(hf, ids, mask)
    out = rise_jax.forward(model, params, jnp.asarray(ids), jnp.asarray(mask))
    assert np.abs(np.asarray(out.logits) - ref)[mask.astype(bool)].max() < 1e-4
    # The export writes dequantised experts and drops quantization_config: transformers loads it as is.
    out_dir = rise_jax.export_model(model, params, str(tmp_path / "export"), source_dir=path, progress=False)
    with open(os.path.join(out_dir, "config.json")) as fh:
        assert "quantization_config" not in json.load(fh)
    got, _ = hf_forward(load_hf_model(out_dir), ids, mask)
    assert np.abs(got - ref)[mask.astype(bool)].max() < 1e-5


def test_mxfp4_blocks_without_scales_are_named(tmp_path):
    path, _ = _mxfp4_checkpoint(tmp_path, drop="model.layers.1.mlp.experts.down_proj_scales")
    with pytest.raises(
        CheckpointError, match=r"down_proj_blocks' has no 'model\.layers\.1\.mlp\.experts\.down_proj_scales'"
    ):
        rise_jax.load_model(path, dtype="float32", progress=False)


def _config(family, **changes):
    config_cls, _, base = FAMILIES[family]
    d = config_cls(**base).to_dict()
    d.update(changes)
    return d


def test_an_unknown_layer_type_is_named():
    d = _config("gpt_oss", layer_types=["full_attention", "chunked_attention", "sliding_attention"])
    with pytest.raises(
        rise_jax.models.config.ConfigError, match=r"gpt.json: layer_types entry 'chunked_attention' is not known"
    ):
        config_from_hf_dict(d, source="gpt.json")


@pytest.mark.parametrize(
    "family, key", [("gpt_oss", "num_local_experts"), ("olmoe", "num_experts"), ("qwen2_moe", "num_experts")]
)
def test_a_missing_family_key_is_named(family, key):
    d = _config(family)
    del d[key]
    with pytest.raises(rise_jax.models.config.ConfigError, match=rf"c.json: required key '{key}' is missing"):
        config_from_hf_dict(d, source="c.json")


@pytest.mark.parametrize("family", sorted(REGISTRY))
def test_every_family_reads_back_the_config_it_writes(family):
    cfg = config_from_hf_dict(_config(family), source="c.json")
    again = config_from_hf_dict(config_to_hf_dict(cfg), source="written")
    assert again == cfg
    assert config_to_hf_dict(cfg)["architectures"] == [REGISTRY[family].hub_architecture]


SELECTED = [(0, 1), (0, 4), (2, 3), (2, 5)]


def _hf_expert_leaves(family, experts, e, i, read=lambda p: p.detach()):
    """Our expert leaves of expert ``e`` read from HF's fused tensors (``[in, out]``); ``read``
    picks what of each tensor (default its values; ``lambda p: p.grad`` its gradient)."""
    gu, dn = read(experts.gate_up_proj)[e].numpy(), read(experts.down_proj)[e].numpy()
    if family == "gpt_oss":  # [H, 2I] with gate/up interleaved in the columns, biases alongside
        gub = read(experts.gate_up_proj_bias)[e].numpy()
        return {
            "gate_proj": gu[:, ::2],
            "up_proj": gu[:, 1::2],
            "down_proj": dn,
            "gate_bias": gub[::2],
            "up_bias": gub[1::2],
            "down_bias": read(experts.down_proj_bias)[e].numpy(),
        }
    return {"gate_proj": gu[:i].T, "up_proj": gu[i:].T, "down_proj": dn.T}


@pytest.mark.parametrize(
    "family, dispatch",
    [("qwen3_moe", "dense"), ("qwen3_moe", "grouped_scan"), ("qwen3_moe", "blocked")]
    + [("gpt_oss", "grouped_scan"), ("gpt_oss", "blocked"), ("gpt_oss", "dense"), ("olmoe", "grouped_scan")]
    + [("qwen2_moe", "grouped_scan"), ("mixtral", "grouped_scan")],
)
def test_one_training_step_matches_hf_torch_with_only_the_selected_experts_trainable(tmp_path, family, dispatch):
    from rise_jax.training.methods import FullExperts
    from rise_jax.training.step import make_optimizer, make_steps

    hf = make_hf_model(family, seed=4)
    path = save_hf_model(hf, str(tmp_path / "ckpt"))
    hf = load_hf_model(path)
    model, params = rise_jax.load_model(path, dtype="float32", dispatch=dispatch, progress=False)
    ids, mask = padded_batch(128, [14, 9, 11], 14, [False, False, False], seed=5)
    lr, wd = 1e-2, 0.05
    # HF torch: only the expert tensors (GPT-OSS: and their biases) require grad; the unselected
    # experts' gradients are masked to zero.
    for p in hf.parameters():
        p.requires_grad_(False)
    trainable, masks = [], []
    for layer_idx, layer in enumerate(hf.model.layers):
        sel = torch.zeros(model.cfg.num_experts, dtype=torch.bool)
        sel[[e for lyr, e in SELECTED if lyr == layer_idx]] = True
        for p in layer.mlp.experts.parameters():
            p.requires_grad_(True)
            trainable.append(p)
            masks.append(sel)
    opt = torch.optim.AdamW(trainable, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd)
    out = hf(
        input_ids=torch.tensor(ids),
        attention_mask=torch.tensor(mask),
        labels=torch.tensor(np.where(mask == 1, ids, -100)),
    )
    out.loss.backward()
    for p, sel in zip(trainable, masks, strict=True):
        p.grad[~sel] = 0.0
    inter = model.cfg.moe_intermediate_size
    hf_grads = {
        (lyr, e): _hf_expert_leaves(family, hf.model.layers[lyr].mlp.experts, e, inter, lambda p: p.grad.clone())
        for lyr, e in SELECTED
    }
    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
    clipped = {
        (lyr, e): _hf_expert_leaves(family, hf.model.layers[lyr].mlp.experts, e, inter, lambda p: p.grad)
        for lyr, e in SELECTED
    }
    opt.step()  # decoupled decay also shrinks unselected slices of the fused tensors: only selected ones compared

    tx, _ = make_optimizer(lr, total_steps=1_000_000, warmup_ratio=0.0, weight_decay=wd, clip_norm=1.0)
    grad_step, apply_step, _ = make_steps(model, tx)
    initial = FullExperts.init(params, model.cfg, SELECTED)
    weights = initial.weights
    assert set(weights["layers"]) == set(model.cfg.expert_param_names)
    loss, _, grads = grad_step(initial, params, ids, mask, mask, jax.random.PRNGKey(0))
    np.testing.assert_allclose(float(loss), out.loss.item(), rtol=1e-6)
    # The gradients, relative to each tensor's scale: what the step is made of.
    rows = np.asarray(initial.slots["layers"])
    our_grads = {key: {n: np.asarray(grads["layers"][n][rows[key]]) for n in want} for key, want in hf_grads.items()}
    for (layer, e), want in hf_grads.items():
        for name, g in want.items():
            assert np.abs(our_grads[layer, e][name] - g).max() <= 1e-5 * np.abs(g).max(), (layer, e, name)
    weights, _, _ = apply_step(weights, tx.init(weights), grads, jnp.float32(1.0))
    merged = initial.replace(weights=weights).merge(params)
    experts_after = merged["layers"]["moe"]["experts"]
    # AdamW's first step moves each weight by about lr * g / (|g| + eps): where a (clipped)
    # gradient is within a few orders of eps, fp32 round-off in g decides the step, so the weights
    # are compared where |g| >= 1e-6 (100 eps) or g = 0 exactly, and elsewhere only bounded by one step (lr, decay).
    for layer, e in SELECTED:
        want = _hf_expert_leaves(family, hf.model.layers[layer].mlp.experts, e, inter)
        for name, w in want.items():
            got = np.asarray(experts_after[name][layer, e])
            g, ours = clipped[layer, e][name], our_grads[layer, e][name]
            steady = (np.abs(g) >= 1e-6) | ((g == 0) & (ours == 0))  # exact zeros: decay only, on both sides
            assert steady.mean() > 0.5, (layer, e, name)
            assert np.abs(got - w)[steady].max() < 1e-5, (layer, e, name)
            assert np.abs(got - w).max() <= 2 * lr, (layer, e, name)
            assert np.abs(got - np.asarray(params["layers"]["moe"]["experts"][name][layer, e])).max() > 1e-6, name
        before = np.asarray(params["layers"]["moe"]["experts"]["gate_proj"][layer, e])
        assert np.abs(want["gate_proj"] - before).max() > 1e-4
    # Everything not selected is bitwise what was loaded (shared experts and attention included).
    chosen = np.zeros((model.cfg.num_layers, model.cfg.num_experts), bool)
    chosen[tuple(np.asarray(SELECTED).T)] = True
    for name, leaf in experts_after.items():
        a, b = np.asarray(leaf)[~chosen], np.asarray(params["layers"]["moe"]["experts"][name])[~chosen]
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32)), name
    for key in ("attn", "input_norm"):
        for a, b in zip(
            jax.tree_util.tree_leaves(merged["layers"][key]),
            jax.tree_util.tree_leaves(params["layers"][key]),
            strict=True,
        ):
            assert np.array_equal(np.asarray(a).view(np.uint32), np.asarray(b).view(np.uint32))


@pytest.mark.parametrize("family", ["gpt_oss", "olmoe", "qwen2_moe", "mixtral"])
def test_the_whole_pipeline_runs_on_each_new_family_and_its_export_loads_in_transformers(tmp_path, family):
    from tiny_pipeline import family_pipeline_config

    from rise_jax import launch

    over = {"num_hidden_layers": 4, "vocab_size": TINY_VOCAB}
    if family == "qwen2_moe":
        over["mlp_only_layers"] = [1]  # a dense layer between MoE runs
    if family == "gpt_oss":
        over["layer_types"] = ["sliding_attention", "full_attention"] * 2
    ckpt = save_hf_model(make_hf_model(family, seed=2, **over), str(tmp_path / "ckpt"))
    c = family_pipeline_config(ckpt)
    c.eval.run = "mgsm,perplexity"  # generation too
    c.eval.tasks.mgsm.path = MGSM
    c.eval.tasks.mgsm.max_new_tokens = 6
    wd = str(tmp_path / "wd")
    launch.run(c, wd)

    summary = json.load(open(os.path.join(wd, "routing_stats", "summary.json")))
    assert summary["model"]["model_type"] == family
    assert json.load(open(os.path.join(wd, "train", "summary.json")))["status"] == "completed"
    results = json.load(open(os.path.join(wd, "eval", "results.json")))
    assert results and "trained" in json.dumps(results) and "pruned" in json.dumps(results)
    exported = os.path.join(wd, "export", "hf")
    model, params = rise_jax.load_model(exported, dtype="float32", progress=False)
    ids, mask = padded_batch(model.cfg.vocab_size, [10, 7], 10, [False, True], seed=1)
    ref, _ = hf_forward(load_hf_model(exported), ids, mask)
    ours = np.asarray(rise_jax.forward(model, params, jnp.asarray(ids), jnp.asarray(mask)).logits)
    assert np.abs(ours - ref)[mask.astype(bool)].max() < 1e-4
    # Training moved exactly the selected experts.
    _, base_params = rise_jax.load_model(ckpt, dtype="float32", progress=False)
    sel = json.load(open(os.path.join(wd, "selection.json")))["experts"]
    moved = {
        (layer, e)
        for run, sub in params.items()
        if "moe" in sub
        for layer, e in zip(
            *np.nonzero(
                np.any(
                    np.asarray(sub["moe"]["experts"]["gate_proj"])
                    != np.asarray(base_params[run]["moe"]["experts"]["gate_proj"]),
                    axis=(2, 3),
                )
            ),
            strict=True,
        )
    }
    assert moved and len(moved) <= len(sel)


# config.json of the hub checkpoints as published (4.x spellings: rope_scaling + top-level rope_theta).
GPT_OSS_20B_HUB = {
    "architectures": ["GptOssForCausalLM"],
    "attention_bias": True,
    "eos_token_id": 200002,
    "experts_per_token": 4,
    "head_dim": 64,
    "hidden_act": "silu",
    "hidden_size": 2880,
    "initial_context_length": 4096,
    "intermediate_size": 2880,
    "layer_types": ["sliding_attention", "full_attention"] * 12,
    "max_position_embeddings": 131072,
    "model_type": "gpt_oss",
    "num_attention_heads": 64,
    "num_experts_per_tok": 4,
    "num_hidden_layers": 24,
    "num_key_value_heads": 8,
    "num_local_experts": 32,
    "pad_token_id": 199999,
    "quantization_config": {"modules_to_not_convert": ["model.layers.*.self_attn"], "quant_method": "mxfp4"},
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "beta_fast": 32.0,
        "beta_slow": 1.0,
        "factor": 32.0,
        "original_max_position_embeddings": 4096,
        "rope_type": "yarn",
        "truncate": False,
    },
    "rope_theta": 150000,
    "sliding_window": 128,
    "swiglu_limit": 7.0,
    "tie_word_embeddings": False,
    "vocab_size": 201088,
}
OLMOE_HUB = {
    "architectures": ["OlmoeForCausalLM"],
    "attention_bias": False,
    "clip_qkv": None,
    "eos_token_id": 50279,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "intermediate_size": 1024,
    "max_position_embeddings": 4096,
    "model_type": "olmoe",
    "norm_topk_prob": False,
    "num_attention_heads": 16,
    "num_experts": 64,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 16,
    "num_key_value_heads": 16,
    "pad_token_id": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "vocab_size": 50304,
}
QWEN15_MOE_HUB = {
    "architectures": ["Qwen2MoeForCausalLM"],
    "decoder_sparse_step": 1,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "max_position_embeddings": 8192,
    "max_window_layers": 21,
    "model_type": "qwen2_moe",
    "moe_intermediate_size": 1408,
    "norm_topk_prob": False,
    "num_attention_heads": 16,
    "num_experts": 60,
    "num_experts_per_tok": 4,
    "num_hidden_layers": 24,
    "num_key_value_heads": 16,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "shared_expert_intermediate_size": 5632,
    "sliding_window": 32768,
    "tie_word_embeddings": False,
    "use_sliding_window": False,
    "vocab_size": 151936,
}


@pytest.mark.parametrize("hub", [GPT_OSS_20B_HUB, OLMOE_HUB, QWEN15_MOE_HUB], ids=["gpt_oss_20b", "olmoe", "qwen15"])
def test_hub_config_files_parse_as_transformers_reads_them(hub):
    import transformers

    from rise_jax.models.layers import rope_attention_factor, rope_inv_freq
    from rise_jax.models.layout import layer_runs

    cfg = config_from_hf_dict(hub, source="hub.json")
    ref = transformers.AutoConfig.for_model(**{k: v for k, v in hub.items() if k != "quantization_config"})
    assert (cfg.num_layers, cfg.num_experts, cfg.top_k, cfg.head_dim) == (
        ref.num_hidden_layers,
        getattr(ref, "num_local_experts", getattr(ref, "num_experts", None)),
        ref.num_experts_per_tok,
        getattr(ref, "head_dim", None) or ref.hidden_size // ref.num_attention_heads,
    )
    hf_types = getattr(ref, "layer_types", None)
    sliding = [t == "sliding_attention" for t in hf_types] if hf_types else [False] * cfg.num_layers
    ours = list(cfg.sliding_layers) if cfg.sliding_layers else [cfg.uniform_window is not None] * cfg.num_layers
    assert ours == sliding
    assert len(layer_runs(cfg)) == 1  # all-MoE: one scanned run
    # RoPE: the inverse frequencies and cos/sin scale transformers computes for this config.
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    rope_type = ref.rope_parameters["rope_type"]
    if rope_type == "default":  # the modeling files' compute_default_rope_parameters
        theta = ref.rope_parameters["rope_theta"]
        inv, scale = 1.0 / (theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float) / cfg.head_dim)), 1.0
    else:
        inv, scale = ROPE_INIT_FUNCTIONS[rope_type](ref)
    np.testing.assert_allclose(np.asarray(rope_inv_freq(cfg.rope, cfg.head_dim)), inv.numpy(), rtol=1e-6)
    assert rope_attention_factor(cfg.rope) == pytest.approx(scale)
