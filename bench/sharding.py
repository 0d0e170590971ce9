"""Per-device parameter and optimiser memory of the full-size models on 1, 2 and 8 devices.

    python bench/sharding.py             # shardings from abstract shapes + XLA memory analysis
    python bench/sharding.py --no-compile  # shard arithmetic only (seconds)

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()

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
