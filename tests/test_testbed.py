"""The controlled testbed: cipher languages, the pretraining mix, the router losses, the
``pretrain`` stage (resume) and a tiny study through the CLI."""

import os

import numpy as np
import pytest

from rise_jax.testbed.ciphers import base_words, make_cipher, vocabulary, vocabulary_overlap
from rise_jax.testbed.corpus import base_splits, cipher_languages
from rise_jax.testbed.mix import batch_rows, row_streams

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _base():
    lines = [line for split in base_splits(0).values() for line in split]
    return lines, sorted({w for line in lines for w in line.split()})


@pytest.mark.parametrize("shared", [0.0, 0.5, 1.0])
def test_a_cipher_is_a_bijection_whose_round_trip_is_exact_and_keeps_the_asked_share(shared):
    lines, vocab = _base()
    lang = make_cipher("qab", shared, vocab, seed=0)
    assert len(set(lang.forward.values())) == len(vocab)  # one word per base word, none twice
    assert all(lang.decode(lang.encode(line)) == line for line in lines)
    assert len(lang.shared_words()) == round(shared * len(vocab))
    private = [w for b, w in lang.forward.items() if b != w]
    assert all(w.startswith("qab_") for w in private) and not set(private) & set(vocab)
    # the private words are a permutation of the base words' indices, not the identity order
    order = [int(lang.forward[b].split("_")[1]) for b in vocab if lang.forward[b] != b]
    assert sorted(order) != order or len(order) < 2


def test_partial_ciphers_share_only_the_base_words_they_keep_and_the_word_tokenizer_is_a_bijection(tmp_path):
    from tokenizers import Tokenizer

    from rise_jax.testbed.pretrain import write_word_tokenizer

    lines, vocab = _base()
    langs = cipher_languages(["qaa", "qab", "qad", "qae"], [1.0, 0.0, 0.5, 0.5], seed=0)
    base, full, half_a, half_b = langs
    assert base.encode(lines[0]) == lines[0]
    assert vocabulary_overlap(base, full) == 0.0
    kept = len(half_a.shared_words())
    assert vocabulary_overlap(base, half_a) == pytest.approx(kept / (2 * len(vocab) - kept))
    assert set(half_a.forward.values()) & set(half_b.forward.values()) == half_a.shared_words() & half_b.shared_words()
    assert half_a.shared_words() != half_b.shared_words()  # each language draws its own
    words = vocabulary(langs)
    write_word_tokenizer(words, str(tmp_path))
    tok = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for lang in langs:
        text = lang.encode(lines[5])
        ids = tok.encode(text).ids
        assert ids[-1] == 1 and 0 not in ids  # <eos> appended, no unknown word
        assert [words[i] for i in ids[:-1]] == text.split()
    assert base_words("The cat sings.") == "the cat sings ."


def test_the_mix_shares_hold_in_the_sampled_batches():
    weights, batch = [100, 10, 1], 8
    streams = row_streams(weights, 111 * batch)
    p = np.asarray(weights) / 111
    counts = np.cumsum(np.eye(3)[streams], axis=0)
    n = np.arange(1, len(streams) + 1)[:, None]
    assert np.all(np.abs(counts - n * p) < 1.0)  # every prefix within one row of its share
    assert counts[-1].tolist() == [800, 80, 8]
    rows = [batch_rows(streams, [384, 384, 384], step, batch, seed=0) for step in range(111)]
    assert [s for r in rows for s, _ in r] == streams.tolist()
    assert batch_rows(streams, [384] * 3, 7, batch, seed=0) == rows[7]  # a step's batch is its own
    assert batch_rows(streams, [384] * 3, 7, batch, seed=1) != rows[7]


def test_the_router_losses_equal_hf_load_balancing_and_the_st_moe_z_loss_formula():
    import jax
    import jax.numpy as jnp
    import torch
    from transformers.models.qwen3_moe.modeling_qwen3_moe import load_balancing_loss_func

    from rise_jax.models.router_losses import load_balancing_loss, router_z_loss
    from rise_jax.models.routers import RoutingInfo

    L, B, T, E, k = 3, 2, 5, 8, 2
    logits = np.random.default_rng(0).normal(size=(L, B, T, E)).astype(np.float32) * 2
    mask = np.ones((B, T), np.int32)
    mask[1, 3:] = 0
    probs = jax.nn.softmax(jnp.asarray(logits), axis=-1)
    weights, idx = jax.lax.top_k(probs, k)
    routing = RoutingInfo(topk_indices=idx, topk_weights=weights, router_logits=jnp.asarray(logits))
    ours = float(load_balancing_loss(routing, jnp.asarray(mask)))
    gate = tuple(torch.from_numpy(logits[layer].reshape(B * T, E)) for layer in range(L))
    theirs = float(load_balancing_loss_func(gate, E, k, torch.from_numpy(mask)))
    assert ours == pytest.approx(theirs, rel=1e-5)
    # the direct formula: f_i = top-k assignments / rows, P_i = mean probability, E * sum f_i P_i
    real = mask.astype(bool)
    rows = [(layer, b, t) for layer in range(L) for b in range(B) for t in range(T) if real[b, t]]
    f = np.zeros(E)
    p = np.zeros(E)
    for layer, b, t in rows:
        f[np.asarray(idx[layer, b, t])] += 1
        p += np.exp(logits[layer, b, t]) / np.exp(logits[layer, b, t]).sum()
    assert ours == pytest.approx(E * np.sum(f / len(rows) * p / len(rows)), rel=1e-5)
    # equal probabilities (zero logits): P_i = 1/E and sum_i f_i = k, so the loss is k
    flat = RoutingInfo(topk_indices=idx, topk_weights=weights, router_logits=jnp.zeros_like(logits))
    assert float(load_balancing_loss(flat, jnp.asarray(mask))) == pytest.approx(k, rel=1e-6)
    z = np.mean([np.log(np.exp(logits[layer, b, t]).sum()) ** 2 for layer, b, t in rows])
    assert float(router_z_loss(routing, jnp.asarray(mask))) == pytest.approx(z, rel=1e-5)
