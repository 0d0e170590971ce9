"""Qwen3.5-MoE (``qwen3_5_moe_text`` and the published ``qwen3_5_moe`` checkpoint class with its
vision tower): Qwen3-Next's blocks (tests/test_qwen3_next.py covers the chunked scan, packing and
adapters on them, and runs decoding against HF ``generate`` and one training step against torch on
a ``qwen3_5_moe_text`` checkpoint too) in Qwen3.5's layout. Here: forward parity of both classes
with left and right padding, the multimodal checkpoint's round trip (vision tower and MTP head
skipped at load, carried over bitwise at export), the whole CLI pipeline on the multimodal
checkpoint, and the published hub config."""

import copy
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from fixture_data import TEST_DATA
from hf_reference import hf_forward, load_hf_model, make_hf_model, padded_batch, safetensors_bits, save_hf_model

import rise_jax

TEXT_CASES = {
    "text_default": dict(),
    "text_full_first_r1_kernel3_gqa4": dict(
        num_hidden_layers=3,
        layer_types=["full_attention", "linear_attention", "linear_attention"],
        num_attention_heads=8,
        num_key_value_heads=2,
        linear_num_key_heads=3,
        linear_num_value_heads=3,
        linear_conv_kernel_dim=3,
        num_experts_per_tok=3,
    ),
}


def _layers(hf):
    inner = hf.model.language_model if hasattr(hf.model, "language_model") else hf.model
    return inner.layers


def _hf_experts(hf, router_logits):
    """Expert sets (sorted) from each MoE layer's own HF router applied to HF's router logits."""
    out = []
    for li, layer in enumerate(_layers(hf)):
        gate = copy.deepcopy(layer.mlp.gate)
        e = router_logits.shape[-1]
        gate.weight, gate.hidden_dim = torch.nn.Parameter(torch.eye(e)), e
        with torch.no_grad():
            _, _, idx = gate(torch.tensor(router_logits[li]).reshape(-1, e))
        out.append(np.sort(idx.numpy(), -1).reshape(*router_logits.shape[1:-1], -1))
    return np.stack(out)


@pytest.mark.parametrize("case", [*sorted(TEXT_CASES), "multimodal_checkpoint"])
def test_fp32_logits_and_expert_sets_match_hf_with_left_and_right_padding(tmp_path, case):
    if case == "multimodal_checkpoint":
        hf = make_hf_model("qwen3_5_moe", seed=2)
    else:
        hf = make_hf_model("qwen3_5_moe_text", seed=1, **TEXT_CASES[case])
    path = save_hf_model(hf, str(tmp_path / "ckpt"))
    hf = load_hf_model(path)
    model, params = rise_jax.load_model(path, dtype="float32", dispatch="dense", progress=False)
    cfg = model.cfg
    assert cfg.linear.projection == "split" and cfg.norm_topk_prob
    ids, mask = padded_batch(cfg.vocab_size, [20, 13, 7, 16], 20, [False, True, False, True], seed=2)
    pos = np.broadcast_to(np.arange(20), ids.shape).copy()  # the multimodal class would derive 3-D ones
    ref_logits, ref_router = hf_forward(hf, ids, mask, positions=pos)
    out = rise_jax.forward(model, params, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(pos), return_routing=True)
    real = mask.astype(bool)
    assert np.abs(np.asarray(out.logits) - ref_logits)[real].max() < 1e-4
    ours = np.sort(np.asarray(out.routing.topk_indices), -1)
    np.testing.assert_array_equal(ours[:, real], _hf_experts(hf, ref_router)[:, real])


def test_multimodal_round_trip_is_bit_identical_with_the_vision_tower_and_mtp_carried(tmp_path):
    from safetensors.torch import load_file, save_file

    src = save_hf_model(make_hf_model("qwen3_5_moe", seed=3), str(tmp_path / "src"))
    tensors = load_file(os.path.join(src, "model.safetensors"))
    save_file({**tensors, "mtp.fc.weight": torch.ones(4, 4)}, os.path.join(src, "model.safetensors"))
    model, params = rise_jax.load_model(src, dtype="float32", progress=False)
    assert model.cfg.model_type == "qwen3_5_moe" and "visual" not in json.dumps(list(params))
    out = rise_jax.export_model(model, params, str(tmp_path / "out"), source_dir=src, progress=False)
    a, b = safetensors_bits(src), safetensors_bits(out)
    assert sorted(a) == sorted(b) and any(k.startswith("model.visual.") for k in b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert json.load(open(os.path.join(out, "config.json")))["architectures"] == ["Qwen3_5MoeForConditionalGeneration"]
    with pytest.raises(ValueError, match=r"'qwen3_5_moe' model .* would lack the vision tower"):
        rise_jax.export_model(model, params, str(tmp_path / "gen"), progress=False)


def test_the_whole_pipeline_runs_on_the_multimodal_checkpoint_and_its_export_loads_in_transformers(tmp_path):
    """The published class through the CLI (replay, selection, RISE training, export, eval): the
    export merges the trained experts into the source's tensors, carries the vision tower, and
    transformers' Qwen3_5MoeForConditionalGeneration gives our logits on it."""
    from fixture_data import TINY_VOCAB
    from hf_reference import QWEN3_5_MOE_BASE
    from tiny_pipeline import family_pipeline_config

    from rise_jax import launch

    text = {**QWEN3_5_MOE_BASE["text_config"], "vocab_size": TINY_VOCAB}
    src = save_hf_model(make_hf_model("qwen3_5_moe", seed=5, text_config=text), str(tmp_path / "ckpt"))
    wd = str(tmp_path / "wd")
    launch.run(family_pipeline_config(src), wd)
    assert json.load(open(os.path.join(wd, "routing_stats", "summary.json")))["model"]["model_type"] == "qwen3_5_moe"
    results = json.dumps(json.load(open(os.path.join(wd, "eval", "results.json"))))
    assert "trained" in results and "pruned" in results
    exported = os.path.join(wd, "export", "hf")
    a, b = safetensors_bits(src), safetensors_bits(exported)
    assert sorted(a) == sorted(b)
    moved = {k for k in a if not torch.equal(a[k], b[k])}
    assert moved and all(".mlp.experts." in k for k in moved), sorted(moved)[:4]
    assert any(k.startswith("model.visual.") for k in b)
    model, params = rise_jax.load_model(exported, dtype="float32", progress=False)
    ids, mask = padded_batch(TINY_VOCAB, [10, 7], 10, [False, True], seed=1)
    pos = np.broadcast_to(np.arange(10), ids.shape).copy()
    ref, _ = hf_forward(load_hf_model(exported), ids, mask, positions=pos)
    ours = np.asarray(rise_jax.forward(model, params, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(pos)).logits)
    assert np.abs(ours - ref)[mask.astype(bool)].max() < 1e-4


def test_qwen3_5_35b_hub_config_parses_as_transformers_reads_it():
    """tests/data/hub_configs/qwen3_5_35b_a3b.json: Qwen/Qwen3.5-35B-A3B's config.json (written from
    memory, no network here; its text values are transformers' Qwen3_5MoeTextConfig defaults, which
    were taken from that checkpoint; see the file's ``_source``)."""
    import transformers

    from rise_jax.models.families import config_from_hf_dict

    with open(os.path.join(TEST_DATA, "hub_configs", "qwen3_5_35b_a3b.json"), encoding="utf-8") as fh:
        hub = {k: v for k, v in json.load(fh).items() if not k.startswith("_")}
    cfg = config_from_hf_dict(hub, source="hub.json")
    ref = transformers.AutoConfig.for_model(**hub).text_config
    assert (cfg.num_layers, cfg.num_experts, cfg.top_k, cfg.head_dim, cfg.vocab_size) == (
        ref.num_hidden_layers,
        ref.num_experts,
        ref.num_experts_per_tok,
        ref.head_dim,
        ref.vocab_size,
    )
    assert cfg.moe_layer_ids == tuple(range(40)) and cfg.is_linear_layer == tuple(
        t == "linear_attention" for t in ref.layer_types
    )
    lin = cfg.linear
    assert (lin.num_k_heads, lin.num_v_heads, lin.k_head_dim, lin.v_head_dim) == (16, 32, 128, 128)
    assert cfg.rope.partial_rotary_factor == ref.rope_parameters["partial_rotary_factor"] == 0.25
    assert cfg.rope.theta == ref.rope_parameters["rope_theta"]
