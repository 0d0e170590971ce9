"""Run under XLA_FLAGS=--xla_force_host_platform_device_count=8 (tests/test_sharding.py does):
single-device vs 8-device results of replay (packed rows), one training step (packed rows) and
greedy generation, and the
per-device share of the sharded parameters. Prints one JSON object.

``placement``: ``ep`` (expert-parallel dispatch, experts over 8 devices, batch replicated),
``ep_data`` (expert-parallel on a 2 (data) x 4 (model) mesh, batch split over data) or ``xla``
(parameters placed, partitioning left to XLA)."""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

import rise_jax
from rise_jax.data.batching import TokenizedCorpus
from rise_jax.evaluation.generate import generate
from rise_jax.evaluation.interventions import prune
from rise_jax.routing.stats import replay
from rise_jax.sharding import DATA, MODEL, make_mesh, param_sharding, trainable_shardings
from rise_jax.training.methods import DenseLoRA, ExpertLoRA, FullExperts
from rise_jax.training.options import TrainOptions
from rise_jax.training.step import make_optimizer, make_steps


def _by_expert(weights, slots):
    """Trainable rows keyed by (run, layer, expert, name): row order differs between layouts."""
    out = {}
    for run, entry in weights.items():
        if run not in slots:
            continue
        s = np.asarray(slots[run])
        for li, ei in zip(*np.nonzero(s >= 0), strict=True):
            for name, w in entry.items():
                out[(run, int(li), int(ei), name)] = jax.tree_util.tree_map(lambda x, r=s[li, ei]: x[r], w)
    return out


def _flat(tree):
    return np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(tree)])


def main(path: str, dispatch: str = "auto", placement: str = "ep") -> None:
    assert len(jax.devices()) == 8, jax.devices()
    out = {}
    model, single = rise_jax.load_model(path, dtype="float32", dispatch=dispatch, progress=False)
    mesh = make_mesh(model=4, data=2) if placement == "ep_data" else make_mesh(model=8)
    if placement == "xla":
        smodel, sharded = rise_jax.load_model(
            path, dtype="float32", dispatch=dispatch, progress=False, sharding=param_sharding(mesh)
        )
    else:
        smodel, sharded = rise_jax.load_model(path, dtype="float32", dispatch=dispatch, progress=False, mesh=mesh)
    shards = 1 if placement == "xla" else mesh.shape[MODEL]
    out["model_devices"] = mesh.shape[MODEL]

    # Per-device share of the sharded parameters.
    total = per_device = 0
    for leaf in jax.tree_util.tree_leaves(sharded):
        if MODEL in str(leaf.sharding.spec):
            total += leaf.size
            per_device += leaf.addressable_shards[0].data.size
    out["sharded_fraction_per_device"] = per_device / total
    experts = sharded["layers"]["moe"]["experts"]["gate_proj"]
    out["expert_shard_shape"] = list(experts.addressable_shards[0].data.shape)
    out["expert_devices"] = len({s.device for s in experts.addressable_shards})

    # Replay statistics.
    rng = np.random.RandomState(0)
    corpora = [
        TokenizedCorpus(
            lang,
            [rng.randint(1, 128, rng.randint(5, 30)).astype(np.int32) for _ in range(12)],
            [str(i) for i in range(12)],
            0,
            12,
        )
        for lang in ("en", "bn")
    ]
    a = replay(model, single, corpora, batch_size=8, progress=False)
    b = replay(smodel, sharded, corpora, batch_size=8, progress=False)
    out["replay_counts_equal"] = bool(np.array_equal(a.counts, b.counts))
    out["replay_mass_err"] = float(np.abs(a.weight_mass - b.weight_mass).max())

    # One training step (trainable experts and optimiser state sharded too).
    experts_sel = [(0, 1), (0, 5), (1, 2), (1, 3), (2, 0), (2, 4), (2, 6), (2, 7)]
    tx, _ = make_optimizer(1e-3, 10)
    ids = jnp.asarray(rng.randint(1, 128, (4, 16)), jnp.int32)
    # Packed rows (segment ids 1, 2, 3; no target at a segment's first token), split over data.
    segments = np.repeat([[1] * 6 + [2] * 7 + [3] * 3], 4, axis=0)
    starts = np.concatenate([np.ones((4, 1), bool), segments[:, 1:] != segments[:, :-1]], axis=1)
    mask, loss_mask = jnp.asarray(segments, jnp.int32), jnp.asarray(~starts, jnp.int32)
    results = []
    batch = NamedSharding(mesh, PartitionSpec(DATA))  # split over data (2 x 4 mesh), else replicated
    out["batch_shards"] = mesh.shape[DATA]
    for params in (single, sharded):
        m = model if params is single else smodel
        grad_step, apply_step, _ = make_steps(m, tx)
        initial = FullExperts.init(params, m.cfg, experts_sel, expert_shards=1 if m is model else shards)
        weights, slots = initial.weights, initial.slots
        if params is sharded:
            weights = jax.device_put(weights, trainable_shardings(weights, mesh))
        opt_state = tx.init(weights)
        i, msk, lmsk = (ids, mask, loss_mask) if params is single else jax.device_put((ids, mask, loss_mask), batch)
        loss, _, grads = grad_step(initial.replace(weights=weights), params, i, msk, lmsk, jax.random.PRNGKey(0))
        # Adam's first update is about lr * sign(grad): compare the gradients themselves too.
        g = _by_expert(jax.tree_util.tree_map(np.asarray, grads), slots)
        new, opt_state, _ = apply_step(weights, opt_state, grads, 1)
        results.append((float(loss), _by_expert(jax.tree_util.tree_map(np.asarray, new), slots), g))
        if params is sharded:
            w = new["layers"]["gate_proj"]
            out["trainable_shard_rows"] = int(w.addressable_shards[0].data.shape[0])
            mu = opt_state[-1][0].mu["layers"]["gate_proj"]
            out["adam_mu_shard_rows"] = int(mu.addressable_shards[0].data.shape[0])
    # Rows not grouped by owner would make devices read other experts' copies: refused.
    grad_step, _, _ = make_steps(smodel, tx)
    plain = FullExperts.init(sharded, smodel.cfg, experts_sel)
    try:
        grad_step(plain, sharded, ids, mask, mask, jax.random.PRNGKey(0))
        out["unowned_layout_refused"] = False
    except ValueError as err:
        out["unowned_layout_refused"] = "expert_shards" in str(err)
    out["train_loss_err"] = abs(results[0][0] - results[1][0])
    out["train_grad_rel_err"] = max(
        float(np.abs(results[0][2][key] - results[1][2][key]).max() / np.abs(results[0][2][key]).max())
        for key in results[0][2]
    )

    # Adam's first step is lr * g / (|g| + eps): where |g| is within a few orders of eps, round-off
    # in g (another reduction order) decides it, so the weights are compared where |g| >= 100 eps
    # or g = 0 on both sides; everywhere else the difference is bounded by one step.
    def steady(key):
        g0, g1 = results[0][2][key], results[1][2][key]
        return (np.abs(g0) >= 1e-6) | ((g0 == 0) & (g1 == 0))

    diffs = {key: np.abs(results[0][1][key] - results[1][1][key]) for key in results[0][1]}
    out["train_weight_err"] = max(float(d[steady(key)].max(initial=0.0)) for key, d in diffs.items())
    out["train_weight_step_bound"] = max(float(d.max()) for d in diffs.values()) / 1e-3  # in units of lr

    # RISE+LoRA: adapters inside the selected experts (B made non-zero so the adapters act).
    lora = []
    for params in (single, sharded):
        m = model if params is single else smodel
        grad_step, _, _ = make_steps(m, tx)
        trainable = ExpertLoRA.init(m.cfg, experts_sel, 4, 8.0, 0, expert_shards=1 if m is model else shards)
        slots = np.asarray(trainable.slots["layers"])
        weights = jax.tree_util.tree_map(np.array, trainable.weights)
        for proj, ad in weights["layers"].items():  # the same A, B per (layer, expert) in both layouts
            for li, ei in zip(*np.nonzero(slots >= 0), strict=True):
                r = np.random.RandomState(100 * li + ei + len(proj))
                ad["lora_a"][slots[li, ei]] = r.uniform(-0.3, 0.3, ad["lora_a"].shape[1:])
                ad["lora_b"][slots[li, ei]] = r.uniform(-0.3, 0.3, ad["lora_b"].shape[1:])
        if params is sharded:
            weights = jax.device_put(weights, trainable_shardings(weights, mesh))
        loss, _, grads = grad_step(trainable.replace(weights=weights), params, ids, mask, mask, jax.random.PRNGKey(0))
        lora.append((float(loss), _by_expert(jax.tree_util.tree_map(np.asarray, grads), trainable.slots)))
    out["lora_loss_err"] = abs(lora[0][0] - lora[1][0])
    out["lora_grad_rel_err"] = max(
        float(np.abs(_flat(lora[0][1][k]) - _flat(lora[1][1][k])).max() / np.abs(_flat(lora[0][1][k])).max())
        for k in lora[0][1]
    )

    # The LoRA baseline: dense adapters (B non-zero) with dropout on their input. With the batch
    # replicated the step draws the same masks as on one device (partitionable threefry); split
    # over data, each group draws its own, so that placement checks the dropout-free step.
    p = 0.3 if mesh.shape[DATA] == 1 else 0.0
    dense = []
    for params in (single, sharded):
        m = model if params is single else smodel
        grad_step, _, _ = make_steps(m, tx)
        trainable = DenseLoRA.init(params, [TrainOptions.lora_targets], 4, 8.0, seed=1, dropout=p)
        weights = jax.tree_util.tree_map_with_path(
            lambda path, x: x + 0.1 if path[-1].key == "lora_b" else x, trainable.weights
        )
        i, msk = (ids, mask) if params is single else jax.device_put((ids, mask), batch)
        loss, _, grads = grad_step(trainable.replace(weights=weights), params, i, msk, msk, jax.random.PRNGKey(3))
        dense.append((float(loss), [np.asarray(g) for g in jax.tree_util.tree_leaves(grads)]))
    out["dense_lora_dropout"] = p
    out["dense_lora_loss_err"] = abs(dense[0][0] - dense[1][0])
    out["dense_lora_grad_rel_err"] = max(
        float(np.abs(x - y).max() / np.abs(x).max()) for x, y in zip(dense[0][1], dense[1][1], strict=True)
    )

    # Greedy generation.
    prompt = np.asarray(rng.randint(1, 128, (4, 10)), np.int32)
    pmask = np.ones_like(prompt)
    pmask[1, :3] = 0
    g1 = generate(model, single, prompt, pmask, max_new_tokens=8, stop_ids=[], pad_id=0)
    g2 = generate(smodel, sharded, prompt, pmask, max_new_tokens=8, stop_ids=[], pad_id=0)
    out["generation_equal"] = g1 == g2

    # Interventions: pruning two experts (one per device half) and greedy decoding with the edit.
    edit = prune(model.cfg, [(0, 1), (2, 6)])
    la = rise_jax.forward(model, single, prompt, pmask, router_edit=edit).logits
    lb = rise_jax.forward(smodel, sharded, prompt, pmask, router_edit=edit).logits
    out["pruned_logits_err"] = float(np.abs(np.asarray(la) - np.asarray(lb)).max())
    out["pruned_changes_logits"] = bool(
        np.abs(np.asarray(la) - np.asarray(rise_jax.forward(model, single, prompt, pmask).logits)).max() > 1e-4
    )
    g1 = generate(model, single, prompt, pmask, max_new_tokens=6, stop_ids=[], pad_id=0, router_edit=edit)
    g2 = generate(smodel, sharded, prompt, pmask, max_new_tokens=6, stop_ids=[], pad_id=0, router_edit=edit)
    out["pruned_generation_equal"] = g1 == g2
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:])
