"""Per-device memory of the full-size models on 1, 2 and 8 devices, and what expert parallelism
moves between devices (before / after).

    python bench/sharding.py             # shardings from abstract shapes + XLA memory analysis
    python bench/sharding.py --no-compile  # shard arithmetic only (seconds)
    python bench/sharding.py --collectives  # per-layer collective bytes + step time, xla vs ep

``--collectives``: on 8 simulated devices (mesh data 1 x model 8), the replay forward (8 x 512
tokens; mid-size 8 x 128), one training step (gradients of K trainable experts: every 16th expert
of each layer) and one decode step (8 sequences, 1 token, 512-slot cache) are compiled with the
partitioner's own dispatch (``xla``: ``load_model(sharding=...)``, the "before") and with the
expert-parallel one (``ep``: ``load_model(mesh=...)``). From each compiled HLO
(``rise_jax.hlo_collectives.collective_summary``): the bytes one device's collectives move per layer
(the largest layer loop: all of them, and the MoE block's alone), and the expert-weight bytes
collectives carry in all. The mid-size model also runs (median of 3 calls, seconds); the
full-size ones are compiled from abstract shapes only.

Runs on 8 simulated CPU devices (XLA_FLAGS is set below, before jax starts). Parameter bytes per
device come from each leaf's NamedSharding (rise_jax/sharding.py rules: experts split whole over
the `model` axis, large dense matrices FSDP-style, the rest replicated); the optimiser column is
the RISE trainable state (K experts: fp32 masters + 2 Adam moments, split by expert). With
compilation, XLA's memory analysis of one bf16 replay forward (batch 8 x 512 tokens, routing
output on) lowered from abstract shapes gives the per-device argument and temporary bytes.
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from common import PHI35_MOE, QWEN3_30B_A3B  # noqa: E402

GIB = 1024**3


def per_device_bytes(tree, shardings) -> int:
    return int(
        sum(
            np.prod(s.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize
            for x, s in zip(jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(shardings), strict=True)
        )
    )


MIB = 1024**2


def collectives(name: str, hf: dict, run: bool, tokens: tuple[int, int]) -> None:
    """One row per (stage, dispatch): per-layer collective MiB (all / MoE block), expert-weight
    MiB, and the step time where ``run``."""
    from common import median_time

    import rise_jax
    from rise_jax.hlo_collectives import collective_summary
    from rise_jax.models.transformer import MoEModel, RuntimeOptions, init_kv_cache
    from rise_jax.sharding import make_mesh, tree_shardings
    from rise_jax.training.methods import FullExperts
    from rise_jax.training.step import make_optimizer, make_steps

    cfg = rise_jax.config_from_hf_dict(hf)
    mesh = make_mesh(model=8)
    dtype = jnp.float32 if run else jnp.bfloat16
    b, t = tokens
    for placement in ("xla", "ep"):
        opts = RuntimeOptions(dtype=dtype, param_dtype=dtype, expert_mesh=mesh if placement == "ep" else None)
        model = MoEModel(cfg, opts)
        init = lambda m=model: m.init(jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32))["params"]  # noqa: E731
        abstract = jax.eval_shape(init)
        shard = tree_shardings(abstract, mesh)
        params = (
            jax.jit(init, out_shardings=shard)()
            if run
            else jax.tree_util.tree_map(
                lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shard
            )
        )
        ids = jnp.ones((b, t), jnp.int32)
        sel = [(layer, e) for layer in range(cfg.num_moe_layers) for e in range(0, cfg.num_experts, 16)]
        shards = 8 if placement == "ep" else 1
        make = lambda p: FullExperts.init(p, cfg, sel, expert_shards=shards)  # noqa: E731
        trainable = make(params) if run else jax.eval_shape(make, params)
        if run:
            from rise_jax.sharding import trainable_shardings

            trainable = trainable.replace(
                weights=jax.device_put(trainable.weights, trainable_shardings(trainable.weights, mesh))
            )
        grad_step, _, _ = make_steps(model, make_optimizer(1e-5, 10)[0])
        cache = jax.eval_shape(lambda: init_kv_cache(cfg, b, 512, dtype))
        if run:
            cache = init_kv_cache(cfg, b, 512, dtype)

        def decode(p, tok, cache, m=model):
            o = m.apply({"params": p}, tok, jnp.ones((b, 512), jnp.int32), kv_cache=cache, last_token_logits=True)
            return o.logits, o.kv_cache

        replay = jax.jit(
            lambda p, i, m=model: m.apply({"params": p}, i, return_routing=True, skip_lm_head=True).routing.topk_indices
        )
        stages = {
            "replay": (replay, (params, ids)),
            "train step": (grad_step, (trainable, params, ids, ids, ids, jax.random.PRNGKey(0))),
            "decode step": (jax.jit(decode), (params, jnp.ones((b, 1), jnp.int32), cache)),
        }
        for stage, (fn, fn_args) in stages.items():
            t0 = time.perf_counter()
            compiled = fn.lower(*fn_args).compile()
            compile_s = time.perf_counter() - t0
            c = collective_summary(compiled.as_text(), cfg.hidden_size, cfg.moe_intermediate_size)
            step = median_time(lambda: jax.block_until_ready(compiled(*fn_args)), repeats=3) if run else float("nan")
            print(
                f"{name:14s} {stage:12s} {placement:4s} {c['max_loop_bytes'] / MIB:12.2f} {c['max_moe_loop_bytes'] / MIB:12.2f}"
                f" {c['expert_weight_bytes'] / MIB:12.1f} {step:9.3f} {compile_s:9.1f}",
                flush=True,
            )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--collectives", action="store_true")
    args = ap.parse_args()
    if args.collectives:
        from common import MID_QWEN

        print(
            f"{'model':14s} {'stage':12s} {'disp':4s} {'layer MiB':>12s} {'MoE MiB':>12s} {'expert-w MiB':>12s} {'step s':>9s} {'compile s':>9s}"
        )
        collectives("mid-size Qwen", MID_QWEN, True, (8, 128))
        collectives("Qwen3-30B-A3B", QWEN3_30B_A3B, False, (8, 512))
        collectives("Phi-3.5-MoE", PHI35_MOE, False, (8, 512))
        return

    import rise_jax
    from rise_jax.models.transformer import MoEModel, RuntimeOptions
    from rise_jax.sharding import make_mesh, tree_shardings

    print(
        f"{'model':16s} {'devices':>7s} {'params/dev GiB':>15s} {'RISE opt/dev GiB':>17s} {'fwd args/dev GiB':>17s} {'fwd temp/dev GiB':>17s} {'compile s':>9s}"
    )
    for name, hf, k in (("Qwen3-30B-A3B", QWEN3_30B_A3B, 128), ("Phi-3.5-MoE", PHI35_MOE, 16)):
        cfg = rise_jax.config_from_hf_dict(hf)
        model = MoEModel(cfg, RuntimeOptions(dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, dispatch="grouped_scan"))
        params = jax.eval_shape(lambda m=model: m.init(jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32)))["params"]
        e = params["layers"]["moe"]["experts"]
        per_expert = sum(int(np.prod(v.shape[2:])) for v in e.values())
        for n in (1, 2, 8):
            mesh = make_mesh(model=n, devices=jax.devices()[:n])
            shard = tree_shardings(params, mesh)
            p_bytes = per_device_bytes(params, shard)
            # K experts: fp32 master + Adam mu + nu, split by expert when K divides.
            k_rows = k // n if k % n == 0 else k
            opt = 3 * 4 * k_rows * per_expert
            fwd_args = fwd_temp = compile_s = float("nan")
            if not args.no_compile:
                ids = jax.ShapeDtypeStruct((8, 512), jnp.int32)
                fn = jax.jit(
                    lambda p, i, m=model: (
                        m.apply({"params": p}, i, return_routing=True, skip_lm_head=True).routing.topk_indices
                    ),
                    in_shardings=(shard, None),
                )
                t0 = time.perf_counter()
                mem = fn.lower(params, ids).compile().memory_analysis()
                compile_s = time.perf_counter() - t0
                fwd_args, fwd_temp = mem.argument_size_in_bytes / GIB, mem.temp_size_in_bytes / GIB
            print(
                f"{name:16s} {n:7d} {p_bytes / GIB:15.2f} {opt / GIB:17.2f} {fwd_args:17.2f} {fwd_temp:17.2f} {compile_s:9.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
