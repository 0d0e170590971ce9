"""Llama-4's text model (llama4_text) against transformers' modeling_llama4: forward parity on
three tiny configs (left and right padding, HF's own router modules choose the experts), bf16,
decoding against HF ``generate``, the HF -> ours -> HF round trip, one training step against
torch, the whole pipeline through the CLI, the published Scout config. One tiny checkpoint (the
Scout-like case) is built once for the module."""

import copy
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

LLAMA3_ROPE = dict(
    rope_type="llama3",
    rope_theta=500000.0,
    factor=4.0,
    low_freq_factor=1.0,
    high_freq_factor=4.0,
    original_max_position_embeddings=8,
)
# Every case: chunks of 4 positions over 20-token rows, left- and right-padded rows in one batch.
CASES = {
    # Scout's blocks: every layer MoE, top-1, l2 q/k norm, layer 3 NoPE with the temperature.
    "scout_like": dict(),
    # Maverick-like interleaving (dense layers of intermediate_size_mlp), top-2, llama3 rope with a
    # medium-frequency band, no q/k norm, GQA 3, head_dim 12.
    "interleaved_top2_llama3_rope_no_qk_norm": dict(
        interleave_moe_layer_step=2,
        num_experts_per_tok=2,
        rope_parameters=LLAMA3_ROPE,
        use_qk_norm=False,
        num_attention_heads=6,
        num_key_value_heads=2,
        head_dim=12,
    ),
    # layer_types independent of the rope: a chunked NoPE layer and a full rope layer; no
    # temperature; attention biases; MHA; tied embeddings; 5 layers, dense layers 0 and 4.
    "layer_types_nope_every_2_bias_tied": dict(
        num_hidden_layers=5,
        no_rope_layer_interval=2,
        layer_types=["full_attention", "chunked_attention", "chunked_attention", "full_attention", "full_attention"],
        attn_temperature_tuning=False,
        attention_bias=True,
        num_key_value_heads=4,
        tie_word_embeddings=True,
        moe_layers=[1, 2, 3],
    ),
}


def _hf_router_choice(hf, router_logits: np.ndarray, moe_layers) -> tuple[np.ndarray, np.ndarray]:
    """(experts sorted, their sigmoid weights) ``[L, B, T, k]`` from each MoE layer's own
    Llama4Router applied to HF's router logits (a copy whose weight is the identity)."""
    idx_out, w_out = [], []
    k = hf.config.num_experts_per_tok
    for li, layer in enumerate(moe_layers):
        router = copy.deepcopy(hf.model.layers[layer].feed_forward.router)
        e = router_logits.shape[-1]
        router.weight = torch.nn.Parameter(torch.eye(e))
        with torch.no_grad():
            scores, _ = router(torch.tensor(router_logits[li]).reshape(-1, e))
        chosen = scores > 0  # the unchosen experts' scores are sigmoid(-inf) = 0
        assert (chosen.sum(-1) == k).all()
        idx = torch.nonzero(chosen)[:, 1].reshape(-1, k)
        shape = router_logits.shape[1:-1] + (k,)
        idx_out.append(idx.reshape(shape).numpy())
        w_out.append(torch.gather(scores, -1, idx).reshape(shape).numpy())
    return np.stack(idx_out), np.stack(w_out)


@pytest.mark.parametrize("name", list(CASES))
def test_fp32_logits_experts_and_weights_match_hf_with_left_and_right_padding(tmp_path, name):
    hf = make_hf_model("llama4_text", seed=1, **CASES[name])
    path = save_hf_model(hf, str(tmp_path / "ckpt"))
    hf = load_hf_model(path)
    model, params = rise_jax.load_model(path, dtype="float32", dispatch="dense", progress=False)
    cfg = model.cfg
    ids, mask = padded_batch(cfg.vocab_size, [20, 13, 7, 16], 20, [False, True, False, True], seed=2)
    ref_logits, ref_router = hf_forward(hf, ids, mask)
    out = rise_jax.forward(model, params, jnp.asarray(ids), jnp.asarray(mask), return_routing=True)
    real = mask.astype(bool)
    assert np.abs(np.asarray(out.logits) - ref_logits)[real].max() < 1e-4
    np.testing.assert_allclose(np.asarray(out.routing.router_logits)[:, real], ref_router[:, real], atol=1e-5)
    ref_idx, ref_w = _hf_router_choice(hf, ref_router, cfg.moe_layer_ids)
    ours = np.asarray(out.routing.topk_indices)
    order = np.argsort(ours, axis=-1)
    np.testing.assert_array_equal(np.take_along_axis(ours, order, -1)[:, real], ref_idx[:, real])
    got_w = np.take_along_axis(np.asarray(out.routing.topk_weights), order, -1)
    np.testing.assert_allclose(got_w[:, real], ref_w[:, real], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    hf = make_hf_model("llama4_text", seed=21, vocab_size=TINY_VOCAB)
    with torch.no_grad():  # a -0.0 the round trip must keep
        hf.model.layers[0].self_attn.o_proj.weight.view(-1)[0] = -0.0
    return save_hf_model(hf, str(tmp_path_factory.mktemp("llama4_text") / "ckpt"))


def test_bf16_mean_token_kl_against_hf_bf16_is_small(ckpt):
    hf = load_hf_model(ckpt, dtype=torch.bfloat16)
    model, params = rise_jax.load_model(ckpt, dtype="bfloat16", progress=False)
    ids, mask = padded_batch(TINY_VOCAB, [16, 10], 16, [False, True], seed=6)
    ref_logits, _ = hf_forward(hf, ids, mask)
    out = rise_jax.forward(model, params, jnp.asarray(ids), jnp.asarray(mask))
    p = jax.nn.log_softmax(jnp.asarray(ref_logits, jnp.float32), -1)
    q = jax.nn.log_softmax(out.logits.astype(jnp.float32), -1)
    kl = jnp.sum(jnp.exp(p) * (p - q), -1)
    assert float(kl[mask.astype(bool)].mean()) <= 1e-3


def test_hf_to_ours_to_hf_is_bit_identical(ckpt, tmp_path):
    model, params = rise_jax.load_model(ckpt, dtype="float32", progress=False)
    assert model.cfg.model_type == "llama4_text" and model.cfg.nope_layers == (False, False, False, True)
    out = rise_jax.export_model(model, params, str(tmp_path / "out"), source_dir=ckpt, progress=False)
    a, b = safetensors_bits(ckpt), safetensors_bits(out)
    assert sorted(a) == sorted(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # The config written from our ModelConfig alone loads in transformers with equal logits.
    gen = rise_jax.export_model(model, params, str(tmp_path / "gen"), progress=False)
    ids, mask = padded_batch(TINY_VOCAB, [9, 6], 9, [False, True], seed=1)
    np.testing.assert_array_equal(
        hf_forward(load_hf_model(gen), ids, mask)[0], hf_forward(load_hf_model(ckpt), ids, mask)[0]
    )


def test_decoding_equals_hf_generate_across_chunks_and_temperature_steps(ckpt):
    """Prompts of 11 / 4 / 8 tokens + 10 new ones cross several 4-position chunks and the NoPE
    layer's temperature steps (floor_scale 3). Ours decodes the rows left-padded in one batch with
    generate's positions; HF generates each row alone: transformers' temperature counts the left
    padding (attention_variants), a row's tokens must not depend on its batch."""
    model, params = rise_jax.load_model(ckpt, dtype="float32", dispatch="dense", progress=False)
    ids, mask = (a.astype(np.int32) for a in padded_batch(TINY_VOCAB, [11, 4, 8], 11, [True] * 3, seed=4))
    ours = generate(model, params, ids, mask, max_new_tokens=10, stop_ids=[], pad_id=0)
    hf = load_hf_model(ckpt)
    for row, got in zip(ids, ours, strict=True):
        prompt = torch.tensor(row[row > 0][None], dtype=torch.long)
        with torch.no_grad():
            want = hf.generate(input_ids=prompt, max_new_tokens=10, do_sample=False, pad_token_id=0, eos_token_id=None)
        assert got == want[0, prompt.shape[1] :].tolist()


SELECTED = [(0, 1), (0, 4), (2, 3), (3, 5)]  # (MoE layer, expert)


def test_one_training_step_matches_torch_with_only_the_selected_experts_trainable(ckpt):
    """Loss, the selected experts' gradients (through the score-scaled expert input) and the AdamW
    step against torch; everything else bitwise unchanged."""
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
    experts = {lyr: hf.model.layers[cfg.moe_layer_ids[lyr]].feed_forward.experts for lyr, _ in SELECTED}
    trainable = []
    for ex in experts.values():
        for p in (ex.gate_up_proj, ex.down_proj):
            p.requires_grad_(True)
            trainable.append(p)
    out = hf(
        input_ids=torch.tensor(ids),
        attention_mask=torch.tensor(mask),
        labels=torch.tensor(np.where(mask == 1, ids, -100)),
    )
    out.loss.backward()
    for lyr, ex in experts.items():
        keep = torch.zeros(cfg.num_experts, dtype=torch.bool)
        keep[[e for m, e in SELECTED if m == lyr]] = True
        for p in (ex.gate_up_proj, ex.down_proj):
            p.grad[~keep] = 0.0

    def leaves(lyr, e, read):  # gate_up_proj [E, H, 2I]: gate columns, then up; down [E, I, H]
        gu, dn = read(experts[lyr].gate_up_proj)[e].numpy(), read(experts[lyr].down_proj)[e].numpy()
        return {"gate_proj": gu[:, :inter], "up_proj": gu[:, inter:], "down_proj": dn}

    hf_grads = {key: leaves(*key, lambda p: p.grad.clone()) for key in SELECTED}
    assert all(np.abs(g).max() > 0 for grads in hf_grads.values() for g in grads.values())
    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
    opt = torch.optim.AdamW(trainable, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd)
    opt.step()

    tx, _ = make_optimizer(lr, total_steps=1_000_000, warmup_ratio=0.0, weight_decay=wd, clip_norm=1.0)
    grad_step, apply_step, _ = make_steps(model, tx)
    initial = FullExperts.init(params, cfg, SELECTED)
    loss, _, grads = grad_step(initial, params, ids, mask, mask, jax.random.PRNGKey(0))
    np.testing.assert_allclose(float(loss), out.loss.item(), rtol=1e-6)
    rows = {}
    for lyr, e in SELECTED:
        run, li = moe_layer_location(cfg, lyr)
        rows[lyr, e] = (run, li, int(np.asarray(initial.slots[run])[li, e]))
        for name, g in hf_grads[lyr, e].items():
            ours = np.asarray(grads[run][name][rows[lyr, e][2]])
            assert np.abs(ours - g).max() <= 1e-5 * np.abs(g).max(), (lyr, e, name)
    weights, _, _ = apply_step(initial.weights, tx.init(initial.weights), grads, jnp.float32(1.0))
    merged = initial.replace(weights=weights).merge(params)
    for (lyr, e), (run, li, _) in rows.items():
        want = leaves(lyr, e, lambda p: p.detach())
        for name, g in hf_grads[lyr, e].items():
            got = np.asarray(merged[run]["moe"]["experts"][name][li, e])
            steady = np.abs(g) >= 1e-6  # AdamW's first step: fp32 round-off decides it where |g| ~ eps
            assert steady.mean() > 0.5 and np.abs(got - want[name])[steady].max() < 1e-5, (lyr, e, name)
    for run, sub in params.items():
        for (key, a), b in zip(
            jax.tree_util.tree_leaves_with_path(sub), jax.tree_util.tree_leaves(merged[run]), strict=True
        ):
            if "['moe']['experts']" in jax.tree_util.keystr(key):
                continue
            assert np.array_equal(np.asarray(a).view(np.uint32), np.asarray(b).view(np.uint32)), (run, key)


def test_multimodal_checkpoint_text_model_loads_and_exports_with_its_vision_tower(tmp_path):
    """llama4 (Llama4ForConditionalGeneration, the published Scout's class): the text model is read
    from text_config and the language_model. tensors; the export from the source copies the
    vision tower and the config, so every tensor comes back bitwise; one without it is refused."""
    src = save_hf_model(make_hf_model("llama4", seed=3), str(tmp_path / "src"))
    model, params = rise_jax.load_model(src, dtype="float32", progress=False)
    assert model.cfg.model_type == "llama4" and model.cfg.num_moe_layers == 4
    ids, mask = padded_batch(128, [12, 7], 12, [False, True], seed=1)
    ref, _ = hf_forward(load_hf_model(src), ids, mask)  # AutoModelForCausalLM: the text model
    ours = np.asarray(rise_jax.forward(model, params, jnp.asarray(ids), jnp.asarray(mask)).logits)
    assert np.abs(ours - ref)[mask.astype(bool)].max() < 1e-4
    out = rise_jax.export_model(model, params, str(tmp_path / "out"), source_dir=src, progress=False)
    a, b = safetensors_bits(src), safetensors_bits(out)
    assert sorted(a) == sorted(b) and any(k.startswith("vision_model.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.load(open(os.path.join(out, "config.json")))["architectures"] == ["Llama4ForConditionalGeneration"]
    # Without the source the multimodal checkpoint cannot be whole: refused, naming what it lacks.
    with pytest.raises(
        ValueError,
        match=r"'llama4' model \(Llama4ForConditionalGeneration\) without its source.*"
        r"vision_model\.\* and multi_modal_projector\.\* tensors.*pass source_dir=",
    ):
        rise_jax.export_model(model, params, str(tmp_path / "gen"), progress=False)
    assert not os.path.exists(tmp_path / "gen")


def test_published_scout_config_parses_as_transformers_reads_it():
    """tests/data/hub_configs/llama4_scout.json: meta-llama/Llama-4-Scout-17B-16E's config.json as
    we know it (written without network access; values not checked against the hub). It differs
    from Llama4TextConfig's defaults in max_position_embeddings (10M), the llama3 rope scaling
    (factor 16, original 8192), the token ids and ``attn_temperature_tuning: 4`` — an int, as
    transformers 4.51 wrote it, which 5.23's strict config refuses: handed over as True here."""
    import transformers
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from rise_jax.models.families import config_from_hf_dict, config_to_hf_dict
    from rise_jax.models.layers import rope_inv_freq

    with open(os.path.join(TEST_DATA, "hub_configs", "llama4_scout.json"), encoding="utf-8") as fh:
        hub = json.load(fh)
    cfg = config_from_hf_dict(hub, source="llama4_scout.json")
    hub["text_config"] = {**hub["text_config"], "attn_temperature_tuning": True}
    ref = transformers.AutoConfig.for_model(**hub).text_config
    assert (cfg.model_type, cfg.num_layers, cfg.num_experts, cfg.top_k) == ("llama4", 48, 16, 1)
    assert cfg.moe_layer_ids == tuple(ref.moe_layers) == tuple(range(48))
    assert cfg.nope_layers == tuple(not r for r in ref.no_rope_layers) and sum(cfg.nope_layers) == 12
    assert cfg.sliding_layers == tuple(t == "chunked_attention" for t in ref.layer_types)
    assert (cfg.attention_chunk_size, cfg.attn_temperature) == (8192, (8192.0, 0.1))
    assert (cfg.moe_intermediate_size, cfg.intermediate_size, cfg.shared_expert_size) == (8192, 16384, 8192)
    assert (cfg.qk_norm, cfg.router, cfg.router_scales_input, cfg.head_dim) == ("l2", "topk_sigmoid", True, 128)
    inv, _ = ROPE_INIT_FUNCTIONS[ref.rope_parameters["rope_type"]](ref)
    np.testing.assert_allclose(np.asarray(rope_inv_freq(cfg.rope, cfg.head_dim)), inv.numpy(), rtol=1e-6)
    assert config_from_hf_dict(config_to_hf_dict(cfg)) == cfg


def test_the_whole_pipeline_runs_through_the_cli_and_its_export_loads_in_transformers(ckpt, tmp_path):
    """stats -> analyze -> select -> train (the selected experts) -> export -> eval on the Scout-like
    checkpoint; only selected experts move, the router and the shared experts stay bitwise."""
    from tiny_pipeline import family_pipeline_config

    from rise_jax import launch

    c = family_pipeline_config(ckpt)
    wd = str(tmp_path / "wd")
    launch.run(c, wd)
    assert json.load(open(os.path.join(wd, "routing_stats", "summary.json")))["model"]["model_type"] == "llama4_text"
    assert json.load(open(os.path.join(wd, "train", "summary.json")))["status"] == "completed"
    results = json.dumps(json.load(open(os.path.join(wd, "eval", "results.json"))))
    assert "trained" in results and "pruned" in results
    exported = os.path.join(wd, "export", "hf")
    model, params = rise_jax.load_model(exported, dtype="float32", progress=False)
    ids, mask = padded_batch(TINY_VOCAB, [10, 7], 10, [False, True], seed=1)
    ref, _ = hf_forward(load_hf_model(exported), ids, mask)
    ours = np.asarray(rise_jax.forward(model, params, jnp.asarray(ids), jnp.asarray(mask)).logits)
    assert np.abs(ours - ref)[mask.astype(bool)].max() < 1e-4
    _, base = rise_jax.load_model(ckpt, dtype="float32", progress=False)
    sel = {(s["layer"], s["expert"]) for s in json.load(open(os.path.join(wd, "selection.json")))["experts"]}
    ours, orig = params["layers"]["moe"], base["layers"]["moe"]
    for key in ("shared_expert", "router"):
        for a, b in zip(jax.tree_util.tree_leaves(ours[key]), jax.tree_util.tree_leaves(orig[key]), strict=True):
            assert np.array_equal(np.asarray(a), np.asarray(b)), key
    diff = np.asarray(ours["experts"]["gate_proj"]) != np.asarray(orig["experts"]["gate_proj"])
    moved = {(int(li), int(e)) for li, e in zip(*np.nonzero(diff.any(axis=(2, 3))), strict=True)}
    assert moved and moved <= sel
