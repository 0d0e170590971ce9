"""Frozen weights in int8 / fp8 (``model.frozen_dtype``): quantization error bounds, the stored
layout, logits and routing against the full-precision model, generation, training from the
original weights, sharding, and clear errors. The demo-model checks (perplexity, top-k agreement,
the RISE gain with an int8 base, export isolation) are in tests/test_pipeline.py."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from hf_reference import make_hf_model, save_hf_model

import rise_jax
from rise_jax.checkpoints.hf_load import expert_reader
from rise_jax.evaluation.generate import generate
from rise_jax.models.quantized import (
    QUANTIZED_GROUPS,
    QuantizedArray,
    check_backend,
    is_quantizable,
    quantize,
    resolve_frozen_dtype,
)
from rise_jax.training.methods import FullExperts
from rise_jax.training.step import make_optimizer, make_steps

HERE = os.path.dirname(os.path.abspath(__file__))
FAMILIES = {"qwen3_moe": dict(mlp_only_layers=[1]), "phimoe": {}, "gpt_oss": {}, "deepseek_v3": {}}


def _kernel(seed=0):
    """[layers, in, out] with channels of very different magnitudes and one all-zero channel."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((3, 40, 24)).astype(np.float32) * np.logspace(-3, 1, 24, dtype=np.float32)
    w[1, :, 5] = 0.0
    return w


def test_int8_error_is_at_most_half_a_step_of_each_output_channel():
    w = _kernel()
    q, s = quantize(w, "int8")
    assert q.dtype == np.int8 and s.shape == (3, 1, 24) and s.dtype == np.float32
    err = np.abs(q.astype(np.float32) * s - w)
    bound = np.max(np.abs(w), axis=-2, keepdims=True) / 254
    assert np.all(err <= bound * (1 + 1e-6) + 1e-30)
    assert np.all(q[1, :, 5] == 0) and s[1, 0, 5] == 1.0  # a zero channel stays exactly zero
    assert np.abs(q).max() == 127  # the largest element of each channel uses the full range


def test_fp8_error_is_within_e4m3_rounding_of_each_element():
    w = _kernel(1)
    q, s = quantize(w, "float8_e4m3fn")
    assert q.dtype == ml_dtypes.float8_e4m3fn
    err = np.abs(q.astype(np.float32) * s - w)
    # 3 mantissa bits: relative error <= 2^-4 in the normal range, <= 2^-10 * scale below it
    assert np.all(err <= np.abs(w) / 16 + s * 2.0**-10 + 1e-30)


def test_the_stored_layout_indexes_leading_axes_and_round_trips():
    w = _kernel()
    q, s = quantize(w, "int8")
    qa = QuantizedArray(jnp.asarray(q), jnp.asarray(s), jnp.float32)
    assert qa.shape == (3, 40, 24) and qa.ndim == 3 and qa.nbytes == q.nbytes + s.nbytes
    np.testing.assert_array_equal(qa[1].astype(jnp.float32), q[1].astype(np.float32) * s[1])
    rows = qa[np.array([0, 2])]
    assert rows.shape == (2, 40, 24)
    with pytest.raises(IndexError, match="leading 1 axes only"):
        qa[0, 3]
    leaves, tree = jax.tree_util.tree_flatten(qa)
    assert [x.dtype for x in leaves] == [jnp.int8, jnp.float32]
    assert jax.tree_util.tree_unflatten(tree, leaves).dtype == jnp.float32
    # Setting full-precision rows requantizes them with their own scales.
    new = jnp.asarray(w[0] * 3.0)
    merged = qa.set(2, new)
    np.testing.assert_array_equal(merged.qvalue[2], quantize(np.asarray(new), "int8")[0])
    np.testing.assert_array_equal(merged.qvalue[:2], qa.qvalue[:2])
    assert merged.qvalue.dtype == jnp.int8


def test_which_leaves_are_stored_quantized():
    yes = [
        ("layers", "moe", "experts", "gate_proj"),
        ("layers", "moe", "experts", "down_proj"),
        ("dense_layers", "mlp", "up_proj", "kernel"),
        ("layers", "moe", "shared_expert", "down_proj", "kernel"),
        ("lm_head", "kernel"),
    ]
    attention = [("layers", "attn", "q_proj", "kernel"), ("layers", "attn", "o_proj", "kernel")]
    no = [
        ("layers", "moe", "experts", "gate_bias"),
        ("layers", "moe", "router"),
        ("layers", "attn", "q_proj", "bias"),
        ("layers", "input_norm", "scale"),
        ("embed_tokens", "embedding"),
        ("layers", "moe", "shared_expert_gate", "kernel"),
        ("lm_head", "bias"),
    ]
    assert all(is_quantizable(p) for p in yes) and not any(is_quantizable(p) for p in no + attention)
    assert all(is_quantizable(p, QUANTIZED_GROUPS) for p in yes + attention)
    assert not any(is_quantizable(p, QUANTIZED_GROUPS) for p in no)
    assert not is_quantizable(yes[0], ("mlp", "lm_head")) and is_quantizable(yes[2], ("mlp",))


def _dequantized(params):
    return jax.tree_util.tree_map(
        lambda x: x.dequantize() if isinstance(x, QuantizedArray) else x,
        params,
        is_leaf=lambda x: isinstance(x, QuantizedArray),
    )


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def tiny(request, tmp_path_factory):
    path = save_hf_model(
        make_hf_model(request.param, seed=3, **FAMILIES[request.param]), str(tmp_path_factory.mktemp("q"))
    )
    return request.param, path


# Max logit error / max |logit|, measured over seeds 0-4 of the three families: int8 0.5-2.1 %,
# fp8 2.2-4.4 %. Not fp8 on the seed-3 GPT-OSS: its test experts are scaled x10 past the SwiGLU
# clamp (hf_reference), and fp8's 6 % steps in v_proj flip 2 % of its routes (90 % logit
# change); int8 flips none.
LOGIT_BOUND = {"int8": 0.03, "float8_e4m3fn": 0.06}


@pytest.mark.parametrize("fmt", ["int8", "float8_e4m3fn"])
def test_quantized_logits_stay_close_to_the_full_precision_model(tiny, fmt):
    family, path = tiny
    model, params = rise_jax.load_model(path, dtype="float32", progress=False)
    qmodel, qparams = rise_jax.load_model(
        path, dtype="float32", progress=False, frozen_dtype=fmt, frozen_groups=QUANTIZED_GROUPS
    )
    quantized = [
        "/".join(str(getattr(k, "key", k)) for k in p)
        for p, leaf in jax.tree_util.tree_flatten_with_path(qparams, is_leaf=lambda x: isinstance(x, QuantizedArray))[0]
        if isinstance(leaf, QuantizedArray)
    ]
    assert any("experts/gate_proj" in q for q in quantized) and any("q_proj/kernel" in q for q in quantized)
    assert not any("router" in q or "norm" in q or "embed" in q for q in quantized)
    ids = jnp.asarray(np.random.RandomState(0).randint(0, model.cfg.vocab_size, (2, 12)))
    out = rise_jax.forward(qmodel, qparams, ids, return_routing=True)
    # The quantized path computes exactly what the dequantised weights give ...
    deq = rise_jax.forward(model, _dequantized(qparams), ids, return_routing=True)
    np.testing.assert_allclose(out.logits, deq.logits, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(out.routing.topk_indices, deq.routing.topk_indices)
    assert out.routing.router_logits.dtype == jnp.float32
    # ... and stays close to the full-precision model.
    if family == "gpt_oss" and fmt == "float8_e4m3fn":
        return
    ref = rise_jax.forward(model, params, ids, return_routing=True)
    rel = float(jnp.max(jnp.abs(out.logits - ref.logits)) / jnp.max(jnp.abs(ref.logits)))
    assert 0 < rel < LOGIT_BOUND[fmt], (family, fmt, rel)


# deepseek_v3 decodes on an int8 base in the expert-parallel check below; its MLA projections'
# quantized logits are checked above.
BASE_FAMILIES = sorted(f for f in FAMILIES if f != "deepseek_v3")


@pytest.mark.parametrize("tiny", BASE_FAMILIES, indirect=True)
def test_generation_with_an_int8_base_equals_greedy_on_its_dequantised_weights(tiny):
    _, path = tiny
    model, params = rise_jax.load_model(path, dtype="float32", progress=False, frozen_dtype="int8")
    ids = np.random.RandomState(1).randint(0, model.cfg.vocab_size, (2, 7))
    got = generate(model, params, ids, np.ones_like(ids), max_new_tokens=5, stop_ids=[], pad_id=0)
    deq, cur, want = _dequantized(params), jnp.asarray(ids), []
    for _ in range(5):
        nxt = jnp.argmax(rise_jax.forward(model, deq, cur).logits[:, -1], -1)
        want.append(np.asarray(nxt))
        cur = jnp.concatenate([cur, nxt[:, None]], 1)
    assert got == np.stack(want, 1).tolist()


@pytest.mark.parametrize("tiny", BASE_FAMILIES, indirect=True)
def test_training_on_an_int8_base_starts_from_the_original_experts(tiny):
    """The CPU default dispatch on every family; every dispatch through trained copies over int8
    experts (values and gradients) is tests/test_dispatch.py's ``substituted_int8`` source."""
    _, path = tiny
    _train_on_int8(path, "grouped_scan")


def _train_on_int8(path, dispatch):
    model, params = rise_jax.load_model(path, dtype="float32", progress=False, frozen_dtype="int8", dispatch=dispatch)
    full_model, full = rise_jax.load_model(path, dtype="float32", progress=False, dispatch=dispatch)
    last = model.cfg.num_moe_layers - 1
    experts = [(0, 1), (last, 3), (last, model.cfg.num_experts - 1)]
    trainable = FullExperts.init(params, model.cfg, experts, (), expert_reader(path, model.cfg))
    reference = FullExperts.init(full, full_model.cfg, experts)
    for a, b in zip(
        jax.tree_util.tree_leaves(trainable.weights), jax.tree_util.tree_leaves(reference.weights), strict=True
    ):
        np.testing.assert_array_equal(a, b)  # the checkpoint's weights, not their int8 copies
    tx, _ = make_optimizer(1e-3, 10)
    grad_step, _, _ = make_steps(model, tx)
    ids = jnp.asarray(np.random.RandomState(0).randint(0, model.cfg.vocab_size, (2, 12)))
    mask = jnp.ones_like(ids)
    loss, _, grads = grad_step(trainable, params, ids, mask, mask, jax.random.PRNGKey(0))
    loss_deq, _, grads_deq = grad_step(trainable, _dequantized(params), ids, mask, mask, jax.random.PRNGKey(0))
    assert float(loss) == pytest.approx(float(loss_deq), rel=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(grads_deq), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # The trained experts merge into the quantized base (evaluation's 'trained' variant).
    merged = trainable.merge(params)
    assert isinstance(merged[next(iter(trainable.slots))]["moe"]["experts"]["gate_proj"], QuantizedArray)
    assert rise_jax.forward(model, merged, ids).logits.shape == (2, 12, model.cfg.vocab_size)


# The tiny checkpoints the 8-device check adds beside qwen3_moe, each with experts divisible by 8:
# deepseek_v3 (MLA's latent cache, the biased group-limited sigmoid router, a shared expert, a
# leading dense layer), llama4_text (top-1 sigmoid on the expert input, dense layers, chunked /
# NoPE attention; 8 experts instead of the tiny config's 6), gemma4_text (sliding / full runs of
# other shapes, the dense MLP beside the experts) and qwen3_next (Gated DeltaNet runs, whose
# decoding state is convolution history + recurrent state, and a gated shared expert).
SHARDED_INT8 = {"deepseek_v3": {}, "llama4_text": {"num_local_experts": 8}, "gemma4_text": {}, "qwen3_next": {}}


def test_an_int8_model_shards_its_quantized_experts_and_gives_the_single_device_logits(qwen_dir, tmp_path):
    """Expert-parallel over 8 devices on an int8 base, one subprocess for every family of
    ``SHARDED_INT8``: logits and greedy decoding equal to one device."""
    others = [
        save_hf_model(make_hf_model(family, seed=4, **overrides), str(tmp_path / family))
        for family, overrides in SHARDED_INT8.items()
    ]
    env = {
        **os.environ,
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
    }
    r = subprocess.run(
        [sys.executable, os.path.join(HERE, "quantized_sharded_check.py"), qwen_dir, *others],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [line for line in r.stdout.strip().splitlines() if line.startswith("ok ")]
    assert [line.split(":")[0] for line in lines] == [f"ok {f}" for f in ("qwen3_moe", *SHARDED_INT8)], r.stdout


def test_frozen_dtype_errors_are_clear(monkeypatch):
    assert resolve_frozen_dtype("", "bfloat16") is None and resolve_frozen_dtype("bfloat16", "bfloat16") is None
    assert resolve_frozen_dtype("int8", "float32") == "int8"
    with pytest.raises(
        ValueError,
        match=r"config.model.frozen_dtype = 'int4'; choose 'bfloat16' \(or empty: as loaded\), 'int8' or 'float8_e4m3fn'",
    ):
        resolve_frozen_dtype("int4", "bfloat16")
    check_backend("float8_e4m3fn")  # the CPU backend dequantises fp8 (emulated path)

    def no_fp8(dtype):
        raise TypeError("float8_e4m3fn is not supported on this backend")

    monkeypatch.setattr(jnp, "dtype", no_fp8)
    with pytest.raises(
        ValueError, match=r"frozen dtype float8_e4m3fn has neither a native nor an emulated path on the cpu backend"
    ):
        check_backend("float8_e4m3fn")
