"""The controlled testbed: cipher languages, the pretraining mix, the router losses, the
``pretrain`` stage (resume) and a tiny study through the CLI."""

import json
import os
import subprocess
import sys

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


def _tiny(stages="pretrain"):
    from rise_jax.configs import testbed

    c = testbed.get_config("test")
    c.stages, c.pretrain.progress = stages, False
    return c


def test_the_pretrain_stage_resumes_after_an_interruption_exactly_as_an_uninterrupted_run(tmp_path):
    from safetensors.numpy import load_file

    from rise_jax import launch
    from rise_jax.pipeline import PipelineError

    whole, cut = str(tmp_path / "whole"), str(tmp_path / "cut")
    assert launch.run(_tiny(), whole) == {"pretrain": "ran"}
    c = _tiny()
    c.pretrain.max_steps = 4  # a run stopped after 4 of 6 steps (its state is saved at step 3 and 4)
    with pytest.raises(PipelineError, match=r"stage pretrain did not complete \(stopped at step 4 of 6"):
        launch.run(c, cut)
    assert os.path.isdir(os.path.join(cut, "pretrain", "steps", "3"))
    assert not os.path.exists(os.path.join(cut, "pretrain", "checkpoint"))
    assert launch.run(_tiny(), cut) == {"pretrain": "ran"}  # resumes from step 4
    for rel in ("checkpoint", "steps/3", "steps/6"):
        a, b = (load_file(os.path.join(d, "pretrain", rel, "model.safetensors")) for d in (whole, cut))
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), rel
    pre = json.load(open(os.path.join(cut, "pretrain", "checkpoint", "pretrain.json")))
    assert [e["step"] for e in pre["loss_curve"]] == [1, 3, 6]
    assert (
        json.load(open(os.path.join(whole, "pretrain", "checkpoint", "pretrain.json")))["loss_curve"]
        == pre["loss_curve"]
    )
    assert launch.run(_tiny(), cut) == {"pretrain": "skipped"}


def test_a_tiny_study_runs_end_to_end_through_the_cli(tmp_path):
    """``python -m rise_jax.study`` on the tiny testbed: pretraining, then stats, analyze and select
    on each saved checkpoint, and the study's report with the ground truth."""
    r = subprocess.run(
        [sys.executable, "-m", "rise_jax.study", "--config=configs/testbed.py:test", f"--workdir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    study = json.load(open(tmp_path / "study.json"))
    (point,) = study
    assert sorted(point["steps"], key=int) == ["3", "6"]
    for step in ("3", "6"):
        wd = os.path.join(point["workdir"], "at_step", step)
        assert json.load(open(os.path.join(wd, ".rise", "analyze.json")))["status"] == "done"
        assert json.load(open(os.path.join(wd, "selection.json")))["target_language"] == "qac"
    assert point["truth"]["qab"]["vocabulary_overlap"]["qaa"] == 0.0 and point["truth"]["qac"]["shared"] == 0.5
    measured = point["steps"]["6"]
    a = json.load(open(os.path.join(point["workdir"], "at_step", "6", "analysis", "analysis.json")))
    assert measured["overlap"]["qac"] == a["global_jaccard"][0][2]
    text = open(tmp_path / "study.md").read()
    assert "| qac | 0.0476 | 0.333 |" in text and "- qac: overlap with qaa " in text
    assert "the overlap tracks **" in text and os.path.isfile(tmp_path / "study_overlap.png")
