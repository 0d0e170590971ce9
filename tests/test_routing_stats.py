"""Routing replay statistics: exact counts against the HF torch model, invariance, artefact."""

import os

import numpy as np
import pytest
import torch
from hf_reference import hf_forward, load_hf_model, make_hf_model, save_hf_model
from transformers.models.phimoe.modeling_phimoe import sparsemixer

import rise_jax
from rise_jax.data.batching import TokenizedCorpus
from rise_jax.routing.stats import RoutingStats, replay


def corpora_for(vocab: int, seed: int = 0):
    rng = np.random.RandomState(seed)
    out = []
    for lang, n in (("en", 7), ("bn", 5), ("sw", 6)):
        # a few distinct lengths: an unpadded replay (batch 1) compiles once per length
        seqs = [rng.randint(1, vocab, rng.choice([3, 11, 24, 39])).astype(np.int32) for _ in range(n)]
        out.append(TokenizedCorpus(lang, seqs, [str(i) for i in range(n)], truncated=0, available=n))
    return out


def hf_recount(hf, family, corpus, k, num_experts, jitter):
    """Brute force: each sequence alone through HF with output_router_logits, top-k recomputed."""
    counts = None
    weight_mass = None
    for seq in corpus.sequences:
        ids = seq[None].astype(np.int64)
        _, router = hf_forward(hf, ids, np.ones_like(ids))
        logits = torch.tensor(router[:, 0])  # [L, T, E]
        if family == "qwen3_moe":
            probs = torch.softmax(logits, -1)
            w, idx = torch.topk(probs, k, -1)
            w = w / w.sum(-1, keepdim=True)
        else:
            w, idx = sparsemixer(logits.reshape(-1, num_experts), jitter_eps=jitter, training=False)
            w, idx = w.reshape(*logits.shape[:2], -1), idx.reshape(*logits.shape[:2], -1)
        onehot = torch.nn.functional.one_hot(idx, num_experts)  # [L, T, k, E]
        c = onehot.sum((1, 2)).numpy()
        wm = (onehot * w[..., None]).sum((1, 2)).numpy()
        counts = c if counts is None else counts + c
        weight_mass = wm if weight_mass is None else weight_mass + wm
    return counts, weight_mass


@pytest.mark.parametrize("family", ["qwen3_moe", "phimoe"])
def test_counts_equal_a_brute_force_recount_from_hf_router_logits(tmp_path, family):
    path = save_hf_model(make_hf_model(family, seed=3), str(tmp_path / "ckpt"))
    hf = load_hf_model(path)
    model, params = rise_jax.load_model(path, dtype="float32", progress=False)
    cfg = model.cfg
    corpora = corpora_for(cfg.vocab_size)
    stats = replay(model, params, corpora, batch_size=4, bucket_multiple=16, progress=False)
    for i, corpus in enumerate(corpora):
        want_counts, want_wm = hf_recount(hf, family, corpus, cfg.top_k, cfg.num_experts, cfg.router_jitter_noise)
        np.testing.assert_array_equal(stats.counts[i], want_counts)
        np.testing.assert_allclose(stats.weight_mass[i], want_wm, atol=1e-4)
        assert stats.tokens[i] == sum(len(s) for s in corpus.sequences)  # attention-mask sum
    freq = stats.frequencies()
    np.testing.assert_allclose(freq.sum(-1), cfg.top_k)  # every layer's frequencies sum to k
    np.testing.assert_allclose(
        stats.prob_mass.sum(-1), np.broadcast_to(stats.tokens[:, None], (3, cfg.num_moe_layers)), rtol=1e-5
    )


def test_results_do_not_depend_on_batch_size_or_padding(qwen_dir):
    model, params = rise_jax.load_model(qwen_dir, dtype="float32", progress=False)
    corpora = corpora_for(model.cfg.vocab_size, seed=1)
    a = replay(model, params, corpora, batch_size=1, bucket_multiple=1, seq_probs_languages=["en"], progress=False)
    b = replay(model, params, corpora, batch_size=5, bucket_multiple=64, seq_probs_languages=["en"], progress=False)
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_allclose(a.weight_mass, b.weight_mass, rtol=1e-5)
    np.testing.assert_allclose(a.prob_mass, b.prob_mass, rtol=1e-5)
    np.testing.assert_allclose(a.entropy_sum, b.entropy_sum, rtol=1e-5)
    np.testing.assert_allclose(a.seq_probs["en"], b.seq_probs["en"], atol=1e-6)


def test_flushing_keeps_counts_exact(qwen_dir):
    model, params = rise_jax.load_model(qwen_dir, dtype="float32", progress=False)
    corpora = corpora_for(model.cfg.vocab_size, seed=2)
    a = replay(model, params, corpora, batch_size=2, flush_every=1, progress=False)
    b = replay(model, params, corpora, batch_size=2, flush_every=1000, progress=False)
    np.testing.assert_array_equal(a.counts, b.counts)


def test_artefact_round_trips_and_reads_with_plain_numpy(tmp_path, qwen_dir):
    model, params = rise_jax.load_model(qwen_dir, dtype="float32", progress=False)
    corpora = corpora_for(model.cfg.vocab_size, seed=4)
    stats = replay(model, params, corpora, batch_size=3, seq_probs_languages=["en", "bn"], progress=False)
    d = stats.save(str(tmp_path / "routing_stats"))
    back = RoutingStats.load(d)
    assert back.languages == ["en", "bn", "sw"]
    np.testing.assert_array_equal(back.counts, stats.counts)
    assert sorted(back.seq_probs) == ["bn", "en"] and back.seq_ids["en"] == [str(i) for i in range(7)]
    rows = back.seq_probs["en"].sum(-1)
    np.testing.assert_allclose(rows, 1.0, rtol=1e-5)  # per-sequence mean distributions
    with np.load(os.path.join(d, "stats.npz"), allow_pickle=False) as z:  # no rise_jax needed
        assert z["counts"].dtype == np.int64 and list(z["languages"]) == ["en", "bn", "sw"]
    assert sorted(os.listdir(d)) == ["stats.npz", "summary.json"]  # no temp files left


def test_statistics_from_another_model_shape_are_refused(qwen_dir):
    from rise_jax.routing.stats import StatsError

    model, params = rise_jax.load_model(qwen_dir, dtype="float32", progress=False)
    stats = replay(model, params, corpora_for(model.cfg.vocab_size), batch_size=4, progress=False)
    other = rise_jax.config_from_hf_dict({**_cfg_dict(), "num_experts": 16})
    with pytest.raises(StatsError, match=r"made for a model with \(MoE layers, experts, top-k\) = \(3, 8, 2\)"):
        stats.check_model(other)


def _cfg_dict():
    from hf_reference import QWEN_BASE

    return {"model_type": "qwen3_moe", **QWEN_BASE}


def test_sequence_entropy_and_consistency_equal_a_per_sequence_recount_at_any_batching(qwen_dir):
    """Accumulated in the replay step; recomputed here one sequence at a time from the routing
    output (entropy of the token-mean softmax; mean top-k Jaccard over token pairs)."""
    model, params = rise_jax.load_model(qwen_dir, dtype="float32", progress=False)
    corpora = corpora_for(model.cfg.vocab_size, seed=5)
    corpora[1].sequences[0] = corpora[1].sequences[0][:1]  # a one-token sequence has no pairs
    a = replay(model, params, corpora, batch_size=1, bucket_multiple=1, progress=False)
    b = replay(model, params, corpora, batch_size=4, bucket_multiple=64, progress=False)
    for i, corpus in enumerate(corpora):
        ents, cons = [], []
        for seq in corpus.sequences:
            # each sequence alone, right-padded to one shape (causal: its tokens never see the pad)
            ids, mask = np.zeros((1, 40), np.int32), np.zeros((1, 40), np.int32)
            ids[0, : len(seq)], mask[0, : len(seq)] = seq, 1
            r = rise_jax.forward(model, params, ids, mask, return_routing=True).routing
            p = np.asarray(r.router_probs())[:, 0, : len(seq)].mean(1)  # [L, E]
            ents.append(-(p * np.log(p)).sum(-1))
            sets = np.asarray(r.topk_indices)[:, 0, : len(seq)]  # [L, T, k]
            if len(seq) > 1:
                cons.append(
                    [
                        np.mean(
                            [
                                len(set(s[t]) & set(s[u])) / len(set(s[t]) | set(s[u]))
                                for t in range(len(seq))
                                for u in range(t + 1, len(seq))
                            ]
                        )
                        for s in sets
                    ]
                )
        for stats in (a, b):
            np.testing.assert_allclose(stats.sequence_entropy()[i], np.mean(ents, 0), rtol=1e-5)
            np.testing.assert_allclose(stats.consistency()[i], np.mean(cons, 0), rtol=1e-5)
            assert stats.sequences[i] == len(corpus.sequences) and stats.consistency_sequences[i] == len(cons)


def test_packed_replay_statistics_equal_the_unpacked_replay(qwen_dir):
    """Several sequences a row (segment ids): same token counts and frequencies, the same
    per-sequence distributions, entropies and consistencies as one sequence a row."""
    from rise_jax.data.batching import packed_batches

    model, params = rise_jax.load_model(qwen_dir, dtype="float32", progress=False)
    corpora = corpora_for(model.cfg.vocab_size, seed=6)
    corpora[0].sequences[2] = corpora[0].sequences[2][:1]  # a one-token segment has no pairs
    rows = [b for b in packed_batches(corpora[0].sequences, 2, 16)]
    assert max(int(seg.max()) for _, seg, _ in rows) >= 3  # rows really hold several sequences
    kw = dict(batch_size=2, bucket_multiple=16, seq_probs_languages=["en", "bn", "sw"], progress=False)
    a, b = replay(model, params, corpora, pack=False, **kw), replay(model, params, corpora, pack=True, **kw)
    for key in ("counts", "tokens", "sequences", "consistency_sequences"):
        np.testing.assert_array_equal(getattr(b, key), getattr(a, key), err_msg=key)
    np.testing.assert_array_equal(b.frequencies(), a.frequencies())
    for key in ("weight_mass", "prob_mass", "entropy_sum", "seq_entropy_sum", "consistency_sum"):
        np.testing.assert_allclose(getattr(b, key), getattr(a, key), rtol=1e-5, err_msg=key)
    for lang in ("en", "bn", "sw"):
        np.testing.assert_allclose(b.seq_probs[lang], a.seq_probs[lang], atol=1e-6)
