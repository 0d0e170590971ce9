"""Run under XLA_FLAGS=--xla_force_host_platform_device_count=8 (tests/test_sharding.py does):
compile a replay forward, a training step (gradients of K trainable experts) and a decode step
on 8 devices and report, from the compiled HLO, every collective whose arrays are expert weights
(or their gradients: arrays ending in [H, I] or [I, H]) and the bytes the collectives inside the
layer loops move per layer. Prints one JSON object.

``python sharded_hlo_check.py <checkpoint> <placements>``: a comma list of ``ep`` (expert-parallel
dispatch), ``ep_data`` (the same on a 2 x 4 data x model mesh, batch split over data) and ``xla``
(the partitioner's own dispatch: the "before"); one JSON object keyed by placement."""

import json
import sys

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

import rise_jax
from rise_jax.hlo_collectives import collective_summary
from rise_jax.models.transformer import init_kv_cache
from rise_jax.sharding import DATA, MODEL, make_mesh, param_sharding, trainable_shardings
from rise_jax.training.methods import FullExperts
from rise_jax.training.step import make_optimizer, make_steps

B, T = 8, 16  # tokens per step: 128


def main(path: str, placements: str) -> None:
    print(json.dumps({p: check(path, p) for p in placements.split(",")}))


def check(path: str, placement: str) -> dict:
    assert len(jax.devices()) == 8, jax.devices()
    mesh = make_mesh(model=4, data=2) if placement == "ep_data" else make_mesh(model=8)
    if placement == "xla":
        model, params = rise_jax.load_model(path, dtype="float32", progress=False, sharding=param_sharding(mesh))
    else:
        model, params = rise_jax.load_model(path, dtype="float32", progress=False, mesh=mesh)
    cfg = model.cfg
    h, i = cfg.hidden_size, cfg.moe_intermediate_size
    batch = NamedSharding(mesh, PartitionSpec(DATA))
    ids = jax.device_put(jnp.ones((B, T), jnp.int32), batch)
    out = {"tokens_per_data_shard": B * T // mesh.shape[DATA], "hidden": h, "bytes": 4}

    fwd = jax.jit(lambda p, x: model.apply({"params": p}, x, return_routing=True).routing.topk_indices)
    out["replay"] = collective_summary(fwd.lower(params, ids).compile().as_text(), h, i)

    shards = 1 if placement == "xla" else mesh.shape[MODEL]
    selected = [(layer, e) for layer in range(cfg.num_moe_layers) for e in range(0, cfg.num_experts, 2)]
    trainable = FullExperts.init(params, cfg, selected, expert_shards=shards)
    trainable = trainable.replace(
        weights=jax.device_put(trainable.weights, trainable_shardings(trainable.weights, mesh))
    )
    tx, _ = make_optimizer(1e-3, 10)
    grad_step, _, _ = make_steps(model, tx)
    text = grad_step.lower(trainable, params, ids, ids, ids, jax.random.PRNGKey(0)).compile().as_text()
    out["train"] = collective_summary(text, h, i)

    cache = init_kv_cache(cfg, B, 32, jnp.float32)

    def decode(p, tok, cache):
        o = model.apply({"params": p}, tok, jnp.ones((B, 32), jnp.int32), kv_cache=cache, last_token_logits=True)
        return o.logits, o.kv_cache

    tok = jax.device_put(jnp.ones((B, 1), jnp.int32), batch)
    out["decode"] = collective_summary(jax.jit(decode).lower(params, tok, cache).compile().as_text(), h, i)
    out["decode_tokens_per_data_shard"] = B // mesh.shape[DATA]
    out["data_groups"] = [
        [d * mesh.shape[MODEL] + m for d in range(mesh.shape[DATA])] for m in range(mesh.shape[MODEL])
    ]
    return out


if __name__ == "__main__":
    main(*sys.argv[1:])
