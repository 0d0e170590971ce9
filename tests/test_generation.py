"""KV-cache decoding against full forwards and against HF ``generate``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hf_reference import load_hf_model, longrope, make_hf_model, padded_batch, save_hf_model

import rise_jax
from rise_jax.evaluation.generate import GenerationError, SamplingOptions, generate, left_pad, top_p_filter
from rise_jax.models.transformer import init_kv_cache

CASES = {
    "qwen3_moe": dict(),
    "qwen3_moe-mixed_layers": dict(mlp_only_layers=[1]),
    "phimoe": dict(),
    "phimoe-longrope": dict(rope_parameters=longrope(8, 64), max_position_embeddings=256),
    # Windows shorter than prompt + new tokens: the window is exceeded while decoding.
    "olmoe": dict(),
    "qwen2_moe-sliding": dict(use_sliding_window=True, sliding_window=5, max_window_layers=2),
    "mixtral-sliding": dict(sliding_window=6),
    "gpt_oss": dict(),  # sinks, sliding window 4 on alternate layers, yarn
}


def _load(tmp_path, name, seed=3, dispatch="auto"):
    family = name.split("-")[0]
    path = save_hf_model(make_hf_model(family, seed=seed, **CASES[name]), str(tmp_path / name))
    model, params = rise_jax.load_model(path, dtype="float32", dispatch=dispatch, progress=False)
    return path, model, params


def _left_padded(vocab, lengths, total, seed):
    ids, mask = padded_batch(vocab, lengths, total, [True] * len(lengths), seed=seed)
    return ids.astype(np.int32), mask.astype(np.int32)


@pytest.mark.parametrize("name", ["qwen3_moe-mixed_layers", "phimoe", "gpt_oss", "qwen2_moe-sliding"])
def test_kv_cache_decoding_equals_full_forward(tmp_path, name):
    _, model, params = _load(tmp_path, name)
    ids, mask = _left_padded(model.cfg.vocab_size, [9, 5, 12], 16, seed=1)
    full_ids = np.concatenate([ids, np.random.RandomState(2).randint(1, 100, (3, 4)).astype(np.int32)], 1)
    full_mask = np.concatenate([mask, np.ones((3, 4), np.int32)], 1)
    pos = np.where(full_mask > 0, np.cumsum(full_mask, 1) - 1, 1).astype(np.int32)
    ref = np.asarray(
        rise_jax.forward(model, params, jnp.asarray(full_ids), jnp.asarray(full_mask), jnp.asarray(pos)).logits
    )

    cache = init_kv_cache(model.cfg, 3, 20, jnp.float32)
    apply = jax.jit(lambda p, i, m, q, c: model.apply({"params": p}, i, m, q, kv_cache=c))
    out = apply(params, jnp.asarray(ids), jnp.asarray(full_mask), jnp.asarray(pos[:, :16]), cache)
    got = [np.asarray(out.logits)]
    cache = out.kv_cache
    for step in range(16, 20):
        out = apply(
            params,
            jnp.asarray(full_ids[:, step : step + 1]),
            jnp.asarray(full_mask),
            jnp.asarray(pos[:, step : step + 1]),
            cache,
        )
        cache = out.kv_cache
        got.append(np.asarray(out.logits))
    assert int(cache.index) == 20
    got = np.concatenate(got, 1)
    real = full_mask.astype(bool)
    assert np.abs(got - ref)[real].max() < 1e-4


@torch.no_grad()
def _hf_generate(path, ids, mask, new, eos):
    hf = load_hf_model(path)
    out = hf.generate(
        input_ids=torch.tensor(ids, dtype=torch.long),
        attention_mask=torch.tensor(mask, dtype=torch.long),
        max_new_tokens=new,
        do_sample=False,
        pad_token_id=0,
        eos_token_id=eos,
    )
    rows = out[:, ids.shape[1] :].numpy().tolist()
    trimmed = []
    for row in rows:
        seq = []
        for t in row:
            seq.append(t)
            if t == eos:
                break
        trimmed.append(seq)
    return trimmed


@pytest.mark.parametrize(
    "name, dispatch",
    [(n, "auto") for n in CASES]
    + [("qwen3_moe-mixed_layers", "blocked"), ("phimoe", "blocked"), ("gpt_oss", "blocked")],
)
def test_greedy_generation_equals_hf_generate_with_padding_and_stop_token(tmp_path, name, dispatch):
    path, model, params = _load(tmp_path, name, dispatch=dispatch)
    ids, mask = _left_padded(model.cfg.vocab_size, [11, 4, 8, 11], 11, seed=4)
    # A stop token the model actually emits mid-way in row 0, so stopping and padding are exercised.
    free = generate(model, params, ids, mask, max_new_tokens=12, stop_ids=[], pad_id=0)
    eos = free[0][5]
    ref = _hf_generate(path, ids, mask, 12, eos)
    ours = generate(model, params, ids, mask, max_new_tokens=12, stop_ids=[eos], pad_id=0)
    assert ours == ref
    assert ours[0][-1] == eos and len(ours[0]) <= 6


def test_sampling_is_seeded_and_tiny_top_p_is_greedy(qwen_dir):
    model, params = rise_jax.load_model(qwen_dir, dtype="float32", progress=False)
    ids, mask = _left_padded(model.cfg.vocab_size, [6, 9], 9, seed=5)
    kw = dict(max_new_tokens=8, stop_ids=[], pad_id=0)
    greedy = generate(model, params, ids, mask, **kw)
    nucleus = generate(model, params, ids, mask, sampling=SamplingOptions(temperature=1.0, top_p=1e-6, seed=1), **kw)
    assert nucleus == greedy
    a = generate(model, params, ids, mask, sampling=SamplingOptions(temperature=5.0, seed=7), **kw)
    b = generate(model, params, ids, mask, sampling=SamplingOptions(temperature=5.0, seed=7), **kw)
    c = generate(model, params, ids, mask, sampling=SamplingOptions(temperature=5.0, seed=8), **kw)
    assert a == b and a != c


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
    logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
    kept = np.isfinite(np.asarray(top_p_filter(logits, 0.7)))
    np.testing.assert_array_equal(kept, [[True, True, False, False]])
    kept = np.isfinite(np.asarray(top_p_filter(logits, 0.81)))
    np.testing.assert_array_equal(kept, [[True, True, True, False]])


def test_generation_rejects_right_padding_and_empty_prompts(qwen_dir):
    model, params = rise_jax.load_model(qwen_dir, dtype="float32", progress=False)
    ids, mask = padded_batch(model.cfg.vocab_size, [3, 5], 5, [False, False])
    with pytest.raises(GenerationError, match="left-padded"):
        generate(model, params, ids, mask, max_new_tokens=2, stop_ids=[], pad_id=0)
    with pytest.raises(GenerationError, match="at least one token"):
        left_pad([[1, 2], []], 0)
    with pytest.raises(GenerationError, match="temperature"):
        SamplingOptions(temperature=-1)


@pytest.mark.parametrize("dispatch", ["grouped_scan", "blocked"])
def test_decoding_never_copies_a_layers_whole_expert_slice(qwen_dir, dispatch):
    """With a KV cache the MoE layers read only the experts they use from the stacked ``[n, E, ...]``
    parameters: the compiled decode step holds no ``[E, H, I]`` buffer (``nn.scan``'s per-layer
    slice, which made decoding copy every expert of every layer at each step), while the forward
    without a cache does slice it."""
    model, params = rise_jax.load_model(qwen_dir, dtype="float32", dispatch=dispatch, progress=False)
    cfg = model.cfg
    slice_shape = f"f32[{cfg.num_experts},{cfg.hidden_size},{cfg.moe_intermediate_size}]"
    cache = init_kv_cache(cfg, 2, 8, jnp.float32)
    ids = jnp.ones((2, 1), jnp.int32)

    def step(p, c):
        return model.apply({"params": p}, ids, jnp.ones((2, 8), jnp.int32), kv_cache=c).logits

    def no_cache(p):
        return model.apply({"params": p}, ids).logits

    assert slice_shape in jax.jit(no_cache).lower(params).compile().as_text()
    assert slice_shape not in jax.jit(step).lower(params, cache).compile().as_text()


class _IdTokenizer:
    """Prompts written as space-separated token ids, so text-level generation can be compared on
    a tiny model without a real tokenizer."""

    pad_token_id = 0

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[int(t) for t in s.split()] for s in texts]}

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(str(t) for t in ids)


def test_continuous_batching_equals_static_greedy_batches(qwen_dir, monkeypatch):
    """The evaluator's continuous-batching generation writes what today's static batches (sorted
    by length) write, token for token: more prompts than slots (refills), prompt lengths in two
    buckets, a stop token some rows emit and others never do, and enough steps that the cache's
    columns are shifted."""
    from rise_jax.evaluation import continuous
    from rise_jax.evaluation.generate import generate_text
    from rise_jax.evaluation.tasks import Evaluator

    model, params = rise_jax.load_model(qwen_dir, dtype="float32", progress=False)
    rs = np.random.RandomState(6)
    prompts = [rs.randint(1, model.cfg.vocab_size, n).tolist() for n in [3, 17, 9, 40, 5, 12, 21, 2, 36, 26]]
    texts = [" ".join(map(str, p)) for p in prompts]
    tok, new = _IdTokenizer(), 16
    free = [
        [int(t) for t in row.split()]
        for row in generate_text(model, params, tok, texts, max_new_tokens=new, stop_ids=[], batch_size=4)
    ]
    # The token emitted mid-way by the most rows that some row never emits: a stop for some rows only.
    counts = {}
    for row in free:
        for t in set(row[1 : new - 1]):
            counts[t] = counts.get(t, 0) + 1
    stop = max((t for t in counts if counts[t] < len(free)), key=lambda t: (counts[t], -t))
    static = generate_text(model, params, tok, texts, max_new_tokens=new, stop_ids=[stop], batch_size=4)
    assert any(stop not in row for row in free) and sum(stop in row[1 : new - 1] for row in free) >= 2

    shifts = []
    real_shift = continuous._shift
    monkeypatch.setattr(
        continuous, "_shift", lambda state, shift: shifts.append(shift) or real_shift(state, shift=shift)
    )
    ev = Evaluator(model, params, tok, [stop], progress=False, decode_slots=2)
    assert ev.generate(texts, new, "test") == static
    assert shifts  # the run outlived the cache's spare columns
    # Refilling two slots at once (decoding pauses only when two are free) changes nothing either.
    ids = [[int(t) for t in text.split()] for text in texts]
    both = continuous.generate_continuous(
        model, params, ids, max_new_tokens=new, stop_ids=[stop], pad_id=0, slots=2, refill=2
    )
    assert [" ".join(str(t) for t in row if t != stop) for row in both] == static
    assert any(len(row.split()) < new - 1 for row in static)  # stopped early (stop token dropped from text)
