"""Qwen3-Next (``qwen3_next``): Gated DeltaNet linear attention mixed with gated softmax attention
(rise_jax/models/linear_attention.py), against transformers' torch fallbacks (no fla /
causal-conv1d kernels here): forward parity with left and right padding, the chunked scan against
the token-by-token recurrence, packed rows, decoding with the cache against HF ``generate``
across more than one 64-token chunk, the HF -> ours -> HF round trip, one training step against
torch, adapters on the linear-attention projections, and the published hub config. One tiny
checkpoint is built once for the module; decoding and the training step also run on a tiny
Qwen3.5-MoE text model (the same blocks in Qwen3.5's layout, tests/test_qwen3_5_moe.py)."""

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
from rise_jax.models import linear_attention as la
from rise_jax.models.config import LinearAttentionConfig
from rise_jax.models.transformer import init_kv_cache

# Unusual shapes: layer_types with softmax attention first and a dense layer inside a linear run;
# one key head for four value heads of another width, a 2-tap and a 3-tap convolution.
CASES = {
    "default_hybrid_two_chunks": dict(),
    "full_first_dense_layer_r1_kernel3": dict(
        num_hidden_layers=3,
        layer_types=["full_attention", "linear_attention", "linear_attention"],
        mlp_only_layers=[1],
        head_dim=12,
        partial_rotary_factor=0.5,
        linear_num_key_heads=3,
        linear_num_value_heads=3,
        linear_conv_kernel_dim=3,
        norm_topk_prob=False,
        attention_bias=True,
    ),
    "gqa4_top3_r4_kernel2_tied": dict(
        num_attention_heads=8,
        num_key_value_heads=2,
        num_experts_per_tok=3,
        linear_num_key_heads=1,
        linear_num_value_heads=4,
        linear_key_head_dim=4,
        linear_value_head_dim=10,
        linear_conv_kernel_dim=2,
        tie_word_embeddings=True,
    ),
}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    hf = make_hf_model("qwen3_next", seed=31, vocab_size=TINY_VOCAB)
    with torch.no_grad():  # a -0.0 the round trip must keep
        hf.model.layers[0].linear_attn.out_proj.weight.view(-1)[0] = -0.0
    return save_hf_model(hf, str(tmp_path_factory.mktemp("qwen3_next") / "ckpt"))


@pytest.fixture(scope="module")
def qwen3_5_ckpt(tmp_path_factory):
    """Qwen3.5-MoE's text model (``qwen3_5_moe_text``): the same blocks in Qwen3.5's layout (four
    linear-attention input projections, every layer MoE, the router always renormalised)."""
    hf = make_hf_model("qwen3_5_moe_text", seed=32, vocab_size=TINY_VOCAB)
    return save_hf_model(hf, str(tmp_path_factory.mktemp("qwen3_5_moe_text") / "ckpt"))


# Decoding and the training step run on both hybrid families (the module fixture's name).
BOTH_FAMILIES = pytest.mark.parametrize("family_ckpt", ["ckpt", "qwen3_5_ckpt"])


def _hf_experts(hf, router_logits, moe_layers):
    """Expert sets ``[L, B, T, k]`` (sorted) chosen by each layer's own HF router module applied to
    HF's router logits (a copy with the identity as its weight)."""
    out = []
    for li, layer in enumerate(moe_layers):
        gate = copy.deepcopy(hf.model.layers[layer].mlp.gate)
        e = router_logits.shape[-1]
        gate.weight, gate.hidden_dim = torch.nn.Parameter(torch.eye(e)), e
        with torch.no_grad():
            _, _, idx = gate(torch.tensor(router_logits[li]).reshape(-1, e))
        out.append(np.sort(idx.numpy(), -1).reshape(*router_logits.shape[1:-1], -1))
    return np.stack(out)


@pytest.mark.parametrize("name", sorted(CASES))
def test_fp32_logits_and_expert_sets_match_hf_with_left_and_right_padding(tmp_path, name):
    path = save_hf_model(make_hf_model("qwen3_next", seed=1, **CASES[name]), str(tmp_path / "ckpt"))
    hf = load_hf_model(path)
    model, params = rise_jax.load_model(path, dtype="float32", dispatch="dense", progress=False)
    cfg = model.cfg
    total = 70 if name == "default_hybrid_two_chunks" else 20  # 70: across a 64-token chunk
    lengths = [total, total - 7, total - 13, 5]
    ids, mask = padded_batch(cfg.vocab_size, lengths, total, [False, True, False, True], seed=2)
    ref_logits, ref_router = hf_forward(hf, ids, mask)
    out = rise_jax.forward(model, params, jnp.asarray(ids), jnp.asarray(mask), return_routing=True)
    real = mask.astype(bool)
    assert np.abs(np.asarray(out.logits) - ref_logits)[real].max() < 1e-4
    ours = np.sort(np.asarray(out.routing.topk_indices), -1)
    np.testing.assert_array_equal(ours[:, real], _hf_experts(hf, ref_router, cfg.moe_layer_ids)[:, real])
    np.testing.assert_allclose(np.asarray(out.routing.router_logits)[:, real], ref_router[:, real], atol=1e-5)


def test_bf16_mean_token_kl_against_hf_bf16_is_small(ckpt):
    hf = load_hf_model(ckpt, dtype=torch.bfloat16)
    model, params = rise_jax.load_model(ckpt, dtype="bfloat16", progress=False)
    ids, mask = padded_batch(TINY_VOCAB, [16, 10], 16, [False, True], seed=6)
    p = jax.nn.log_softmax(jnp.asarray(hf_forward(hf, ids, mask)[0], jnp.float32), -1)
    logits = rise_jax.forward(model, params, jnp.asarray(ids), jnp.asarray(mask)).logits
    kl = jnp.sum(jnp.exp(p) * (p - jax.nn.log_softmax(logits.astype(jnp.float32), -1)), -1)
    assert float(kl[mask.astype(bool)].mean()) <= 1e-3


def _rule_inputs(seed, b, t, h, dk, dv):
    rng = np.random.RandomState(seed)
    q = la.l2norm(jnp.asarray(rng.randn(b, t, h, dk), jnp.float32)) * dk**-0.5
    k = la.l2norm(jnp.asarray(rng.randn(b, t, h, dk), jnp.float32))
    v = jnp.asarray(rng.randn(b, t, h, dv), jnp.float32)
    g = jnp.asarray(-rng.rand(b, t, h) * 0.5, jnp.float32)
    beta = jnp.asarray(rng.rand(b, t, h), jnp.float32)
    s0 = jnp.asarray(rng.randn(b, h, dk, dv) * 0.3, jnp.float32)
    return q, k, v, g, beta, s0


def test_the_chunked_scan_equals_the_token_by_token_recurrence_with_resets():
    """Resets inside a chunk, on a chunk boundary and at the first token; a state carried in."""
    q, k, v, g, beta, s0 = _rule_inputs(0, 2, 37, 3, 4, 5)
    reset = np.zeros((2, 37), bool)
    reset[0, [5, 16, 17, 30]] = True  # 16: the first token of the third 8-token chunk
    reset[1, 0] = True
    reset = jnp.asarray(reset)
    want, want_s = jax.jit(la.gated_delta_recurrent)(q, k, v, g, beta, reset, s0)
    chunked = jax.jit(la.gated_delta_chunked, static_argnums=7)
    for chunk in (8, la.CHUNK):
        got, got_s = chunked(q, k, v, g, beta, reset, s0, chunk)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5)
        np.testing.assert_allclose(np.asarray(got_s), np.asarray(want_s), atol=2e-5)
    # A reset forgets the state: row 1 (reset at token 0) equals a zero initial state.
    fresh, _ = chunked(q, k, v, g, beta, jnp.zeros_like(reset), s0.at[1].set(0.0), 8)
    np.testing.assert_allclose(np.asarray(want)[1], np.asarray(fresh)[1], atol=2e-5)


def test_packed_rows_and_padding_equal_each_segment_alone():
    """Segment ids in the mask (the packing convention): the state and the convolution history
    restart at every segment start, and padding (0) changes nothing, left or right."""
    lin = LinearAttentionConfig(2, 4, 4, 3, conv_kernel=3, projection="qkvz")
    mixer = la.GatedDeltaNet(lin, 16, 1e-6)
    rng = np.random.RandomState(3)
    x = rng.randn(19, 16).astype(np.float32)
    hist = jnp.zeros((6, 2), jnp.int32)
    seg0 = la.Segments(jnp.ones((1, 19), jnp.int32), hist[:1])
    params = jax.jit(mixer.init)(jax.random.PRNGKey(0), jnp.asarray(x[None]), seg0)
    params = jax.tree_util.tree_map(lambda p: p + 0.3 * jax.random.normal(jax.random.PRNGKey(1), p.shape), params)
    packed = np.array([1] * 6 + [2] * 1 + [3] * 9 + [0] * 3)  # a one-token segment, right padding
    rows, ids = [x], [packed]
    for s in (1, 2, 3):  # each segment alone at the start of a row
        cols = np.nonzero(packed == s)[0]
        rows.append(np.concatenate([x[cols], np.zeros((19 - len(cols), 16), np.float32)]))
        ids.append((np.arange(19) < len(cols)).astype(np.int32))
    rows.append(x)  # left padding before one segment
    ids.append(np.array([0] * 4 + [1] * 15))
    rows.append(np.concatenate([x[4:], x[:4]]))
    ids.append(np.array([1] * 15 + [0] * 4))
    out, _ = jax.jit(mixer.apply)(params, jnp.asarray(np.stack(rows)), la.Segments(jnp.asarray(np.stack(ids)), hist))
    out = np.asarray(out)
    for r, s in enumerate((1, 2, 3), start=1):
        cols = np.nonzero(packed == s)[0]
        np.testing.assert_allclose(out[0, cols], out[r, : len(cols)], atol=1e-5)
    np.testing.assert_allclose(out[4, 4:], out[5, :15], atol=1e-5)
    # A cache continued across a segment start resets there too (decoding a packed row).
    b = jnp.asarray(np.repeat(rng.randn(1, 4, 16), 2, axis=0), jnp.float32)
    state = la.LinearState(jnp.asarray(rng.randn(2, 2, lin.conv_dim), jnp.float32), jnp.ones((2, 4, 4, 3)))
    seg = la.Segments(jnp.asarray([[2, 2, 2, 2], [1, 1, 1, 1]]), jnp.asarray([[1, 1], [0, 0]]))
    cont, _ = jax.jit(mixer.apply)(params, b, seg, state)
    np.testing.assert_allclose(np.asarray(cont)[0], np.asarray(cont)[1], atol=1e-5)


@BOTH_FAMILIES
def test_cache_steps_equal_the_full_forward_and_decoding_equals_hf_generate(family_ckpt, request):
    """Prefill (chunked), a 5-token continuation from the cache (chunked, state carried in), then
    single tokens (the recurrent update); then greedy decoding against HF ``generate`` over 76
    tokens, more than one 64-token chunk. Qwen3-Next and Qwen3.5."""
    ckpt = request.getfixturevalue(family_ckpt)
    model, params = rise_jax.load_model(ckpt, dtype="float32", dispatch="dense", progress=False)
    cfg = model.cfg
    cache = init_kv_cache(cfg, 3, 24, jnp.float32)
    lin = cfg.linear
    assert {a.shape[2:] for a in cache.conv.values()} == {(lin.conv_kernel - 1, lin.conv_dim)}
    assert {a.shape[2:] for a in cache.recurrent.values()} == {(lin.num_v_heads, lin.k_head_dim, lin.v_head_dim)}
    ids, mask = padded_batch(TINY_VOCAB, [9, 5, 12], 14, [True] * 3, seed=1)
    full_ids = np.concatenate([ids, np.random.RandomState(2).randint(1, TINY_VOCAB, (3, 10))], 1).astype(np.int32)
    full_mask = np.concatenate([mask, np.ones((3, 10), np.int64)], 1).astype(np.int32)
    pos = np.where(full_mask > 0, np.cumsum(full_mask, 1) - 1, 1).astype(np.int32)
    ref = np.asarray(rise_jax.forward(model, params, full_ids, full_mask, pos).logits)
    apply = jax.jit(lambda p, i, q, c: model.apply({"params": p}, i, jnp.asarray(full_mask), q, kv_cache=c))
    got, out = [], None
    for start, end in [(0, 14), (14, 19), *((s, s + 1) for s in range(19, 24))]:
        out = apply(params, full_ids[:, start:end], pos[:, start:end], cache if out is None else out.kv_cache)
        got.append(np.asarray(out.logits))
    assert np.abs(np.concatenate(got, 1) - ref)[full_mask.astype(bool)].max() < 1e-4

    ids, mask = (a.astype(np.int32) for a in padded_batch(TINY_VOCAB, [70, 41, 66], 70, [True] * 3, seed=4))
    ours = generate(model, params, ids, mask, max_new_tokens=6, stop_ids=[], pad_id=0)
    with torch.no_grad():
        hf = load_hf_model(ckpt).generate(
            input_ids=torch.tensor(ids, dtype=torch.long),
            attention_mask=torch.tensor(mask, dtype=torch.long),
            max_new_tokens=6,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=None,
        )
    assert ours == hf[:, ids.shape[1] :].tolist()
    if family_ckpt != "ckpt":  # the slot placement below reads the cache only, not the layout
        return
    # Continuous batching places each prefill's states into its slot: the same tokens.
    from rise_jax.evaluation.continuous import generate_continuous

    prompts = [list(r[m > 0]) for r, m in zip(ids, mask, strict=True)]
    both = generate_continuous(
        model, params, prompts, max_new_tokens=6, stop_ids=[], pad_id=0, slots=2, refill=1, pad_multiple=16
    )
    assert both == ours


def test_hf_to_ours_to_hf_is_bit_identical_with_the_mtp_head_skipped_and_carried(ckpt, tmp_path):
    from safetensors.torch import load_file, save_file

    src = str(tmp_path / "src")
    os.makedirs(src)
    for f in os.listdir(ckpt):
        os.link(os.path.join(ckpt, f), os.path.join(src, f)) if f != "model.safetensors" else None
    tensors = load_file(os.path.join(ckpt, "model.safetensors"))
    save_file({**tensors, "mtp.fc.weight": torch.ones(4, 4)}, os.path.join(src, "model.safetensors"))
    model, params = rise_jax.load_model(src, dtype="float32", progress=False)
    assert model.cfg.model_type == "qwen3_next"
    out = rise_jax.export_model(model, params, str(tmp_path / "out"), source_dir=src, progress=False)
    a, b = safetensors_bits(src), safetensors_bits(out)  # the MTP head is not part of the model: carried over unchanged
    assert "mtp.fc.weight" in b and sorted(a) == sorted(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k  # int32 bit patterns of the fp32 tensors (-0.0 included)
    gen = rise_jax.export_model(model, params, str(tmp_path / "gen"), progress=False)
    ids, mask = padded_batch(TINY_VOCAB, [9, 6], 9, [False, True], seed=1)
    np.testing.assert_array_equal(
        hf_forward(load_hf_model(gen), ids, mask)[0], hf_forward(load_hf_model(ckpt), ids, mask)[0]
    )


SELECTED = [(0, 1), (0, 4), (3, 3), (3, 6)]  # (MoE layer, expert): a linear and the softmax layer


@BOTH_FAMILIES
def test_one_training_step_matches_torch_with_only_the_selected_experts_trainable(family_ckpt, request):
    """Qwen3-Next and Qwen3.5: gradients, the AdamW update and the untouched rest against torch.
    Gradients agree to 2e-5 of each tensor's largest entry: fp32 round-off. On the Qwen3.5 model's
    last-layer expert 3 (few tokens, largest gradient 2.4e-4) ours and HF's fp32 gradients are
    5.9e-6 and 4.1e-6 away from HF's float64 gradients (its delta rule in fp32), in opposite
    directions, and 1.2e-5 from each other; everywhere else they agree to 6e-6."""
    from rise_jax.models.layout import moe_layer_location
    from rise_jax.training.methods import FullExperts
    from rise_jax.training.step import make_optimizer, make_steps

    ckpt = request.getfixturevalue(family_ckpt)
    hf = load_hf_model(ckpt)
    model, params = rise_jax.load_model(ckpt, dtype="float32", dispatch="grouped_scan", progress=False)
    cfg = model.cfg
    ids, mask = padded_batch(TINY_VOCAB, [14, 9, 11], 14, [False, False, False], seed=5)
    lr, wd, inter = 1e-2, 0.05, cfg.moe_intermediate_size
    for p in hf.parameters():
        p.requires_grad_(False)
    experts = {lyr: hf.model.layers[cfg.moe_layer_ids[lyr]].mlp.experts for lyr, _ in SELECTED}
    trainable = []
    for ex in experts.values():
        for p in (ex.gate_up_proj, ex.down_proj):
            p.requires_grad_(True)
            trainable.append(p)
    labels = torch.tensor(np.where(mask == 1, ids, -100))
    out = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), labels=labels)
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
        rows[lyr, e] = (run, li, int(np.asarray(initial.slots[run])[li, e]))
        for name, g in hf_grads[lyr, e].items():
            ours = np.asarray(grads[run][name][rows[lyr, e][2]])
            assert np.abs(ours - g).max() <= 2e-5 * np.abs(g).max(), (lyr, e, name)
    weights, _, _ = apply_step(initial.weights, tx.init(initial.weights), grads, jnp.float32(1.0))
    merged = initial.replace(weights=weights).merge(params)
    for (lyr, e), (run, li, _) in rows.items():
        want = leaves(lyr, e, lambda p: p.detach())
        for name, g in hf_grads[lyr, e].items():
            got = np.asarray(merged[run]["moe"]["experts"][name][li, e])
            steady = np.abs(g) >= 1e-6  # AdamW's first step: fp32 round-off decides it where |g| ~ eps
            assert steady.mean() > 0.5 and np.abs(got - want[name])[steady].max() < 1e-5, (lyr, e, name)
    # Everything but the routed experts (linear attention, shared expert, router) is bitwise as loaded.
    for run, sub in params.items():
        for (key, a), b in zip(
            jax.tree_util.tree_leaves_with_path(sub), jax.tree_util.tree_leaves(merged[run]), strict=True
        ):
            if "['moe']['experts']" in jax.tree_util.keystr(key):
                continue
            assert np.array_equal(np.asarray(a).view(np.uint32), np.asarray(b).view(np.uint32)), (run, key)


def test_lora_adapters_reach_the_linear_attention_projections_and_int8_freezes_them(ckpt):
    """The same Dense objects as attention: LoRA targets in the linear-attention layers get
    gradients (adapters placed beside their kernels), and int8 frozen storage covers them with the
    ``attention`` group."""
    from rise_jax.training.methods import DenseLoRA
    from rise_jax.training.methods.lora import LORA_DENSE
    from rise_jax.training.step import make_optimizer, make_steps

    model, params = rise_jax.load_model(ckpt, dtype="float32", progress=False)
    method = DenseLoRA.init(params, [r"linear_attn/(in_proj_\w+|out_proj)/kernel$", r"attn/q_proj/kernel$"], 2, 4.0)
    adapters = method.weights[LORA_DENSE]
    assert set(adapters["layers_0"]["linear_attn"]) == {"in_proj_qkvz", "in_proj_ba", "out_proj"}
    assert set(adapters["layers_1"]["attn"]) == {"q_proj"}
    tx, _ = make_optimizer(1e-2, total_steps=10, warmup_ratio=0.0, weight_decay=0.0, clip_norm=1.0)
    grad_step, _, _ = make_steps(model, tx)
    ids, mask = padded_batch(TINY_VOCAB, [12, 8], 12, [False, True], seed=7)
    step = jax.tree_util.tree_map(lambda w: w + 0.01, method.weights)  # lora_b away from 0: both get gradients
    _, _, grads = grad_step(method.replace(weights=step), params, ids, mask, mask, jax.random.PRNGKey(0))
    for name in ("in_proj_qkvz", "in_proj_ba", "out_proj"):
        g = grads[LORA_DENSE]["layers_0"]["linear_attn"][name]["kernel"]
        assert all(float(jnp.abs(x).max()) > 0 for x in jax.tree_util.tree_leaves(g)), name

    from rise_jax.models.quantized import QuantizedArray

    q_model, q_params = rise_jax.load_model(
        ckpt, dtype="float32", progress=False, frozen_dtype="int8", frozen_groups=("experts", "attention")
    )
    assert isinstance(q_params["layers_0"]["linear_attn"]["in_proj_qkvz"]["kernel"], QuantizedArray)
    ref = rise_jax.forward(model, params, jnp.asarray(ids), jnp.asarray(mask)).logits
    got = rise_jax.forward(q_model, q_params, jnp.asarray(ids), jnp.asarray(mask)).logits
    assert float(jnp.abs(got - ref)[mask.astype(bool)].max()) < 0.05


def _hub_config(name: str) -> dict:
    with open(os.path.join(TEST_DATA, "hub_configs", f"{name}.json"), encoding="utf-8") as fh:
        return json.load(fh)


def test_qwen3_next_80b_hub_config_parses_as_transformers_reads_it():
    """tests/data/hub_configs/qwen3_next_80b_a3b.json: Qwen/Qwen3-Next-80B-A3B-Instruct's
    config.json as published (values written from memory: no network here; see the file's
    ``_source`` note). Every field we read agrees with transformers' own parse of it."""
    import transformers

    from rise_jax.models.families import config_from_hf_dict
    from rise_jax.models.layers import rope_inv_freq

    hub = _hub_config("qwen3_next_80b_a3b")
    hub = {k: v for k, v in hub.items() if not k.startswith("_")}
    cfg = config_from_hf_dict(hub, source="hub.json")
    ref = transformers.AutoConfig.for_model(**hub)
    assert (cfg.num_layers, cfg.num_experts, cfg.top_k, cfg.head_dim) == (48, 512, 10, 256)
    assert cfg.moe_layer_ids == tuple(range(48)) and cfg.shared_expert_size == ref.shared_expert_intermediate_size
    assert cfg.is_linear_layer == tuple(t == "linear_attention" for t in ref.layer_types)
    assert sum(cfg.is_linear_layer) == 36
    lin = cfg.linear
    assert (lin.num_k_heads, lin.num_v_heads, lin.k_head_dim, lin.v_head_dim, lin.conv_kernel) == (
        ref.linear_num_key_heads,
        ref.linear_num_value_heads,
        ref.linear_key_head_dim,
        ref.linear_value_head_dim,
        ref.linear_conv_kernel_dim,
    )
    assert (cfg.norm_topk_prob, cfg.norm, cfg.attn_output_gate, cfg.qk_norm) == (True, "rms_offset", True, "per_head")
    dim = int(cfg.head_dim * ref.rope_parameters["partial_rotary_factor"])
    theta = ref.rope_parameters["rope_theta"]
    inv = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
    np.testing.assert_allclose(np.asarray(rope_inv_freq(cfg.rope, cfg.head_dim)), inv.numpy(), rtol=1e-6)


def test_the_whole_pipeline_runs_through_the_cli_and_its_export_loads_in_transformers(ckpt, tmp_path):
    """Replay, selection, RISE training of experts in linear- and softmax-attention layers,
    export and evaluation through the CLI; the export loads in transformers with our logits."""
    from tiny_pipeline import family_pipeline_config

    from rise_jax import launch

    c = family_pipeline_config(ckpt)
    wd = str(tmp_path / "wd")
    launch.run(c, wd)
    assert json.load(open(os.path.join(wd, "routing_stats", "summary.json")))["model"]["model_type"] == "qwen3_next"
    assert json.load(open(os.path.join(wd, "train", "summary.json")))["status"] == "completed"
    results = json.dumps(json.load(open(os.path.join(wd, "eval", "results.json"))))
    assert "trained" in results and "pruned" in results
    exported = os.path.join(wd, "export", "hf")
    model, params = rise_jax.load_model(exported, dtype="float32", progress=False)
    ids, mask = padded_batch(TINY_VOCAB, [10, 7], 10, [False, True], seed=1)
    ref, _ = hf_forward(load_hf_model(exported), ids, mask)
    ours = np.asarray(rise_jax.forward(model, params, jnp.asarray(ids), jnp.asarray(mask)).logits)
    assert np.abs(ours - ref)[mask.astype(bool)].max() < 1e-4
