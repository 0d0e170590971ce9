"""Run under XLA_FLAGS=--xla_force_host_platform_device_count=8 (tests/test_quantized.py does): an
int8 model loaded sharded over 8 devices holds 1/8 of each expert stack's qvalue and scale per
device and gives the single-device logits and greedy tokens (decoding with its KV cache). One
checkpoint per argument; prints "ok ..." per checkpoint or fails."""

import sys

import jax
import jax.numpy as jnp
import numpy as np

import rise_jax
from rise_jax.evaluation.generate import generate
from rise_jax.models.layout import layer_runs
from rise_jax.sharding import make_mesh


def main(path: str) -> None:
    assert len(jax.devices()) == 8, jax.devices()
    model, single = rise_jax.load_model(path, dtype="float32", progress=False, frozen_dtype="int8")
    mesh = make_mesh(model=8)
    # Expert-parallel: each device dequantises and computes only its own experts.
    smodel, sharded = rise_jax.load_model(path, dtype="float32", progress=False, frozen_dtype="int8", mesh=mesh)
    moe_run = next(r.name for r in layer_runs(model.cfg) if r.is_moe)
    gate = sharded[moe_run]["moe"]["experts"]["gate_proj"]
    e = model.cfg.num_experts
    for part in (gate.qvalue, gate.scale):
        assert part.addressable_shards[0].data.shape[1] == e // 8, part.addressable_shards[0].data.shape
    assert gate.qvalue.dtype == jnp.int8
    ids = np.random.RandomState(0).randint(1, model.cfg.vocab_size, (2, 9))
    a = rise_jax.forward(model, single, jnp.asarray(ids)).logits
    b = rise_jax.forward(smodel, sharded, jnp.asarray(ids)).logits
    err = float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
    assert err < 1e-5, err
    mask = np.ones_like(ids)
    ga = generate(model, single, ids, mask, max_new_tokens=4, stop_ids=[], pad_id=0)
    gb = generate(smodel, sharded, ids, mask, max_new_tokens=4, stop_ids=[], pad_id=0)
    assert ga == gb, (ga, gb)
    shard = list(gate.qvalue.addressable_shards[0].data.shape)
    print(f"ok {model.cfg.model_type}: logits max err {err:.2e}, expert shard {shard}")


if __name__ == "__main__":
    for checkpoint in sys.argv[1:]:
        main(checkpoint)
