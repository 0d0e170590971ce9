"""Gemma-4's MoE text model (``gemma4_text``) against transformers: fp32 parity on three tiny
configs (left and right padding; experts read from HF's own router modules), bf16 KL, the
HF -> ours -> HF round trip, KV-cache decoding against HF ``generate`` past the sliding window,
one training step against torch, the published 26B-A4B config, the keys it refuses, and the whole
pipeline through the CLI. One tiny checkpoint is built once for the module."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from fixture_data import TEST_DATA, TINY_VOCAB
from hf_reference import hf_forward, load_hf_model, make_hf_model, padded_batch, safetensors_bits, save_hf_model

import rise_jax
from rise_jax.evaluation.generate import generate
from rise_jax.models.config import ConfigError
from rise_jax.models.families import config_from_hf_dict, config_to_hf_dict
from rise_jax.models.layout import layer_runs

S, F = "sliding_attention", "full_attention"
CASES = {
    # sliding (head 8, 2 kv heads) and full layers (head 16, one kv head, k = v), soft-capping
    "k_eq_v_two_runs_softcap": dict(),
    # full layers with their own v_proj (attention_k_eq_v off: the kv heads stay 1 = the sliding
    # ones), odd widths, biases, top-3 of 6, half the full head rotating; last layer forced full
    "v_proj_bias_top3_odd_widths": dict(
        hidden_size=36,
        num_attention_heads=3,
        num_key_value_heads=1,
        head_dim=12,
        global_head_dim=20,
        attention_k_eq_v=False,
        attention_bias=True,
        num_experts=6,
        top_k_experts=3,
        moe_intermediate_size=10,
        intermediate_size=22,
        num_hidden_layers=5,
        layer_types=[S, F, S, S, S],
        final_logit_softcapping=None,
        rope_parameters={
            S: dict(rope_type="default", rope_theta=500.0),
            F: dict(rope_type="proportional", partial_rotary_factor=0.5, rope_theta=20000.0),
        },
    ),
    # the default 5:1 layer pattern, untied head, MHA sliding layers, window 3
    "default_pattern_untied_mha": dict(
        num_hidden_layers=6,
        layer_types=None,
        num_key_value_heads=4,
        num_global_key_value_heads=2,
        sliding_window=3,
        tie_word_embeddings=False,
        final_logit_softcapping=0.5,
    ),
}


def _hf_router_choice(hf, ids, mask):
    """(experts, their combination weights) ``[L, B, T, k]`` as each layer's Gemma4TextRouter returns them."""
    got = []
    hooks = [
        layer.router.register_forward_hook(lambda m, i, o: got.append((o[2].numpy(), o[1].numpy())))
        for layer in hf.model.layers
    ]
    try:
        with torch.no_grad():
            hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    finally:
        for h in hooks:
            h.remove()
    shape = (*ids.shape, -1)
    return np.stack([i.reshape(shape) for i, _ in got]), np.stack([w.reshape(shape) for _, w in got])


@pytest.mark.parametrize("name", sorted(CASES))
def test_fp32_logits_experts_and_weights_match_hf_with_left_and_right_padding(tmp_path, name):
    hf = make_hf_model("gemma4_text", seed=1, **CASES[name])
    path = save_hf_model(hf, str(tmp_path / "ckpt"))
    hf = load_hf_model(path)
    model, params = rise_jax.load_model(path, dtype="float32", dispatch="dense", progress=False)
    cfg = model.cfg
    assert cfg.num_layers == len(hf.config.layer_types)
    assert [r.sliding for r in layer_runs(cfg)] == [
        k == S for i, k in enumerate(hf.config.layer_types) if i == 0 or k != hf.config.layer_types[i - 1]
    ]
    ids, mask = padded_batch(cfg.vocab_size, [20, 13, 7, 16], 20, [False, True, False, True], seed=2)
    real = mask.astype(bool)
    ref_logits, ref_probs = hf_forward(hf, ids, mask)  # Gemma-4 records the router's softmax
    out = rise_jax.forward(model, params, jnp.asarray(ids), jnp.asarray(mask), return_routing=True)
    err = np.abs(np.asarray(out.logits) - ref_logits)[real].max()
    assert err < 1e-4, f"max abs logit error {err}"
    np.testing.assert_allclose(np.asarray(out.routing.router_probs())[:, real], ref_probs[:, real], atol=1e-6)
    ref_idx, ref_w = _hf_router_choice(hf, ids, mask)
    ours = np.asarray(out.routing.topk_indices)
    order, ref_order = np.argsort(ours, -1), np.argsort(ref_idx, -1)
    np.testing.assert_array_equal(
        np.take_along_axis(ours, order, -1)[:, real], np.take_along_axis(ref_idx, ref_order, -1)[:, real]
    )
    # RoutingInfo's weights are the renormalised softmax; the model combines them x per_expert_scale.
    w = np.asarray(out.routing.topk_weights)
    np.testing.assert_allclose(w.sum(-1)[:, real], 1.0, rtol=1e-6)
    scale = np.concatenate([np.asarray(params[r.name]["moe"]["router_expert_scale"]) for r in layer_runs(cfg)])
    combined = w * np.take_along_axis(scale[:, None, None, :], ours, -1)
    np.testing.assert_allclose(
        np.take_along_axis(combined, order, -1)[:, real],
        np.take_along_axis(ref_w, ref_order, -1)[:, real],
        rtol=1e-5,
        atol=1e-6,
    )


def test_bf16_mean_token_kl_against_hf_bf16_is_small(tmp_path):
    path = save_hf_model(make_hf_model("gemma4_text", seed=5), str(tmp_path / "ckpt"))
    hf = load_hf_model(path, dtype=torch.bfloat16)
    model, params = rise_jax.load_model(path, dtype="bfloat16", progress=False)
    ids, mask = padded_batch(model.cfg.vocab_size, [16, 10], 16, [False, True], seed=6)
    ref_logits, _ = hf_forward(hf, ids, mask)
    out = rise_jax.forward(model, params, jnp.asarray(ids), jnp.asarray(mask))
    p = jax.nn.log_softmax(jnp.asarray(ref_logits, jnp.float32), -1)
    q = jax.nn.log_softmax(out.logits.astype(jnp.float32), -1)
    kl = float(jnp.sum(jnp.exp(p) * (p - q), -1)[mask.astype(bool)].mean())
    assert kl <= 1e-3, kl


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    hf = make_hf_model("gemma4_text", seed=21, vocab_size=TINY_VOCAB)
    with torch.no_grad():  # a -0.0 the round trip must keep
        hf.model.layers[0].self_attn.o_proj.weight.view(-1)[0] = -0.0
    return save_hf_model(hf, str(tmp_path_factory.mktemp("gemma4") / "ckpt"))


def test_hf_to_ours_to_hf_is_bit_identical_and_the_written_config_loads(ckpt, tmp_path):
    model, params = rise_jax.load_model(ckpt, dtype="float32", progress=False)
    out = rise_jax.export_model(model, params, str(tmp_path / "out"), source_dir=ckpt, progress=False)
    a, b = safetensors_bits(ckpt), safetensors_bits(out)
    assert sorted(a) == sorted(b)  # layer_scalar, router scales, the dense MLP beside the experts
    for k in a:
        assert torch.equal(a[k], b[k]), k
    gen = rise_jax.export_model(model, params, str(tmp_path / "gen"), progress=False)
    assert config_from_hf_dict(json.load(open(os.path.join(gen, "config.json")))) == model.cfg
    ids, mask = padded_batch(TINY_VOCAB, [9, 6], 9, [False, True], seed=1)
    np.testing.assert_array_equal(
        hf_forward(load_hf_model(gen), ids, mask)[0], hf_forward(load_hf_model(ckpt), ids, mask)[0]
    )


def test_the_published_multimodal_checkpoint_loads_its_text_model_and_round_trips_its_towers(tmp_path):
    """``gemma4`` (Gemma4ForConditionalGeneration, how the hub publishes Gemma-4): the language
    model under ``model.language_model.`` gives HF's text logits; the vision tower and its embedder
    are left unread and an export from the source carries them over bit for bit."""
    hf = make_hf_model("gemma4", seed=5)
    src = save_hf_model(hf, str(tmp_path / "src"))
    model, params = rise_jax.load_model(src, dtype="float32", progress=False)
    assert model.cfg.model_type == "gemma4" and "vision" not in json.dumps(list(params))
    ids, mask = padded_batch(model.cfg.vocab_size, [9, 6], 9, [False, True], seed=2)
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    ours = np.asarray(rise_jax.forward(model, params, jnp.asarray(ids), jnp.asarray(mask)).logits)
    assert np.abs(ours - ref)[mask.astype(bool)].max() < 1e-4
    out = rise_jax.export_model(model, params, str(tmp_path / "out"), source_dir=src, progress=False)
    a, b = safetensors_bits(src), safetensors_bits(out)
    assert sorted(a) == sorted(b) and any(k.startswith("model.vision_tower.") for k in b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert json.load(open(os.path.join(out, "config.json")))["architectures"] == ["Gemma4ForConditionalGeneration"]
    with pytest.raises(ValueError, match=r"'gemma4' model .* would lack the vision / audio towers"):
        rise_jax.export_model(model, params, str(tmp_path / "gen"), progress=False)


def test_kv_cache_decoding_equals_hf_generate_past_the_sliding_window(ckpt):
    """Window 4; prompts up to 11 tokens plus 8 new ones: every sliding layer drops keys."""
    model, params = rise_jax.load_model(ckpt, dtype="float32", progress=False)
    assert model.cfg.sliding_window == 4
    ids, mask = (a.astype(np.int32) for a in padded_batch(TINY_VOCAB, [11, 4, 8], 11, [True] * 3, seed=4))
    ours = generate(model, params, ids, mask, max_new_tokens=8, stop_ids=[], pad_id=0)
    with torch.no_grad():
        hf = load_hf_model(ckpt).generate(
            input_ids=torch.tensor(ids, dtype=torch.long),
            attention_mask=torch.tensor(mask, dtype=torch.long),
            max_new_tokens=8,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=None,
        )
    assert ours == hf[:, ids.shape[1] :].tolist()


SELECTED = [(0, 1), (0, 4), (2, 3), (3, 6)]  # (MoE layer, expert): sliding and full runs


def test_one_training_step_matches_torch_with_only_the_selected_experts_trainable(ckpt):
    """Loss, the selected experts' gradients and the AdamW step against torch; everything else
    (the dense MLP beside the experts, the router and its scales, layer_scalar) bitwise unchanged."""
    from rise_jax.models.layout import moe_layer_location
    from rise_jax.training.methods import FullExperts
    from rise_jax.training.step import make_optimizer, make_steps

    hf = load_hf_model(ckpt)
    model, params = rise_jax.load_model(ckpt, dtype="float32", dispatch="grouped_scan", progress=False)
    cfg = model.cfg
    ids, mask = padded_batch(TINY_VOCAB, [14, 9, 11], 14, [False, False, False], seed=5)
    lr, wd, inter = 1e-2, 0.05, cfg.moe_intermediate_size
    for p in hf.parameters():
        p.requires_grad_(False)
    experts = {lyr: hf.model.layers[lyr].experts for lyr, _ in SELECTED}
    trainable = []
    for ex in experts.values():
        for p in (ex.gate_up_proj, ex.down_proj):
            p.requires_grad_(True)
            trainable.append(p)
    out = hf(
        input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), labels=torch.tensor(np.where(mask, ids, -100))
    )
    out.loss.backward()
    for lyr, ex in experts.items():
        keep = torch.zeros(cfg.num_experts, dtype=torch.bool)
        keep[[e for m, e in SELECTED if m == lyr]] = True
        for p in (ex.gate_up_proj, ex.down_proj):
            p.grad[~keep] = 0.0

    def leaves(lyr, e, read):
        gu, dn = read(experts[lyr].gate_up_proj)[e].numpy(), read(experts[lyr].down_proj)[e].numpy()
        return {"gate_proj": gu[:inter].T, "up_proj": gu[inter:].T, "down_proj": dn.T}

    hf_grads = {key: leaves(*key, lambda p: p.grad.clone()) for key in SELECTED}
    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
    torch.optim.AdamW(trainable, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd).step()

    tx, _ = make_optimizer(lr, total_steps=1_000_000, warmup_ratio=0.0, weight_decay=wd, clip_norm=1.0)
    grad_step, apply_step, _ = make_steps(model, tx)
    initial = FullExperts.init(params, cfg, SELECTED)
    loss, _, grads = grad_step(initial, params, ids, mask, mask, jax.random.PRNGKey(0))
    np.testing.assert_allclose(float(loss), out.loss.item(), rtol=1e-6)
    rows = {}
    for lyr, e in SELECTED:
        run, li = moe_layer_location(cfg, lyr)
        rows[lyr, e] = (run, li)
        slot = int(np.asarray(initial.slots[run])[li, e])
        for name, g in hf_grads[lyr, e].items():
            assert np.abs(np.asarray(grads[run][name][slot]) - g).max() <= 1e-5 * np.abs(g).max(), (lyr, e, name)
    weights, _, _ = apply_step(initial.weights, tx.init(initial.weights), grads, jnp.float32(1.0))
    merged = initial.replace(weights=weights).merge(params)
    for (lyr, e), (run, li) in rows.items():
        want = leaves(lyr, e, lambda p: p.detach())
        for name, g in hf_grads[lyr, e].items():
            got = np.asarray(merged[run]["moe"]["experts"][name][li, e])
            steady = np.abs(g) >= 1e-6  # AdamW's first step: fp32 round-off decides it where |g| ~ eps
            assert steady.mean() > 0.5 and np.abs(got - want[name])[steady].max() < 1e-5, (lyr, e, name)
    for run, sub in params.items():
        for (key, a), b in zip(
            jax.tree_util.tree_leaves_with_path(sub), jax.tree_util.tree_leaves(merged[run]), strict=True
        ):
            if "['moe']['experts']" not in jax.tree_util.keystr(key):
                assert np.array_equal(np.asarray(a).view(np.uint32), np.asarray(b).view(np.uint32)), (run, key)


def test_the_published_26b_a4b_config_parses_as_transformers_reads_it():
    """tests/data/hub_configs/gemma4_26b_a4b.json: google/gemma-4-26B-A4B's text_config as
    published (values from the model card and config as we know them; no network here): it spells
    the full layers' shape ``global_head_dim`` / ``num_global_key_value_heads``, where
    transformers 5.23 writes ``per_layer_config``; ``hidden_size_per_layer_input`` is 0 (the class
    default is 256) and ``enable_moe_block`` true (default false)."""
    import transformers
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from rise_jax.models.layers import rope_inv_freq

    with open(os.path.join(TEST_DATA, "hub_configs", "gemma4_26b_a4b.json"), encoding="utf-8") as fh:
        hub = json.load(fh)["text_config"]
    cfg = config_from_hf_dict(hub, source="hub.json")
    ref = transformers.Gemma4TextConfig(**{k: v for k, v in hub.items() if k != "model_type"})
    assert (cfg.num_layers, cfg.num_experts, cfg.top_k, cfg.moe_intermediate_size, cfg.intermediate_size) == (
        30,
        128,
        8,
        704,
        2112,
    )
    full = [i for i, t in enumerate(ref.layer_types) if t == F]
    assert cfg.sliding_layers == tuple(t == S for t in ref.layer_types) and full == [5, 11, 17, 23, 29]
    for layer in (0, full[0]):
        geo = cfg.attention_config(cfg.sliding_layers[layer])
        lc = ref.per_layer_config[layer]
        assert (geo.head_dim, geo.num_kv_heads, geo.k_eq_v) == (lc.head_dim, lc.num_key_value_heads, layer in full)
        kind = ref.layer_types[layer]
        params = ref.rope_parameters[kind]
        if params["rope_type"] == "default":
            dim = lc.head_dim
            inv = 1.0 / (params["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
        else:
            inv, _ = ROPE_INIT_FUNCTIONS[params["rope_type"]](ref, layer_type=kind)
        np.testing.assert_allclose(np.asarray(rope_inv_freq(geo.rope, geo.head_dim)), inv.numpy(), rtol=1e-6)
    assert (cfg.sliding_window, cfg.final_logit_softcap, cfg.tie_word_embeddings) == (1024, 30.0, True)
    # Our config.json for it reads back to the same model in transformers and in ours.
    ours = config_to_hf_dict(cfg, "bfloat16")
    back = transformers.Gemma4TextConfig(**{k: v for k, v in ours.items() if k not in ("model_type", "architectures")})
    assert back.per_layer_config[full[0]].head_dim == 512 and back.per_layer_config[full[0]].num_key_value_heads == 2
    assert config_from_hf_dict(ours) == cfg


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(hidden_size_per_layer_input=256), r"hidden_size_per_layer_input = 256: per-layer input embeddings"),
        (dict(num_kv_shared_layers=2), r"num_kv_shared_layers = 2: key/value sharing"),
        (dict(enable_moe_block=False), r"enable_moe_block = False: a dense Gemma-4"),
        (dict(use_bidirectional_attention="all"), r"use_bidirectional_attention = 'all'"),
        (dict(hidden_activation="relu"), r"hidden_activation 'relu' is not supported"),
    ],
)
def test_blocks_the_moe_checkpoint_does_not_have_are_refused_naming_the_key(change, message):
    d = config_to_hf_dict(config_from_hf_dict({"model_type": "gemma4_text", **_tiny_hub()}))
    with pytest.raises(ConfigError, match=message):
        config_from_hf_dict({**d, **change}, source="config.json")


def _tiny_hub():
    from hf_reference import GEMMA4_TEXT_BASE

    return dict(GEMMA4_TEXT_BASE)


def test_the_whole_pipeline_runs_through_the_cli_and_its_export_loads_in_transformers(ckpt, tmp_path):
    from tiny_pipeline import family_pipeline_config

    from rise_jax import launch

    c = family_pipeline_config(ckpt)
    c.train.method = "rise_lora"  # adapters on the selected experts (the training step checks plain experts)
    wd = str(tmp_path / "wd")
    launch.run(c, wd)
    summary = json.load(open(os.path.join(wd, "routing_stats", "summary.json")))
    assert summary["model"]["model_type"] == "gemma4_text"
    assert json.load(open(os.path.join(wd, "train", "summary.json")))["status"] == "completed"
    results = json.dumps(json.load(open(os.path.join(wd, "eval", "results.json"))))
    assert "trained" in results and "pruned" in results
    exported = os.path.join(wd, "export", "hf")
    model, params = rise_jax.load_model(exported, dtype="float32", progress=False)
    ids, mask = padded_batch(TINY_VOCAB, [10, 7], 10, [False, True], seed=1)
    ref, _ = hf_forward(load_hf_model(exported), ids, mask)
    ours = np.asarray(rise_jax.forward(model, params, jnp.asarray(ids), jnp.asarray(mask)).logits)
    assert np.abs(ours - ref)[mask.astype(bool)].max() < 1e-4
    # Only selected experts moved (RISE+LoRA merges into them): the router, its scales and the
    # dense MLP beside them did not.
    _, base = rise_jax.load_model(ckpt, dtype="float32", progress=False)
    sel = {(s["layer"], s["expert"]) for s in json.load(open(os.path.join(wd, "selection.json")))["experts"]}
    moved = set()
    for run in layer_runs(model.cfg):
        for key in ("router", "router_scale", "router_expert_scale"):
            assert np.array_equal(np.asarray(params[run.name]["moe"][key]), np.asarray(base[run.name]["moe"][key]))
        for a, b in zip(
            jax.tree_util.tree_leaves(params[run.name]["mlp"]),
            jax.tree_util.tree_leaves(base[run.name]["mlp"]),
            strict=True,
        ):
            assert np.array_equal(np.asarray(a), np.asarray(b))
        diff = np.asarray(params[run.name]["moe"]["experts"]["gate_proj"]) != np.asarray(
            base[run.name]["moe"]["experts"]["gate_proj"]
        )
        moved |= {(run.moe_start + int(li), int(e)) for li, e in zip(*np.nonzero(diff.any(axis=(2, 3))), strict=True)}
    assert moved and moved <= sel
