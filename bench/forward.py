"""Forward throughput of rise_jax vs the HF PyTorch reference, plus a full-size compile check.

    python bench/forward.py            # mid-size config, 4 x 512 tokens, fp32, 2 threads
    python bench/forward.py --quick    # smaller batch, no ragged_dot timing (CI smoke)
    python bench/forward.py --family gpt_oss|olmoe   # the companion study's other families
    python bench/forward.py --family deepseek_v2|glm4_moe   # DeepSeek-style (MLA / sigmoid router)
    python bench/forward.py --family llama4_text|gemma4_text|qwen3_next   # issue 39's families

Prints tokens/s of each implementation, ratios against HF torch's fastest in the same run (the
HF settings the family's modeling code supports; GPT-OSS has no sdpa), our achieved model
GFLOP/s against XLA's measured fp32 matmul peak, and the compile time and XLA memory analysis of
the family's full-size forward (Qwen3-30B-A3B, GPT-OSS-20B, OLMoE-1B-7B, DeepSeek-V2-Lite,
GLM-4.5-Air, Llama-4-Scout, Gemma-4-26B-A4B, Qwen3-Next-80B-A3B: ``FULL_CONFIGS``) lowered from
abstract shapes (no weights). ``--skip-full-size`` leaves that out.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    FULL_CONFIGS,
    HF_SETTINGS,
    MID_CONFIGS,
    cpu_line,
    forward_flops,
    load_hf,
    matmul_peaks,
    median_time,
    set_threads,
    write_hf_qwen,
)

set_threads(2)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


def bench_mid(family: str, batch: int, seq: int, repeats: int, with_ragged: bool) -> None:
    import torch

    import rise_jax

    cfg = dict(MID_CONFIGS[family])
    tmp = write_hf_qwen(cfg)
    ids = np.random.RandomState(0).randint(0, cfg["vocab_size"], (batch, seq))
    mask = np.ones_like(ids)
    tokens = batch * seq
    flops = forward_flops(cfg, batch, seq)

    results: dict[str, float] = {}
    t_ids, t_mask = torch.tensor(ids), torch.tensor(mask)
    settings = list(HF_SETTINGS) + [("hf eager/grouped_mm", "eager", "grouped_mm")]
    for name, attn, experts in settings:
        try:
            m = load_hf(tmp, attn, experts).eval()
        except (ValueError, NotImplementedError) as err:  # e.g. GPT-OSS does not implement sdpa
            print(f"  ({name}: not supported for {family}: {str(err).splitlines()[0][:100]})")
            continue
        with torch.no_grad():
            results[name] = median_time(lambda m=m: m(input_ids=t_ids, attention_mask=t_mask).logits, repeats=repeats)
        del m

    impls = ["grouped_scan", "dense"] + (["ragged"] if with_ragged else [])
    j_ids, j_mask = jnp.asarray(ids), jnp.asarray(mask)
    for impl in impls:
        model, params = rise_jax.load_model(tmp, dtype="float32", dispatch=impl, progress=False)

        def fn(model=model, params=params):
            return rise_jax.forward(model, params, j_ids, j_mask, inference=True).logits.block_until_ready()

        t0 = time.perf_counter()
        fn()
        compile_s = time.perf_counter() - t0
        results[f"rise_jax {impl}"] = median_time(fn, repeats=1 if impl == "ragged" else repeats, warmup=0)
        print(f"  (rise_jax {impl}: first call incl. compile {compile_s:.1f} s)")

    peaks = matmul_peaks()
    best_hf = min(v for k, v in results.items() if k.startswith("hf"))
    print(
        f"\nmid-size {family} forward, batch {batch} x {seq} tokens, fp32, 2 threads, {flops / 1e9:.1f} GFLOP/forward"
    )
    print(f"CPU: {cpu_line()}")
    print(f"{'implementation':34s} {'tokens/s':>10s} {'vs best HF':>10s} {'GFLOP/s':>8s}")
    for name, t in results.items():
        print(f"{name:34s} {tokens / t:10.0f} {best_hf / t:9.2f}x {flops / t / 1e9:8.1f}")
    ours = results["rise_jax grouped_scan"]
    print(
        f"\nmatmul peak (2048^2 fp32): XLA {peaks['xla']:.0f} GFLOP/s, torch {peaks.get('torch', float('nan')):.0f} GFLOP/s"
    )
    print(
        f"rise_jax default (grouped_scan) achieves {flops / ours / 1e9 / peaks['xla'] * 100:.0f}% of XLA's matmul peak"
    )


def bench_full_size_compile(family: str, batch: int, seq: int) -> None:
    import rise_jax
    from rise_jax.models.transformer import MoEModel, RuntimeOptions

    label, full = FULL_CONFIGS[family]
    cfg = rise_jax.config_from_hf_dict(full)
    for impl, dtype in (("grouped_scan", jnp.float32), ("grouped_scan", jnp.bfloat16), ("ragged", jnp.bfloat16)):
        model = MoEModel(cfg, RuntimeOptions(dtype=dtype, param_dtype=dtype, dispatch=impl))
        ids = jax.ShapeDtypeStruct((batch, seq), jnp.int32)
        params = jax.eval_shape(lambda m=model: m.init(jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32)))["params"]
        t0 = time.perf_counter()
        lowered = jax.jit(lambda p, i, m=model: m.apply({"params": p}, i).logits).lower(params, ids)
        t1 = time.perf_counter()
        compiled = lowered.compile()
        t2 = time.perf_counter()
        mem = compiled.memory_analysis()
        gib = lambda b: b / 1024**3  # noqa: E731
        print(
            f"{label} forward {batch}x{seq} {jnp.dtype(dtype).name} [{impl}]: lower {t1 - t0:.1f} s, "
            f"compile {t2 - t1:.1f} s; weights+inputs {gib(mem.argument_size_in_bytes):.2f} GiB, "
            f"outputs {gib(mem.output_size_in_bytes):.2f} GiB, temporaries {gib(mem.temp_size_in_bytes):.2f} GiB"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="batch 1 x 256, 2 repeats, no ragged timing")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--family", choices=sorted(MID_CONFIGS), default="qwen3_moe")
    ap.add_argument("--skip-mid", action="store_true", help="only the full-size compile check")
    ap.add_argument("--skip-ragged", action="store_true", help="no ragged_dot timing (XLA CPU emulates it densely)")
    ap.add_argument("--skip-full-size", action="store_true", help="only the mid-size timing")
    args = ap.parse_args()
    if args.skip_mid:
        pass
    elif args.quick:
        bench_mid(args.family, 1, 256, 2, with_ragged=False)
    else:
        bench_mid(args.family, 4, 512, args.repeats, with_ragged=not args.skip_ragged)
    if not args.skip_full_size:
        bench_full_size_compile(args.family, 4, 512)


if __name__ == "__main__":
    main()
