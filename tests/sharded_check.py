"""Run under XLA_FLAGS=--xla_force_host_platform_device_count=8 (tests/test_sharding.py does):
single-device vs 8-device results of replay, one training step and greedy generation, and the
per-device share of the sharded parameters. Prints one JSON object."""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

import rise_jax
from rise_jax.data.batching import TokenizedCorpus
from rise_jax.evaluation.generate import generate
from rise_jax.routing.stats import replay
from rise_jax.sharding import MODEL, make_mesh, param_sharding, trainable_shardings
from rise_jax.training import partition
from rise_jax.training.step import make_optimizer, make_steps


def main(path: str, dispatch: str = "auto") -> None:
    assert len(jax.devices()) == 8, jax.devices()
    out = {}
    model, single = rise_jax.load_model(path, dtype="float32", dispatch=dispatch, progress=False)
    mesh = make_mesh(model=8)
    _, sharded = rise_jax.load_model(
        path, dtype="float32", dispatch=dispatch, progress=False, sharding=param_sharding(mesh)
    )

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
    b = replay(model, sharded, corpora, batch_size=8, progress=False)
    out["replay_counts_equal"] = bool(np.array_equal(a.counts, b.counts))
    out["replay_mass_err"] = float(np.abs(a.weight_mass - b.weight_mass).max())

    # One training step (trainable experts and optimiser state sharded too).
    experts_sel = [(0, 1), (0, 5), (1, 2), (1, 3), (2, 0), (2, 4), (2, 6), (2, 7)]
    tx, _ = make_optimizer(1e-3, 10)
    grad_step, apply_step, _ = make_steps(model, tx)
    ids = jnp.asarray(rng.randint(1, 128, (4, 16)), jnp.int32)
    mask = jnp.ones_like(ids)
    results = []
    for params in (single, sharded):
        weights, slots = partition.init_trainable(params, model.cfg, experts_sel)
        if params is sharded:
            weights = jax.device_put(weights, trainable_shardings(weights, mesh))
        opt_state = tx.init(weights)
        loss, _, grads = grad_step(weights, slots, params, ids, mask, mask, jax.random.PRNGKey(0))
        new, opt_state, _ = apply_step(weights, opt_state, grads, 1)
        results.append((float(loss), jax.tree_util.tree_map(np.asarray, new)))
        if params is sharded:
            w = new["layers"]["gate_proj"]
            out["trainable_shard_rows"] = int(w.addressable_shards[0].data.shape[0])
            mu = opt_state[-1][0].mu["layers"]["gate_proj"]
            out["adam_mu_shard_rows"] = int(mu.addressable_shards[0].data.shape[0])
    out["train_loss_err"] = abs(results[0][0] - results[1][0])
    out["train_weight_err"] = max(
        float(np.abs(x - y).max())
        for x, y in zip(jax.tree_util.tree_leaves(results[0][1]), jax.tree_util.tree_leaves(results[1][1]), strict=True)
    )

    # Greedy generation.
    prompt = np.asarray(rng.randint(1, 128, (4, 10)), np.int32)
    pmask = np.ones_like(prompt)
    pmask[1, :3] = 0
    g1 = generate(model, single, prompt, pmask, max_new_tokens=8, stop_ids=[], pad_id=0)
    g2 = generate(model, sharded, prompt, pmask, max_new_tokens=8, stop_ids=[], pad_id=0)
    out["generation_equal"] = g1 == g2
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:])
