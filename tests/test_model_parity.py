"""Our Flax models against the HF PyTorch implementation on tiny random checkpoints."""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hf_reference import hf_forward, load_hf_model, longrope, make_hf_model, padded_batch, save_hf_model, yarn
from transformers.models.phimoe.modeling_phimoe import sparsemixer

import rise_jax
from rise_jax.models import routers

QWEN_CASES = {
    "gqa2_normtopk": dict(),
    "mha_no_norm_topk": dict(num_key_value_heads=4, norm_topk_prob=False),
    "gqa4_headdim16": dict(num_attention_heads=8, num_key_value_heads=2, head_dim=16),
    "mlp_only_layers_tied": dict(mlp_only_layers=[1], tie_word_embeddings=True),
    "sparse_step2_top3": dict(decoder_sparse_step=2, num_hidden_layers=4, num_experts_per_tok=3),
    "attention_bias": dict(attention_bias=True),
}
PHI_CASES = {
    "gqa2": dict(),
    "mha_biases": dict(num_key_value_heads=4, attention_bias=True, lm_head_bias=True),
    "longrope_short": dict(rope_parameters=longrope(8, 64), max_position_embeddings=256),
    "longrope_long": dict(rope_parameters=longrope(8, 12), max_position_embeddings=256),
    "tied": dict(tie_word_embeddings=True),
}
OLMOE_CASES = {
    "gqa2_no_norm_topk": dict(),
    "norm_topk_clip_qkv": dict(norm_topk_prob=True, clip_qkv=0.3),
    "mha_attention_bias_tied": dict(num_key_value_heads=4, attention_bias=True, tie_word_embeddings=True),
}
QWEN2_CASES = {
    "shared_expert_qkv_bias": dict(),
    "dense_layer_norm_topk": dict(mlp_only_layers=[1], norm_topk_prob=True),
    "sparse_step2_no_bias": dict(decoder_sparse_step=2, num_hidden_layers=4, qkv_bias=False),
    "sliding_window_some_layers": dict(use_sliding_window=True, sliding_window=5, max_window_layers=2),
}
MIXTRAL_CASES = {
    "gqa2": dict(),
    "sliding_window": dict(sliding_window=6),
    "gqa4_top3": dict(num_attention_heads=8, num_key_value_heads=2, num_experts_per_tok=3),
}
GPT_OSS_CASES = {
    "sinks_biases_clamp_sliding": dict(),
    "mha_layer_types": dict(
        num_key_value_heads=4, layer_types=["full_attention", "sliding_attention", "full_attention"]
    ),
    "gqa4_top3_all_sliding": dict(
        num_attention_heads=8, num_key_value_heads=2, num_experts_per_tok=3, layer_types=["sliding_attention"] * 3
    ),
}
# DeepSeek-style routers: every case sets a selection bias (sigmoid routers, always) or expert
# groups or both that change some tokens' experts; test_deepseek_routing_... asserts that they do.
DEEPSEEK_V2_CASES = {
    "greedy_yarn_mscale_no_q_lora": dict(rope_parameters=yarn(8.0, 16, 0.707, 0.707)),
    "group_limited_q_lora_scaled_all_moe": dict(
        q_lora_rank=10,
        topk_method="group_limited_greedy",
        n_group=4,
        topk_group=2,  # groups scored by their best expert change the top-k only when k > topk_group
        num_experts_per_tok=3,
        routed_scaling_factor=1.7,
        first_k_dense_replace=0,
        n_shared_experts=2,
        rope_parameters=yarn(4.0, 8, 1.0, 0.8),
    ),
    "group_limited_top3_two_dense_bias_tied": dict(
        topk_method="group_limited_greedy",
        n_group=2,
        topk_group=1,
        num_experts_per_tok=3,
        num_hidden_layers=4,
        first_k_dense_replace=2,
        attention_bias=True,
        tie_word_embeddings=True,
    ),
}
DEEPSEEK_V3_CASES = {
    "groups_bias_interleaved_no_q_lora": dict(),
    "q_lora_rotate_half_no_norm_yarn": dict(
        q_lora_rank=10,
        rope_interleave=False,
        norm_topk_prob=False,
        n_group=2,
        topk_group=1,
        rope_parameters=yarn(8.0, 16, 0.707, 1.0),
    ),
    "one_group_top3_two_dense_bias": dict(
        n_group=1,
        topk_group=1,
        num_experts_per_tok=3,
        num_hidden_layers=4,
        first_k_dense_replace=2,
        attention_bias=True,
    ),
}
GLM4_MOE_CASES = {
    "partial_rotary_qkv_bias": dict(),
    "qk_norm_groups_headdim12": dict(use_qk_norm=True, head_dim=12, n_group=4, topk_group=2, routed_scaling_factor=2.0),
    "mha_rotary_075_top3_all_moe_no_bias": dict(
        num_key_value_heads=4,
        attention_bias=False,
        first_k_dense_replace=0,
        num_experts_per_tok=3,
        norm_topk_prob=False,
        rope_parameters=dict(rope_type="default", rope_theta=10000.0, partial_rotary_factor=0.75),
    ),
}
GLM4_MOE_LITE_CASES = {
    "mla_groups_bias_dense_between": dict(),
    "q_lora_rotate_half_top3_one_group": dict(
        q_lora_rank=10, rope_interleave=False, n_group=1, topk_group=1, num_experts_per_tok=3
    ),
    "all_sparse_yarn_no_norm": dict(
        mlp_layer_types=["sparse"] * 4, norm_topk_prob=False, rope_parameters=yarn(8.0, 16, 0.707, 0.707)
    ),
}
DEEPSEEK_STYLE = ("deepseek_v2", "deepseek_v3", "glm4_moe", "glm4_moe_lite")
FAMILY_CASES = {
    "qwen3_moe": QWEN_CASES,
    "phimoe": PHI_CASES,
    "olmoe": OLMOE_CASES,
    "qwen2_moe": QWEN2_CASES,
    "mixtral": MIXTRAL_CASES,
    "gpt_oss": GPT_OSS_CASES,
    "deepseek_v2": DEEPSEEK_V2_CASES,
    "deepseek_v3": DEEPSEEK_V3_CASES,
    "glm4_moe": GLM4_MOE_CASES,
    "glm4_moe_lite": GLM4_MOE_LITE_CASES,
}
CASES = [(f, k, v) for f, cases in FAMILY_CASES.items() for k, v in cases.items()]


def hf_topk(family: str, router_logits: np.ndarray, k: int, norm: bool, jitter: float) -> np.ndarray:
    """Expert indices from HF's own router rules applied to HF's router logits."""
    logits = torch.tensor(router_logits)
    if family == "phimoe":
        return sparsemixer(logits, jitter_eps=jitter, training=False)[1].numpy()
    if family == "gpt_oss":  # GptOssTopKRouter: top-k of the logits themselves
        return torch.topk(logits, k, dim=-1).indices.numpy()
    return torch.topk(torch.softmax(logits, dim=-1, dtype=torch.float), k, dim=-1).indices.numpy()


def hf_router_choice(hf, router_logits: np.ndarray, moe_layers, **changes) -> tuple[np.ndarray, np.ndarray]:
    """(experts sorted, their weights) ``[L, B, T, k]`` chosen by each MoE layer's own HF router
    module applied to HF's router logits (a copy whose weight is the identity, so its logits are
    the ones given); ``changes`` set attributes of the copy (e.g. ``num_group=1``)."""
    idx_out, w_out = [], []
    for li, layer in enumerate(moe_layers):
        gate = copy.deepcopy(hf.model.layers[layer].mlp.gate)
        e = router_logits.shape[-1]
        gate.weight = torch.nn.Parameter(torch.eye(e))
        gate.hidden_dim = e
        for key, value in changes.items():
            if key == "e_score_correction_bias":
                gate.e_score_correction_bias.zero_()
            else:
                setattr(gate, key, value)
        with torch.no_grad():
            _, w, idx = gate(torch.tensor(router_logits[li]).reshape(-1, e))
        order = torch.argsort(idx, dim=-1)
        shape = router_logits.shape[1:-1] + (idx.shape[-1],)
        idx_out.append(torch.gather(idx, -1, order).reshape(shape).numpy())
        w_out.append(torch.gather(w, -1, order).reshape(shape).numpy())
    return np.stack(idx_out), np.stack(w_out)


@pytest.mark.parametrize("family,name,overrides", CASES, ids=[f"{f}-{n}" for f, n, _ in CASES])
def test_fp32_logits_and_topk_match_hf_with_left_and_right_padding(tmp_path, family, name, overrides):
    hf = make_hf_model(family, seed=1, **overrides)
    path = save_hf_model(hf, str(tmp_path / "ckpt"))
    hf = load_hf_model(path)
    model, params = rise_jax.load_model(path, dtype="float32", dispatch="dense", progress=False)
    cfg = model.cfg
    total = 20
    ids, mask = padded_batch(cfg.vocab_size, [20, 13, 7, 16], total, [False, True, False, True], seed=2)

    ref_logits, ref_router = hf_forward(hf, ids, mask)
    out = rise_jax.forward(model, params, jnp.asarray(ids), jnp.asarray(mask), return_routing=True)
    real = mask.astype(bool)
    err = np.abs(np.asarray(out.logits) - ref_logits)[real].max()
    assert err < 1e-4, f"max abs logit error {err}"

    # Per-layer top-k identical to HF's on every real token.
    ours = np.asarray(out.routing.topk_indices)
    assert ours.shape == (cfg.num_moe_layers, *ids.shape, cfg.top_k)
    if family in DEEPSEEK_STYLE:  # HF's own router modules choose (unordered top-k: compare as sets)
        ref_idx, ref_w = hf_router_choice(hf, ref_router, cfg.moe_layer_ids)
        order = np.argsort(ours, axis=-1)
        np.testing.assert_array_equal(np.take_along_axis(ours, order, -1)[:, real], ref_idx[:, real])
        # The weights the experts are combined with: the router's (unbiased) weights x the scale.
        got_w = np.take_along_axis(np.asarray(out.routing.topk_weights), order, -1) * cfg.routed_scaling_factor
        np.testing.assert_allclose(got_w[:, real], ref_w[:, real], rtol=1e-5, atol=1e-6)
        # The selection bias and the expert groups each change the experts of some tokens.
        knobs = []
        if cfg.router_selection_bias:
            knobs.append({"e_score_correction_bias": 0})
        if cfg.router_topk_groups < cfg.router_groups:
            knobs.append({"topk_method": "greedy"} if family == "deepseek_v2" else {"num_group": 1, "topk_group": 1})
        assert knobs or name.startswith("greedy"), "a DeepSeek-style case without a bias or groups to check"
        for knob in knobs:
            alt, _ = hf_router_choice(hf, ref_router, cfg.moe_layer_ids, **knob)
            changed = (alt != ref_idx).any(-1)[:, real]
            assert changed.any(), f"{knob} changes no token's experts"
    else:
        ref_idx = hf_topk(family, ref_router, cfg.top_k, cfg.norm_topk_prob, cfg.router_jitter_noise)
        np.testing.assert_array_equal(ours[:, real], ref_idx[:, real])
    np.testing.assert_allclose(np.asarray(out.routing.router_logits)[:, real], ref_router[:, real], atol=1e-5)


# The DeepSeek-style families meet generate's positions in test_deepseek_style.py (decoding equal to
# HF generate with left padding), and two of them carry the bf16 check (MLA; GQA + sigmoid router).
OLDER = [f for f in FAMILY_CASES if f not in DEEPSEEK_STYLE]


@pytest.mark.parametrize("family", OLDER)
def test_generate_style_positions_match_hf(tmp_path, family):
    """Left padding with positions = cumsum(mask) - 1, HF generate's convention."""
    over = {"rope_parameters": longrope(8, 10)} if family == "phimoe" else {}
    path = save_hf_model(make_hf_model(family, seed=3, **over), str(tmp_path / "ckpt"))
    hf = load_hf_model(path)
    model, params = rise_jax.load_model(path, dtype="float32", progress=False)
    ids, mask = padded_batch(model.cfg.vocab_size, [12, 5, 9], 12, [True, True, True], seed=4)
    pos = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    ref_logits, _ = hf_forward(hf, ids, mask, positions=pos)
    out = rise_jax.forward(model, params, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(pos))
    err = np.abs(np.asarray(out.logits) - ref_logits)[mask.astype(bool)].max()
    assert err < 1e-4


@pytest.mark.parametrize("family", OLDER + ["deepseek_v2", "glm4_moe"])
def test_bf16_mean_token_kl_against_hf_bf16_is_small(tmp_path, family):
    path = save_hf_model(make_hf_model(family, seed=5), str(tmp_path / "ckpt"))
    hf = load_hf_model(path, dtype=torch.bfloat16)
    model, params = rise_jax.load_model(path, dtype="bfloat16", progress=False)
    ids, mask = padded_batch(model.cfg.vocab_size, [16, 10], 16, [False, True], seed=6)
    ref_logits, _ = hf_forward(hf, ids, mask)
    out = rise_jax.forward(model, params, jnp.asarray(ids), jnp.asarray(mask))
    p = jax.nn.log_softmax(jnp.asarray(ref_logits, jnp.float32), -1)
    q = jax.nn.log_softmax(out.logits.astype(jnp.float32), -1)
    kl = jnp.sum(jnp.exp(p) * (p - q), -1)
    mean_kl = float(kl[mask.astype(bool)].mean())
    assert mean_kl <= 1e-3, mean_kl


def test_sparsemixer_eval_weights_match_hf_including_near_ties():
    rng = np.random.RandomState(0)
    scores = rng.randn(512, 16).astype(np.float32)
    # Near-ties around the top logits exercise the relative 2·eps band.
    scores[:128, 3] = scores[:128].max(-1) * (1 - 0.015 * rng.rand(128))
    scores[128:256] *= 0.01
    for eps in (0.01, 0.1):
        ref_w, ref_i = sparsemixer(torch.tensor(scores), jitter_eps=eps, training=False)
        w, i = routers.sparsemixer_eval(jnp.asarray(scores), eps)
        np.testing.assert_array_equal(np.asarray(i), ref_i.numpy())
        assert np.abs(np.asarray(w) - ref_w.numpy()).max() < 1e-6


def test_sparsemixer_train_backward_equals_hf_phimoe_multiplier():
    """The custom VJP reproduces transformers' PhimoeMultiplier.backward."""
    from transformers.models.phimoe.modeling_phimoe import PhimoeMultiplier

    rng = np.random.RandomState(1)
    n, e = 32, 8
    scores = rng.randn(n, e).astype(np.float32)
    gates = jax.nn.softmax(jnp.asarray(rng.randn(n, e).astype(np.float32)), -1)
    sel = rng.randint(0, e, (n, 1))
    mult = jnp.take_along_axis(gates, jnp.asarray(sel), -1)
    mask_for_one = jnp.asarray(np.where(rng.rand(n, 1) > 0.5, 1.0, 0.3333).astype(np.float32))
    g_out = rng.randn(n, 1).astype(np.float32)

    ts = torch.tensor(scores, requires_grad=True)
    out = PhimoeMultiplier.apply(
        ts,
        torch.tensor(np.asarray(mult)),
        torch.tensor(sel),
        torch.tensor(np.asarray(gates)),
        torch.tensor(np.asarray(mask_for_one)),
    )
    out.backward(torch.tensor(g_out))

    onehot = jax.nn.one_hot(sel[:, 0], e)
    f = lambda s: routers._phimoe_multiplier(s, mult, onehot, gates, mask_for_one)  # noqa: E731
    y, vjp = jax.vjp(f, jnp.asarray(scores))
    np.testing.assert_allclose(np.asarray(y), out.detach().numpy(), atol=1e-7)
    np.testing.assert_allclose(np.asarray(vjp(jnp.asarray(g_out))[0]), ts.grad.numpy(), atol=1e-6)


def test_sparsemixer_train_mode_is_seeded_and_differentiable(tmp_path):
    path = save_hf_model(make_hf_model("phimoe", seed=7, router_jitter_noise=0.5), str(tmp_path / "ckpt"))
    model, params = rise_jax.load_model(path, dtype="float32", router_mode="sparsemixer_train", progress=False)
    ids = jnp.asarray(np.random.RandomState(0).randint(0, 128, (2, 8)))

    def loss(p, key):
        out = model.apply({"params": p}, ids, rngs={"router": key}, return_routing=True)
        return jnp.mean(out.logits**2), out.routing.topk_indices

    (l1, i1), g = jax.value_and_grad(loss, has_aux=True)(params, jax.random.PRNGKey(0))
    l2, i2 = loss(params, jax.random.PRNGKey(0))
    _, i3 = loss(params, jax.random.PRNGKey(1))
    assert float(l1) == float(l2) and np.array_equal(i1, i2)
    assert not np.array_equal(i1, i3)  # sampling depends on the key
    assert float(jnp.abs(g["layers"]["moe"]["router"]).sum()) > 0  # router gets the Heun gradient


def test_layers_are_scanned_so_program_size_does_not_grow_with_depth(tmp_path):
    sizes = []
    for layers in (2, 8):
        cfg = rise_jax.config_from_hf_dict({**_qwen_dict(), "num_hidden_layers": layers})
        model = rise_jax.MoEModel(cfg)
        params = jax.eval_shape(lambda m=model: m.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32)))
        jaxpr = jax.make_jaxpr(lambda p, m=model: m.apply(p, jnp.zeros((1, 4), jnp.int32)))(params)
        sizes.append(len(str(jaxpr)))
    assert abs(sizes[0] - sizes[1]) < 0.02 * sizes[0], sizes


def test_routing_output_is_absent_unless_requested(qwen_dir):
    model, params = rise_jax.load_model(qwen_dir, dtype="float32", progress=False)
    ids = jnp.ones((1, 5), jnp.int32)
    assert rise_jax.forward(model, params, ids).routing is None
    lowered = jax.jit(lambda p: model.apply({"params": p}, ids)).lower(params)
    assert len(jax.tree_util.tree_leaves(lowered.out_info)) == 2  # logits and hidden only
    info = rise_jax.forward(model, params, ids, return_routing=True).routing
    mask = np.asarray(info.activation_mask())
    assert mask.shape == (model.cfg.num_moe_layers, 1, 5, model.cfg.num_experts)
    assert (mask.sum(-1) == model.cfg.top_k).all()


def _qwen_dict():
    from hf_reference import QWEN_BASE

    return {"model_type": "qwen3_moe", **QWEN_BASE}


@pytest.mark.parametrize("family", ["gpt_oss", "deepseek_v3", "llama4_text", "gemma4_text"])
def test_packed_rows_equal_hf_on_each_sequence_alone(tmp_path, family):
    """The packing convention: three sequences in one row (segment ids 1, 2, 3, then padding),
    positions restarting per segment; every token's logits and experts equal HF's run on its
    sequence alone (sinks + per-layer sliding windows: GPT-OSS; MLA + sigmoid router: DeepSeek-V3;
    chunked attention and the NoPE temperature by position: Llama-4; sliding and full runs of their
    own shapes: Gemma-4, whose HF router output is its probabilities, so logits only there;
    Qwen3-Next's linear attention: tests/test_qwen3_next.py)."""
    from rise_jax.models.layers import segment_positions

    hf = make_hf_model(family, seed=4)
    path = save_hf_model(hf, str(tmp_path / "ckpt"))
    hf = load_hf_model(path)
    model, params = rise_jax.load_model(path, dtype="float32", dispatch="dense", progress=False)
    rng = np.random.RandomState(0)
    seqs = [rng.randint(1, model.cfg.vocab_size, n) for n in (9, 5, 7)]
    ids, seg = np.zeros((1, 24), np.int32), np.zeros((1, 24), np.int32)
    at = 0
    for g, s in enumerate(seqs):
        ids[0, at : at + len(s)], seg[0, at : at + len(s)] = s, g + 1
        at += len(s)
    seg_j = jnp.asarray(seg)
    out = rise_jax.forward(model, params, jnp.asarray(ids), seg_j, segment_positions(seg_j), return_routing=True)
    at = 0
    for s in seqs:
        ref_logits, ref_router = hf_forward(hf, s[None].astype(np.int64), np.ones((1, len(s)), np.int64))
        got = np.asarray(out.logits)[0, at : at + len(s)]
        np.testing.assert_allclose(got, ref_logits[0], atol=1e-4)
        if family != "gemma4_text":
            np.testing.assert_allclose(
                np.asarray(out.routing.router_logits)[:, 0, at : at + len(s)], ref_router[:, 0], atol=1e-5
            )
        at += len(s)


@pytest.mark.parametrize("family", ["qwen3_moe", "gpt_oss", "gemma4_text"])
def test_an_inference_forward_reads_experts_in_place_and_still_equals_hf(tmp_path, family):
    """``inference=True`` (replay, evaluation): each used expert is read straight from the run's
    stacked ``[L, E, ...]`` parameters instead of from the per-layer ``[E, ...]`` copy ``nn.scan``
    makes. Same logits as HF and same experts per token as the plain forward (left and right
    padding); the compiled program holds no ``[E, H, I]`` array, the plain one does; and the expert
    weights get no gradient through it (the promise a caller makes), while the router does."""
    path = save_hf_model(make_hf_model(family, seed=5), str(tmp_path / "ckpt"))
    hf = load_hf_model(path)
    model, params = rise_jax.load_model(path, dtype="float32", dispatch="grouped_scan", progress=False)
    cfg = model.cfg
    ids, mask = padded_batch(cfg.vocab_size, [14, 9, 5], 14, [False, True, True], seed=6)
    ref_logits, _ = hf_forward(hf, ids, mask)
    j_ids, j_mask = jnp.asarray(ids), jnp.asarray(mask)
    plain = rise_jax.forward(model, params, j_ids, j_mask, return_routing=True)
    fast = rise_jax.forward(model, params, j_ids, j_mask, return_routing=True, inference=True)
    real = mask.astype(bool)
    assert np.abs(np.asarray(fast.logits) - ref_logits)[real].max() < 1e-4
    np.testing.assert_allclose(np.asarray(fast.logits), np.asarray(plain.logits), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(fast.routing.topk_indices), np.asarray(plain.routing.topk_indices))

    layer_slice = f"f32[{cfg.num_experts},{cfg.hidden_size},{cfg.moe_intermediate_size}]"

    def program(inference):
        fn = jax.jit(lambda p: model.apply({"params": p}, j_ids, j_mask, inference=inference).logits)
        return fn.lower(params).compile().as_text()

    assert layer_slice in program(False) and layer_slice not in program(True)

    def loss(p, inference):
        return jnp.sum(model.apply({"params": p}, j_ids, j_mask, inference=inference).logits ** 2)

    grad = jax.jit(jax.grad(loss), static_argnums=1)  # one program each, not op by op
    grads = grad(params, True)
    run = next(name for name in grads if "moe" in grads[name])
    assert not any(np.any(np.asarray(g)) for g in jax.tree_util.tree_leaves(grads[run]["moe"]["experts"]))
    router = {k: v for k, v in grads[run]["moe"].items() if k != "experts"}  # the router's own weights
    assert any(np.any(np.asarray(g)) for g in jax.tree_util.tree_leaves(router))
    plain_grads = grad(params, False)  # a plain forward trains every expert (pretraining)
    assert np.any(np.asarray(plain_grads[run]["moe"]["experts"]["gate_proj"]))
