"""Subnetwork training: exact isolation, disjoint routing, resume, artefacts (one step against HF torch, every family: test_families.py)."""

import dataclasses
import json
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hf_reference import hf_forward, load_hf_model, padded_batch

import rise_jax
from rise_jax.training import loop as loop_lib
from rise_jax.training import partition
from rise_jax.training.artefacts import load_trained_experts, save_trained_experts
from rise_jax.training.data import TrainingSet
from rise_jax.training.loop import TrainingError, TrainOptions, train
from rise_jax.training.methods import ExpertLoRA, FullExperts
from rise_jax.training.methods.experts import EXTRA, group_labels
from rise_jax.training.step import make_optimizer, make_steps

SELECTED = [(0, 1), (0, 5), (2, 3), (2, 6)]


def token_set(vocab, n=10, seed=0, lo=5, hi=30):
    rng = np.random.RandomState(seed)
    seqs = [rng.randint(1, vocab, rng.randint(lo, hi)).astype(np.int32) for _ in range(n)]
    return TrainingSet(seqs, [np.ones(len(s), np.int32) for s in seqs], 0)


def bits(x):
    x = np.asarray(x)
    return x.view(np.uint32) if x.dtype == np.float32 else x


@pytest.fixture
def loaded(qwen_dir):
    return rise_jax.load_model(qwen_dir, dtype="float32", progress=False)


def test_twenty_adamw_steps_with_weight_decay_touch_only_the_selected_experts(tmp_path, loaded):
    model, params = loaded
    # A -0.0 in a frozen weight and in an unselected expert: `p + 0.0` would turn it into +0.0.
    params = jax.tree_util.tree_map(lambda x: x, params)
    params["layers"]["attn"]["q_proj"]["kernel"] = params["layers"]["attn"]["q_proj"]["kernel"].at[0, 0, 0].set(-0.0)
    gate = params["layers"]["moe"]["experts"]["gate_proj"]
    params["layers"]["moe"]["experts"]["gate_proj"] = gate.at[0, 0, 0, 0].set(-0.0)
    before = jax.tree_util.tree_map(np.asarray, params)
    opts = TrainOptions(epochs=2, batch_size=1, grad_accum=1, lr=1e-3, weight_decay=0.1, progress=False)
    res = train(model, params, FullExperts.init(params, model.cfg, SELECTED), token_set(128), None, opts, str(tmp_path))
    assert res["optimizer_steps"] == 20 and res["status"] == "completed"
    merged = res["trainable"].merge(params)

    flat_before = jax.tree_util.tree_flatten_with_path(before)[0]
    flat_after = dict(jax.tree_util.tree_flatten_with_path(merged)[0])
    for path, old in flat_before:
        new = np.asarray(flat_after[path])
        if "experts" not in jax.tree_util.keystr(path):
            assert np.array_equal(bits(old), bits(new)), jax.tree_util.keystr(path)  # frozen: bitwise
            continue
        for layer in range(old.shape[0]):
            for e in range(old.shape[1]):
                same = np.array_equal(bits(old[layer, e]), bits(new[layer, e]))
                assert same != ((layer, e) in SELECTED), (jax.tree_util.keystr(path), layer, e)
    assert np.signbit(np.asarray(merged["layers"]["attn"]["q_proj"]["kernel"])[0, 0, 0])
    assert np.signbit(np.asarray(merged["layers"]["moe"]["experts"]["gate_proj"])[0, 0, 0, 0])


def test_apply_step_reuses_the_optimizer_state_and_gradient_buffers(loaded):
    """The update consumes (donates) the Adam moments and the gradient sum, so it never holds two
    copies of the optimiser state; the weights passed in stay valid (they may alias the caller's)."""
    model, params = loaded
    trainable = FullExperts.init(params, model.cfg, SELECTED)
    weights = trainable.weights
    tx, _ = make_optimizer(1e-3, 10)
    grad_step, apply_step, _ = make_steps(model, tx)
    ids = jnp.asarray(np.random.RandomState(0).randint(1, 128, (2, 8)), jnp.int32)
    mask = jnp.ones_like(ids)
    opt_state = tx.init(weights)
    _, _, grads = grad_step(trainable, params, ids, mask, mask, jax.random.PRNGKey(0))
    new, new_state, _ = apply_step(weights, opt_state, grads, jnp.float32(1.0))
    moments = [x for x in jax.tree_util.tree_leaves(opt_state) if x.ndim > 0]
    assert moments and all(x.is_deleted() for x in moments)
    assert all(x.is_deleted() for x in jax.tree_util.tree_leaves(grads))
    assert not any(x.is_deleted() for x in jax.tree_util.tree_leaves(weights))
    assert not any(x.is_deleted() for x in jax.tree_util.tree_leaves((new, new_state)))


def test_optimizer_state_holds_exactly_the_selected_parameters(loaded):
    model, params = loaded
    weights = FullExperts.init(params, model.cfg, SELECTED).weights
    tx, _ = make_optimizer(1e-3, 10)
    state = tx.init(weights)
    adam = [s for s in jax.tree_util.tree_leaves(state, is_leaf=lambda x: hasattr(x, "mu")) if hasattr(s, "mu")][0]
    h, i = model.cfg.hidden_size, model.cfg.moe_intermediate_size
    per_moment = len(SELECTED) * 3 * h * i
    assert partition.count_trainable(adam.mu) == per_moment == partition.count_trainable(adam.nu)
    assert partition.count_trainable(weights) == per_moment


def test_disjoint_routing_leaves_untouched_inputs_bitwise_identical(tmp_path, loaded):
    model, params = loaded
    cfg = model.cfg
    rng = np.random.RandomState(7)
    other = jnp.asarray(rng.randint(1, 128, (1, 6)))
    used = np.asarray(rise_jax.forward(model, params, other, return_routing=True).routing.activation_mask())
    used = used.any(axis=(1, 2))  # [L, E] experts the other input ever activates
    free = [(int(layer), int(e)) for layer, e in zip(*np.nonzero(~used), strict=True)]
    busy = [(int(layer), int(e)) for layer, e in zip(*np.nonzero(used), strict=True)]
    assert free and busy
    data = token_set(cfg.vocab_size, n=8, seed=8)
    before = np.asarray(rise_jax.forward(model, params, other).logits)
    opts = TrainOptions(epochs=2, batch_size=2, grad_accum=1, lr=5e-2, progress=False)

    res = train(model, params, FullExperts.init(params, cfg, free), data, None, opts, str(tmp_path / "free"))
    after_free = np.asarray(rise_jax.forward(model, res["trainable"].merge(params), other).logits)
    assert np.array_equal(bits(before), bits(after_free))  # interference mass 0 -> identical

    res = train(model, params, FullExperts.init(params, cfg, busy[:4]), data, None, opts, str(tmp_path / "busy"))
    after_busy = np.asarray(rise_jax.forward(model, res["trainable"].merge(params), other).logits)
    assert not np.array_equal(before, after_busy)  # interference mass > 0 -> changed


def _run(model, params, tmp, name, **kw):
    opts = TrainOptions(
        epochs=2,
        batch_size=2,
        grad_accum=2,
        lr=1e-3,
        weight_decay=0.01,
        warmup_ratio=0.2,
        save_every=0,
        progress=False,
        **kw,
    )
    return train(
        model,
        params,
        FullExperts.init(params, model.cfg, SELECTED),
        token_set(128, n=9),
        None,
        opts,
        str(tmp / name),
    )


def test_interrupted_and_resumed_training_equals_uninterrupted(tmp_path, loaded, monkeypatch):
    model, params = loaded
    full = _run(model, params, tmp_path, "a")

    stopped = _run(model, params, tmp_path, "b", max_steps=3)  # mid-accumulation stop
    assert stopped["status"] == "stopped at max_steps" and stopped["steps_done"] == 3
    resumed = _run(model, params, tmp_path, "b")
    assert resumed["status"] == "completed"
    for a, b in zip(
        jax.tree_util.tree_leaves(full["trainable"]), jax.tree_util.tree_leaves(resumed["trainable"]), strict=True
    ):
        assert np.array_equal(bits(a), bits(b))
    # Step 3 was logged, lost with its checkpoint and redone: it appears once, as in the full run.
    rows = [json.loads(x) for x in open(tmp_path / "b" / "metrics.jsonl")]
    want = [json.loads(x) for x in open(tmp_path / "a" / "metrics.jsonl")]
    assert [r["step"] for r in rows if "loss" in r] == [r["step"] for r in want if "loss" in r]

    # SIGTERM during a step: the step finishes, a checkpoint is written, a rerun completes identically.
    real_batch = loop_lib.MicroBatches.batch
    calls = {"n": 0}

    def batch_and_signal(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_batch(*args, **kwargs)

    monkeypatch.setattr(loop_lib.MicroBatches, "batch", batch_and_signal)
    interrupted = _run(model, params, tmp_path, "c")
    assert interrupted["status"].startswith("interrupted by signal") and interrupted["steps_done"] == 4
    monkeypatch.setattr(loop_lib.MicroBatches, "batch", real_batch)
    again = _run(model, params, tmp_path, "c")
    for a, b in zip(
        jax.tree_util.tree_leaves(full["trainable"]), jax.tree_util.tree_leaves(again["trainable"]), strict=True
    ):
        assert np.array_equal(bits(a), bits(b))
    lines = [json.loads(x) for x in open(tmp_path / "a" / "metrics.jsonl")]
    assert lines[0]["step"] == 1 and any("opt_step" in x for x in lines)
    assert os.listdir(tmp_path / "a" / "tensorboard")


@pytest.mark.parametrize("method", ["experts", "rise_lora"])
def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_last_good_state(tmp_path, loaded, method):
    model, params = loaded
    if method == "experts":
        trainable = FullExperts.init(params, model.cfg, SELECTED)
        w = trainable.weights["layers"]
        bad = trainable.replace(
            weights={**trainable.weights, "layers": {**w, "down_proj": w["down_proj"].at[0, 0, 0].set(jnp.inf)}}
        )
    else:  # an adapter gone infinite
        trainable = ExpertLoRA.init(model.cfg, SELECTED, 2, 2.0)
        w = trainable.weights["layers"]
        down = {**w["down_proj"], "lora_b": w["down_proj"]["lora_b"].at[0, 0, 0].set(jnp.inf)}
        bad = trainable.replace(weights={**trainable.weights, "layers": {**w, "down_proj": down}})
    opts = TrainOptions(epochs=1, batch_size=2, grad_accum=1, progress=False)
    with pytest.raises(
        TrainingError,
        match=r"non-finite loss \(nan\) at micro-step 1.*last good state \(micro-step 0\) is checkpointed",
    ):
        train(model, params, bad, token_set(128, n=4), None, opts, str(tmp_path))
    assert os.listdir(tmp_path / "checkpoints") == ["0"]


def test_compact_checkpoint_round_trip_is_exact_and_export_loads_in_transformers(tmp_path, qwen_dir, loaded):
    model, params = loaded
    res = _run(model, params, tmp_path, "t")
    save_trained_experts(str(tmp_path / "t"), res["trainable"])
    back = load_trained_experts(str(tmp_path / "t"))
    for a, b in zip(jax.tree_util.tree_leaves(res["trainable"]), jax.tree_util.tree_leaves(back), strict=True):
        assert np.array_equal(bits(a), bits(b))
    merged = back.merge(params)
    out = rise_jax.export_model(model, merged, str(tmp_path / "hf"), source_dir=qwen_dir, progress=False)
    ids, mask = padded_batch(128, [10, 7], 10, [False, True], seed=3)
    ref, _ = hf_forward(load_hf_model(out), ids, mask)
    ours = np.asarray(rise_jax.forward(model, merged, jnp.asarray(ids), jnp.asarray(mask)).logits)
    assert np.abs(ours - ref)[mask.astype(bool)].max() < 1e-4


def test_extra_trainable_groups_by_path_rule_train_routers_and_leave_the_rest_bitwise(tmp_path, loaded):
    model, params = loaded
    before = jax.tree_util.tree_map(np.asarray, params)
    trainable = FullExperts.init(params, model.cfg, SELECTED, ["moe/router"])
    weights = trainable.weights
    assert set(weights[EXTRA]["layers"]["moe"]) == {"router"}
    opts = TrainOptions(epochs=1, batch_size=2, grad_accum=1, lr=1e-3, extra_lr=1e-2, progress=False)
    res = train(model, params, trainable, token_set(128), None, opts, str(tmp_path))
    merged = res["trainable"].merge(params)
    flat_after = dict(jax.tree_util.tree_flatten_with_path(merged)[0])
    for path, old in jax.tree_util.tree_flatten_with_path(before)[0]:
        key = jax.tree_util.keystr(path)
        new = np.asarray(flat_after[path])
        if "router" in key:
            assert not np.array_equal(old, new), key
        elif "experts" not in key:
            np.testing.assert_array_equal(bits(old), bits(new), err_msg=key)
    # The optimiser is partitioned: experts and routers each hold their own Adam moments.
    tx, _ = make_optimizer(1e-3, 10, extra_lr=1e-2, labels=group_labels)
    state = tx.init(weights)
    inner = state[-1].inner_states
    assert set(inner) == {"experts", "extra"}


def test_extra_trainable_rules_are_checked(loaded):
    model, params = loaded
    with pytest.raises(ValueError, match=r"pattern\(s\) \['rooter'\] match no parameter"):
        FullExperts.init(params, model.cfg, SELECTED, ["rooter"])
    with pytest.raises(ValueError, match="match expert weights"):
        FullExperts.init(params, model.cfg, SELECTED, ["gate_proj"])


def test_an_unreadable_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, loaded):
    """A damaged newest checkpoint (a crash while writing it) is reported and skipped; resuming
    from the one before still ends bitwise where an uninterrupted run does."""
    model, params = loaded
    full = _run(model, params, tmp_path, "a")
    opts = TrainOptions(
        epochs=2, batch_size=2, grad_accum=2, lr=1e-3, weight_decay=0.01, warmup_ratio=0.2, progress=False
    )
    stop_opts = dataclasses.replace(opts, save_every=2, max_steps=3)
    trainable = FullExperts.init(params, model.cfg, SELECTED)
    stopped = train(model, params, trainable, token_set(128, n=9), None, stop_opts, str(tmp_path / "b"))  # ckpts 2, 3
    assert stopped["steps_done"] == 3 and sorted(os.listdir(tmp_path / "b" / "checkpoints")) == ["2", "3"]
    for dirpath, _, files in os.walk(tmp_path / "b" / "checkpoints" / "3"):
        for name in files:
            open(os.path.join(dirpath, name), "wb").write(b"\x00garbage")
    resumed = _run(model, params, tmp_path, "b")
    assert resumed["status"] == "completed"
    for a, b in zip(
        jax.tree_util.tree_leaves(full["trainable"]), jax.tree_util.tree_leaves(resumed["trainable"]), strict=True
    ):
        assert np.array_equal(bits(a), bits(b))


def test_owner_grouped_rows_put_each_expert_copy_in_its_owner_block_and_merge_the_same(loaded):
    """Expert parallelism over m devices (experts [i·E/m, (i+1)·E/m) on device i): the trainable
    copies of device i's experts are rows [i·R, (i+1)·R), unused rows are zero and not counted,
    and merging them gives exactly the merge of the default (layer, expert)-ordered layout."""
    model, params = loaded
    cfg = model.cfg
    plain = FullExperts.init(params, cfg, SELECTED)
    for m in (2, 4, 8):
        grouped = FullExperts.init(params, cfg, SELECTED, expert_shards=m)
        (run,) = grouped.slots
        slots = np.asarray(grouped.slots[run])
        rows = grouped.weights[run]["gate_proj"].shape[0]
        assert rows % m == 0
        block = rows // m
        for layer, expert in zip(*np.nonzero(slots >= 0), strict=True):
            owner = expert // (cfg.num_experts // m)
            assert owner * block <= slots[layer, expert] < (owner + 1) * block
            np.testing.assert_array_equal(
                grouped.weights[run]["gate_proj"][slots[layer, expert]],
                np.asarray(params[run]["moe"]["experts"]["gate_proj"][layer, expert], np.float32),
            )
        unused = np.setdiff1d(np.arange(rows), slots[slots >= 0])
        assert not np.asarray(grouped.weights[run]["down_proj"])[unused].any()
        assert grouped.parameter_count() == partition.count_trainable(plain.weights) == plain.parameter_count()
        a, b = plain.merge(params), grouped.merge(params)
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    with pytest.raises(ValueError, match="must divide the 8 experts, got 3"):
        FullExperts.init(params, cfg, SELECTED, expert_shards=3)


def test_a_packed_step_equals_the_unpacked_step_on_the_same_sequences(loaded):
    """Seven sequences (partial loss masks, as completion-only training makes) in one micro-batch:
    packed into rows (segment ids, positions restarting) or one a row. Every token's log-prob, the
    step's mean loss, its target count and the gradients of the selected experts agree (1e-5)."""
    from rise_jax.models.layers import segment_positions
    from rise_jax.models.lm_loss import token_log_probs
    from rise_jax.training.data import MicroBatches

    model, params = loaded
    data = token_set(128, n=7, seed=3, lo=2, hi=26)
    rng = np.random.RandomState(1)
    for m in data.loss_masks[::2]:
        m[: rng.randint(1, len(m))] = 0  # a prompt whose tokens are context only
    trainable = FullExperts.init(params, model.cfg, SELECTED)
    grad_step, _, _ = make_steps(model, make_optimizer(1e-3, 10)[0])
    plain = MicroBatches.of(data, 7, 8, 0, pack=False)
    packed = MicroBatches.of(data, 7, 8, 0, pack=True)
    assert packed.units < 7  # rows really hold several sequences
    forward = jax.jit(
        lambda ids, seg: token_log_probs(model.apply({"params": params}, ids, seg, segment_positions(seg)).logits, ids)
    )
    results, logps = [], []
    for batches in (plain, packed):  # both [7, 32]: one compilation each for the forward and the step
        ids, att, loss_mask = batches.batch(range(batches.units))
        logp = np.asarray(forward(jnp.asarray(ids), jnp.asarray(att)))
        targets = {}  # (sequence, position) -> log p of every counted target
        rows = [[i] for i in range(7)] if batches.rows is None else batches.rows
        for r, row in enumerate(rows):
            at = 0
            for i in row:
                for t in range(1, len(data.ids[i])):
                    if loss_mask[r, at + t]:
                        targets[(i, t)] = logp[r, at + t - 1]
                at += len(data.ids[i])
        logps.append(targets)
        results.append(grad_step(trainable, params, ids, att, loss_mask, jax.random.PRNGKey(0)))
    assert sorted(logps[0]) == sorted(logps[1]) and len(logps[0]) == sum(int(m[1:].sum()) for m in data.loss_masks)
    np.testing.assert_allclose([logps[1][k] for k in logps[0]], list(logps[0].values()), atol=1e-5)
    (loss_a, count_a, grads_a), (loss_b, count_b, grads_b) = results
    assert float(count_a) == float(count_b) == len(logps[0])
    np.testing.assert_allclose(float(loss_b), float(loss_a), atol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(grads_a), jax.tree_util.tree_leaves(grads_b), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5)
    assert max(float(jnp.abs(g).max()) for g in jax.tree_util.tree_leaves(grads_a)) > 1e-3  # not vacuous


def test_packed_training_runs_through_the_loop_with_a_packed_held_out_loss(tmp_path, loaded):
    """train.pack: the loop steps over packed rows (fewer micro-steps than sequences), and the
    held-out loss (packed too) equals the per-token mean of the unpacked evaluation."""
    from rise_jax.training.data import MicroBatches

    model, params = loaded
    data, held = token_set(128, n=8, seed=5, lo=3, hi=12), token_set(128, n=3, seed=6, lo=3, hi=12)
    opts = TrainOptions(epochs=1, batch_size=2, grad_accum=1, lr=1e-3, bucket_multiple=16, pack=True, progress=False)
    res = train(model, params, FullExperts.init(params, model.cfg, SELECTED), data, held, opts, str(tmp_path))
    rows = MicroBatches.of(data, 2, 16, 0, pack=True).units
    assert res["status"] == "completed" and rows < 8 and res["micro_steps"] == -(-rows // 2)
    unpacked = loop_lib._held_out_loss(
        make_steps(model, make_optimizer(1e-3, 1)[0])[2],
        res["trainable"],
        params,
        held,
        dataclasses.replace(opts, pack=False),
    )
    np.testing.assert_allclose(res["held_out_loss"], unpacked, rtol=1e-5)
