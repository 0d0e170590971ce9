"""Memory of full-size RISE models per frozen-weight format (``model.frozen_dtype``), from
abstract shapes: no weight is allocated, XLA's memory analysis of the compiled programs.

    python bench/frozen_memory.py [--formats bfloat16,int8,float8_e4m3fn] [--groups experts,mlp,lm_head]
                                  [--models qwen3,phi35,deepseek_v2_lite,glm45_air,...]

Per model (``MODELS``: Qwen3-30B-A3B with K = 128 trainable experts, Phi-3.5-MoE with K = 16,
DeepSeek-V2-Lite with K = 48, GLM-4.5-Air with K = 128, Llama-4-Scout, Gemma-4-26B-A4B,
Qwen3-Next-80B-A3B and Qwen3.5-35B-A3B, each with its config's budget) and format:

* weights: the frozen model as stored (int8 / fp8 kernels + fp32 per-channel scales; norms,
  routers, embeddings and biases in bf16);
* step: weights + K fp32 masters + their gradients + Adam (mu, nu) + the temporaries of
  ``grad_step`` (batch 2 x 512, remat) — lowered with fp32 compute, an upper bound for bf16 on a
  GPU (XLA CPU runs bf16 dots in fp32);
* replay: weights + temporaries of the routing forward (batch 8 x 512, no LM head);
* generation: weights + a bf16 KV cache for 8 x 2048 positions (the shapes ``init_kv_cache``
  allocates: for MLA the ``kv_lora_rank`` latent and the rotated key per token and layer; for
  Gated DeltaNet layers the fixed-size recurrent and convolution states) + the
  temporaries of a prefill forward (8 x 512 with logits).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    DEEPSEEK_V2_LITE,
    GEMMA4_26B_A4B,
    GLM45_AIR,
    LLAMA4_SCOUT,
    PHI35_MOE,
    QWEN3_30B_A3B,
    QWEN3_NEXT_80B_A3B,
    QWEN35_35B_A3B,
    pick_experts,
    set_threads,
)

set_threads(2)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

GIB = 1024**3
TARGETS = {"Qwen3-30B-A3B": 44.0, "Phi-3.5-MoE": 70.0}  # GiB, the step targets (48 / 80 GB GPUs)
# --models name -> (label, HF config, K trainable experts: the config's default budget)
MODELS = {
    "qwen3": ("Qwen3-30B-A3B", QWEN3_30B_A3B, 128),
    "phi35": ("Phi-3.5-MoE", PHI35_MOE, 16),
    "deepseek_v2_lite": ("DeepSeek-V2-Lite", DEEPSEEK_V2_LITE, 48),  # configs/deepseek_v2_lite.py
    "glm45_air": ("GLM-4.5-Air", GLM45_AIR, 128),  # configs/glm45_air.py
    "llama4_scout": ("Llama-4-Scout-17B-16E", LLAMA4_SCOUT, 16),  # configs/llama4_scout.py
    "gemma4_26b_a4b": ("Gemma-4-26B-A4B", GEMMA4_26B_A4B, 84),  # configs/gemma4_26b_a4b.py
    "qwen3_next_80b_a3b": ("Qwen3-Next-80B-A3B", QWEN3_NEXT_80B_A3B, 512),  # configs/qwen3_next_80b_a3b.py
    "qwen35_35b_a3b": ("Qwen3.5-35B-A3B", QWEN35_35B_A3B, 224),  # configs/qwen35_35b_a3b.py
}


def nbytes(tree) -> int:
    return int(sum(x.size * np.dtype(x.dtype).itemsize for x in jax.tree_util.tree_leaves(tree)))


def abstract_frozen(params, fmt: str, dtype, groups: tuple[str, ...]):
    """Params of ShapeDtypeStructs with the quantizable kernels as abstract QuantizedArrays."""
    from rise_jax.models.quantized import QuantizedArray, is_quantizable

    def one(path, leaf):
        keys = tuple(str(getattr(k, "key", k)) for k in path)
        if fmt in ("bfloat16", "float32") or not is_quantizable(keys, groups):
            return leaf
        scale = (*leaf.shape[:-2], 1, leaf.shape[-1])
        return QuantizedArray(
            jax.ShapeDtypeStruct(leaf.shape, jnp.dtype(fmt)), jax.ShapeDtypeStruct(scale, jnp.float32), dtype
        )

    return jax.tree_util.tree_map_with_path(one, params)


def measure(name: str, hf: dict, k: int, formats: list[str], groups: tuple[str, ...]) -> list[tuple]:
    import rise_jax
    from rise_jax.checkpoints.hf_layout import expert_leaf_shape
    from rise_jax.models.transformer import MoEModel, RuntimeOptions, init_kv_cache
    from rise_jax.training import partition
    from rise_jax.training.methods import FullExperts
    from rise_jax.training.step import make_optimizer, make_steps

    cfg = rise_jax.config_from_hf_dict(hf)
    experts = pick_experts(cfg.num_moe_layers, cfg.num_experts, k)
    slots = {run: jnp.asarray(s) for run, s in partition.expert_slots(cfg, experts).items()}
    masters = {
        run: {
            p: jax.ShapeDtypeStruct((int((np.asarray(s) >= 0).sum()), *expert_leaf_shape(cfg, p)), jnp.float32)
            for p in cfg.expert_param_names
        }
        for run, s in slots.items()
    }
    tx, _ = make_optimizer(2e-5, 1000)
    trained = 2 * nbytes(masters) + nbytes(jax.eval_shape(tx.init, masters))  # masters + grads + Adam
    kv = nbytes(jax.eval_shape(lambda: init_kv_cache(cfg, 8, 2048, jnp.bfloat16)))  # bf16 K and V (MLA: latent)
    rows = []
    for fmt in formats:
        t0 = time.perf_counter()
        bf16 = MoEModel(cfg, RuntimeOptions(dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, dispatch="grouped_scan"))
        base16 = jax.eval_shape(lambda m=bf16: m.init(jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32)))["params"]
        weights = nbytes(abstract_frozen(base16, fmt, jnp.bfloat16, groups))
        f32 = MoEModel(
            cfg, RuntimeOptions(dtype=jnp.float32, param_dtype=jnp.float32, dispatch="grouped_scan", remat=True)
        )
        base32 = jax.eval_shape(lambda m=f32: m.init(jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32)))["params"]
        frozen32 = abstract_frozen(base32, fmt if fmt != "bfloat16" else "float32", jnp.float32, groups)
        grad_step = make_steps(f32, tx)[0]
        ids = jax.ShapeDtypeStruct((2, 512), jnp.int32)
        step_tmp = grad_step.lower(FullExperts(masters, slots), frozen32, ids, ids, ids, jax.random.PRNGKey(0))
        step_tmp = step_tmp.compile()
        step_tmp = step_tmp.memory_analysis().temp_size_in_bytes
        tokens = jax.ShapeDtypeStruct((8, 512), jnp.int32)

        def fwd(p, x, lm_head):
            return f32.apply({"params": p}, x, return_routing=not lm_head, skip_lm_head=not lm_head)

        replay_tmp = jax.jit(lambda p, x: fwd(p, x, False)).lower(frozen32, tokens).compile()
        prefill_tmp = jax.jit(lambda p, x: fwd(p, x, True)).lower(frozen32, tokens).compile()
        rows.append(
            (
                name,
                fmt,
                weights,
                weights + trained + step_tmp,
                step_tmp,
                weights + replay_tmp.memory_analysis().temp_size_in_bytes,
                weights + kv + prefill_tmp.memory_analysis().temp_size_in_bytes,
                time.perf_counter() - t0,
            )
        )
    print(
        f"\n{name}: K = {k}; masters + grads + Adam {trained / GIB:.2f} GiB; KV cache 8 x 2048 bf16 {kv / GIB:.2f} GiB"
    )
    print(
        f"{'format':>14s} {'weights':>8s} {'step':>8s} {'(tmp)':>7s} {'replay':>8s} {'generate':>9s}  target  compile"
    )
    for _, fmt, w, step, tmp, replay, gen, secs in rows:
        if name in TARGETS:
            target = f"<= {TARGETS[name]:.0f} GiB {'met' if step / GIB <= TARGETS[name] else 'NOT met'}"
        else:
            target = "(no target)"
        print(
            f"{fmt:>14s} {w / GIB:8.2f} {step / GIB:8.2f} {tmp / GIB:7.2f} {replay / GIB:8.2f} {gen / GIB:9.2f}"
            f"  {target}  {secs:.0f}s"
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--formats", default="bfloat16,int8,float8_e4m3fn")
    ap.add_argument("--groups", default="experts,mlp,lm_head", help="quantized groups (model.frozen_groups)")
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma list of {', '.join(MODELS)}")
    args = ap.parse_args()
    formats, groups = args.formats.split(","), tuple(args.groups.split(","))
    print(f"GiB; quantized groups {', '.join(groups)}; step/replay/generate = weights + what that program adds")
    for key in args.models.split(","):
        measure(*MODELS[key], formats, groups)


if __name__ == "__main__":
    main()
