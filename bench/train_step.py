"""Training-step time vs HF torch (requires_grad only on the selected experts) and the memory of a
full-size Qwen3-30B-A3B RISE training step from abstract shapes.

    python bench/train_step.py [--k 16] [--repeats 5] [--memory-ks 8,16,32,64,128] [--lora-ranks 8,16,64] [--skip-step]
    python bench/train_step.py --skip-step --memory-model deepseek_v2_lite|glm45_air|... [--lora-k 48]
                                        # the full-size memory tables of another model (default qwen3)
    python bench/train_step.py --method lora --skip-memory   # LoRA baseline vs HF + peft, RISE+LoRA
                                        # (--method rise_lora: the same table; --lora-dropout P: both
                                        # sides drop the dense adapters' input)
    python bench/train_step.py --packing [--k 16]   # packed vs unpacked micro-batches on real text
                                        # lengths: useful tokens/s of one epoch each
    python bench/train_step.py --gpu    # HF on CUDA, JAX on its GPU backend (fp32, no TF32), plus the
                                        # real peak memory of a full-size Qwen3-30B-A3B step (random bf16 weights)

Reference: the paper's method in HF torch — everything frozen except the selected experts (in
transformers 5.x experts are fused per layer, so the layer's expert tensors require grad and the
unselected experts' gradients are zeroed by a hook), AdamW, grad-norm clipping; one step =
forward + backward + optimiser. Ours: ``grad_step`` + ``apply_step`` of rise_jax.training.step.
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
    HF_SETTINGS,
    LLAMA4_SCOUT,
    MID_QWEN,
    QWEN3_30B_A3B,
    QWEN3_NEXT_80B_A3B,
    QWEN35_35B_A3B,
    device_label,
    load_hf,
    median_time,
    pick_experts,
    real_text_sequences,
    set_threads,
    torch_sync,
    use_gpu,
    write_hf_qwen,
)

set_threads(2)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from rise_jax.checkpoints.hf_layout import expert_leaf_shape  # noqa: E402

GIB = 1024**3
# --memory-model name -> (label, HF config) of the full-size memory tables
MEMORY_MODELS = {
    "qwen3": ("Qwen3-30B-A3B", QWEN3_30B_A3B),
    "deepseek_v2_lite": ("DeepSeek-V2-Lite", DEEPSEEK_V2_LITE),
    "glm45_air": ("GLM-4.5-Air", GLM45_AIR),
    "llama4_scout": ("Llama-4-Scout-17B-16E", LLAMA4_SCOUT),
    "gemma4_26b_a4b": ("Gemma-4-26B-A4B", GEMMA4_26B_A4B),
    "qwen3_next_80b_a3b": ("Qwen3-Next-80B-A3B", QWEN3_NEXT_80B_A3B),
    "qwen35_35b_a3b": ("Qwen3.5-35B-A3B", QWEN35_35B_A3B),
}
DISPATCH = os.environ.get("RISE_BENCH_DISPATCH", "grouped_scan")


def bench_step(
    batch: int,
    seq: int,
    k: int,
    repeats: int,
    gpu: bool = False,
    dispatch: str = "auto",
    cfg: dict | None = None,
    remats: tuple[bool, ...] = (False, True),
) -> dict[str, float]:
    """Seconds per training step of HF torch (both settings) and ours (each of ``remats``) on
    ``cfg`` (default the mid-size Qwen3-MoE), printed as a table and returned by implementation."""
    import torch

    import rise_jax
    from rise_jax.training.methods import FullExperts
    from rise_jax.training.step import make_optimizer, make_steps

    dev = use_gpu(gpu)
    cfg = dict(MID_QWEN if cfg is None else cfg)
    tmp = write_hf_qwen(cfg)
    experts = pick_experts(cfg["num_hidden_layers"], cfg["num_experts"], k)
    ids = np.random.RandomState(0).randint(0, cfg["vocab_size"], (batch, seq))
    mask = np.ones_like(ids)
    results = {}

    for name, attn, exp in HF_SETTINGS:
        hf = load_hf(tmp, attn, exp).train().to(dev)
        for p in hf.parameters():
            p.requires_grad_(False)
        params = []
        for layer_idx, layer in enumerate(hf.model.layers):
            sel = torch.zeros(cfg["num_experts"], dtype=torch.bool, device=dev)
            for lyr, e in experts:
                sel[e] |= lyr == layer_idx
            if not sel.any():
                continue
            for p in (layer.mlp.experts.gate_up_proj, layer.mlp.experts.down_proj):
                p.requires_grad_(True)
                p.register_hook(lambda g, sel=sel: g * sel.view(-1, 1, 1).to(g.dtype))
                params.append(p)
        opt = torch.optim.AdamW(params, lr=2e-5)
        t_ids, t_mask = torch.tensor(ids, device=dev), torch.tensor(mask, device=dev)

        def hf_step(hf=hf, opt=opt, params=params, t_ids=t_ids, t_mask=t_mask):
            opt.zero_grad(set_to_none=True)
            out = hf(input_ids=t_ids, attention_mask=t_mask, labels=t_ids)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            torch_sync(dev)

        results[name] = median_time(hf_step, repeats=repeats)
        del hf, opt

    for remat in remats:
        model, base = rise_jax.load_model(tmp, dtype="float32", remat=remat, dispatch=dispatch, progress=False)
        trainable = FullExperts.init(base, model.cfg, experts)
        tx, _ = make_optimizer(2e-5, 1000)
        grad_step, apply_step, _ = make_steps(model, tx)
        state = {"w": trainable.weights, "o": tx.init(trainable.weights)}
        j_ids, j_mask = jnp.asarray(ids), jnp.asarray(mask)

        def our_step(state=state, grad_step=grad_step, apply_step=apply_step, trainable=trainable, base=base):
            t = trainable.replace(weights=state["w"])
            _, _, g = grad_step(t, base, j_ids, j_mask, j_mask, jax.random.PRNGKey(0))
            state["w"], state["o"], gn = apply_step(state["w"], state["o"], g, jnp.float32(1.0))
            gn.block_until_ready()

        t0 = time.perf_counter()
        our_step()
        print(f"  (rise_jax remat={remat}: first step incl. compile {time.perf_counter() - t0:.1f} s)")
        results[f"rise_jax {dispatch} (remat={remat})"] = median_time(our_step, repeats=repeats, warmup=0)

    best = min(v for n, v in results.items() if n.startswith("hf"))
    print(
        f"\ntraining step, mid-size Qwen3-MoE, batch {batch} x {seq}, fp32, {device_label(gpu)}, {k} selected experts"
    )
    print(f"{'implementation':32s} {'s/step':>8s} {'tokens/s':>9s} {'vs best HF':>10s}")
    for name, t in results.items():
        print(f"{name:32s} {t:8.3f} {batch * seq / t:9.0f} {best / t:9.2f}x")
    return results


PAPER_TABLE12_GB = {8: 64.7, 128: 72.0}  # RISE paper Table 12 (one H200), the endpoints quoted in the issue


def bench_lora_step(
    batch: int, seq: int, k: int, rank: int, repeats: int, gpu: bool = False, dropout: float = 0.0
) -> None:
    """Step time of the LoRA methods on the mid-size config (fp32, AdamW): the baseline
    (``train.method=lora``, attention q/k/v/o) against HF torch + peft with the same targets, and
    RISE+LoRA (adapters inside K selected experts) against our own full-expert RISE step — peft
    cannot restrict adapters to chosen experts of transformers' fused expert tensors."""
    import optax
    import peft
    import torch

    import rise_jax
    from rise_jax.training.methods import DenseLoRA, ExpertLoRA, FullExperts
    from rise_jax.training.options import TrainOptions
    from rise_jax.training.step import make_steps

    dev = use_gpu(gpu)
    cfg = dict(MID_QWEN)
    tmp = write_hf_qwen(cfg)
    ids = np.random.RandomState(0).randint(0, cfg["vocab_size"], (batch, seq))
    results = {}
    for name, attn, exp in HF_SETTINGS:
        hf = load_hf(tmp, attn, exp).train().to(dev)
        model = peft.get_peft_model(
            hf,
            peft.LoraConfig(
                r=rank, lora_alpha=rank, lora_dropout=dropout, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]
            ),
        )
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=2e-5)
        t_ids = torch.tensor(ids, device=dev)

        def hf_step(model=model, opt=opt, params=params, t_ids=t_ids):
            opt.zero_grad(set_to_none=True)
            model(input_ids=t_ids, labels=t_ids).loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            torch_sync(dev)

        results[f"peft lora ({name})"] = median_time(hf_step, repeats=repeats)
        del hf, model, opt
    model, base = rise_jax.load_model(tmp, dtype="float32", dispatch="auto", progress=False)
    experts = pick_experts(cfg["num_hidden_layers"], cfg["num_experts"], k)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(2e-5))
    grad_step, apply_step, _ = make_steps(model, tx)
    j_ids = jnp.asarray(ids)
    mask = jnp.ones_like(j_ids)
    for label, trainable in (
        ("rise_jax lora", DenseLoRA.init(base, [TrainOptions.lora_targets], rank, float(rank), dropout=dropout)),
        (f"rise_jax rise_lora (K={k})", ExpertLoRA.init(model.cfg, experts, rank, float(rank))),
        (f"rise_jax experts (K={k})", FullExperts.init(base, model.cfg, experts)),
    ):
        state = {"w": trainable.weights, "o": tx.init(trainable.weights)}

        def our_step(state=state, trainable=trainable):
            t = trainable.replace(weights=state["w"])
            _, _, g = grad_step(t, base, j_ids, mask, mask, jax.random.PRNGKey(0))
            state["w"], state["o"], gn = apply_step(state["w"], state["o"], g, jnp.float32(1.0))
            gn.block_until_ready()

        our_step()
        results[label] = median_time(our_step, repeats=repeats, warmup=0)
    best = min(v for n, v in results.items() if n.startswith("peft"))
    print(
        f"\nLoRA training step, mid-size Qwen3-MoE, batch {batch} x {seq}, fp32, {device_label(gpu)}, rank {rank}, "
        f"dense-adapter dropout {dropout}"
    )
    print(f"{'implementation':34s} {'s/step':>8s} {'tokens/s':>9s} {'vs best peft':>12s}")
    for name, t in results.items():
        print(f"{name:34s} {t:8.3f} {batch * seq / t:9.0f} {best / t:11.2f}x")


def bench_packing(batch: int, k: int, dispatch: str = "auto") -> None:
    """One epoch of RISE training steps (grad + AdamW update, mid-size Qwen3 model, fp32) over real
    text lengths, micro-batches of ``batch`` sequences a row (``train.pack`` False) or ``batch``
    packed rows (True); every shape compiled before the clock starts. Useful = non-padding tokens."""
    import rise_jax
    from rise_jax.training.data import MicroBatches, TrainingSet
    from rise_jax.training.methods import FullExperts
    from rise_jax.training.step import make_optimizer, make_steps

    tmp = write_hf_qwen(MID_QWEN)
    model, base = rise_jax.load_model(tmp, dtype="float32", dispatch=dispatch, progress=False)
    trainable = FullExperts.init(
        base, model.cfg, pick_experts(MID_QWEN["num_hidden_layers"], MID_QWEN["num_experts"], k)
    )
    tx, _ = make_optimizer(2e-5, 1000)
    grad_step, apply_step, _ = make_steps(model, tx)
    texts = {
        "FLoRes sentences (en, zh, sw, bn dev)": ("flores", ["en", "zh", "sw", "bn"]),
        "XQuAD question + context (en)": ("qa", ["en"]),
    }
    print(f"training step, packed vs unpacked: MID_QWEN (fp32), K = {k}, batch {batch}, one epoch, CPU 2 threads")
    print(
        f"{'text':40s} {'seqs':>5s} {'tokens':>7s} {'steps':>9s} {'padding':>15s} {'useful tok/s':>15s} {'ratio':>6s}"
    )
    for label, (kind, langs) in texts.items():
        seqs = real_text_sequences(kind, langs, 512, MID_QWEN["vocab_size"])
        data = TrainingSet(seqs, [np.ones(len(x), np.int32) for x in seqs], 0)
        useful = sum(len(x) for x in seqs)
        rate, pad, steps = {}, {}, {}
        for pack in (False, True):
            mb = MicroBatches.of(data, batch, 32, 0, pack)
            batches = [mb.batch(index) for index in mb.epoch(seed=0, epoch=0)]
            state = {"w": trainable.weights, "o": tx.init(trainable.weights)}

            def step(ids, att, loss, state=state):
                t = trainable.replace(weights=state["w"])
                _, _, g = grad_step(t, base, ids, att, loss, jax.random.PRNGKey(0))
                state["w"], state["o"], gn = apply_step(state["w"], state["o"], g, jnp.float32(1.0))
                return gn

            shapes = {b[0].shape: b for b in batches}
            for b in shapes.values():  # compile every shape first
                step(*b).block_until_ready()
            t0 = time.perf_counter()
            for b in batches:
                gn = step(*b)
            gn.block_until_ready()
            rate[pack] = useful / (time.perf_counter() - t0)
            pad[pack] = 1 - useful / sum(b[0].size for b in batches)
            steps[pack] = len(batches)
        print(
            f"{label:40s} {len(seqs):5d} {useful:7d} {steps[False]:4d}->{steps[True]:<4d} "
            f"{pad[False]:6.1%}->{pad[True]:<6.1%} {rate[False]:6.0f}->{rate[True]:<6.0f} "
            f"{rate[True] / rate[False]:5.2f}x"
        )


def memory_full_size(batch: int, seq: int, ks: list[int], model_name: str = "qwen3") -> None:
    """Memory of one RISE step on a full-size model (Qwen3-30B-A3B by default; ``MEMORY_MODELS``)
    for every K in ``ks``, from abstract shapes (no
    weights allocated): frozen bf16 weights + K fp32 master experts + their gradients + Adam's two
    moments, plus XLA's temporaries of the fp32 lowering of ``grad_step`` (an upper bound of the
    activations: the CPU backend runs bf16 dots in fp32). The paper's Table 12 row, in one run."""
    import rise_jax
    from rise_jax.models.transformer import MoEModel, RuntimeOptions
    from rise_jax.training import partition
    from rise_jax.training.methods import FullExperts
    from rise_jax.training.step import make_optimizer, make_steps

    label, hf_cfg = MEMORY_MODELS[model_name]
    cfg = rise_jax.config_from_hf_dict(hf_cfg)
    tx, _ = make_optimizer(2e-5, 1000)
    ids = jax.ShapeDtypeStruct((batch, seq), jnp.int32)
    b = lambda tree: sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree))  # noqa: E731

    def base_and_steps(dtype):
        model = MoEModel(cfg, RuntimeOptions(dtype=dtype, param_dtype=dtype, dispatch=DISPATCH, remat=True))
        base = jax.eval_shape(lambda m=model: m.init(jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32)))["params"]
        return base, make_steps(model, tx)[0]

    w_bf16 = b(base_and_steps(jnp.bfloat16)[0])
    base32, grad_step = base_and_steps(jnp.float32)
    rows = []
    for k in ks:
        experts = pick_experts(cfg.num_moe_layers, cfg.num_experts, k)
        slots = {run: jnp.asarray(s) for run, s in partition.expert_slots(cfg, experts).items()}
        weights = {
            run: {
                p: jax.ShapeDtypeStruct((int((np.asarray(s) >= 0).sum()), *expert_leaf_shape(cfg, p)), jnp.float32)
                for p in cfg.expert_param_names
            }
            for run, s in slots.items()
        }
        t0 = time.perf_counter()
        lowered = grad_step.lower(FullExperts(weights, slots), base32, ids, ids, ids, jax.random.PRNGKey(0))
        mem = lowered.compile().memory_analysis()
        masters, adam = b(weights), b(jax.eval_shape(tx.init, weights))
        act = mem.temp_size_in_bytes
        rows.append((k, masters, adam, act, w_bf16 + 2 * masters + adam + act, time.perf_counter() - t0))

    print(
        f"\n{label} RISE step, batch {batch} x {seq}, remat, AdamW, XLA memory analysis "
        f"({jax.default_backend()} compile); frozen bf16 weights {w_bf16 / GIB:.2f} GiB in every row"
    )
    print(
        f"{'K':>4s} {'masters':>8s} {'grads':>8s} {'Adam':>8s} {'act+tmp':>8s} {'total GiB':>10s} "
        f"{'total GB':>9s} {'paper GB':>9s} {'compile':>8s}"
    )
    for k, masters, adam, act, total, secs in rows:
        paper = PAPER_TABLE12_GB.get(k) if model_name == "qwen3" else None
        print(
            f"{k:4d} {masters / GIB:8.2f} {masters / GIB:8.2f} {adam / GIB:8.2f} {act / GIB:8.2f} "
            f"{total / GIB:10.2f} {total / 1e9:9.1f} {'' if paper is None else f'{paper:.1f}':>9s} {secs:7.1f}s"
        )
    growth = (rows[-1][4] - rows[0][4]) / 1e9
    paper = f" (paper: +{72.0 - 64.7:.1f} GB from K 8 to 128)" if model_name == "qwen3" else ""
    print(f"  K {rows[0][0]} -> {rows[-1][0]}: +{growth:.1f} GB{paper}")


def lora_memory_full_size(batch: int, seq: int, k: int, ranks: list[int], model_name: str = "qwen3") -> None:
    """The same accounting for RISE+LoRA (``train.method=rise_lora``): rank-r adapters on gate/up/
    down of the K selected experts instead of their fp32 copies (frozen bf16 weights unchanged)."""
    import rise_jax
    from rise_jax.models.expert_weights import LORA_A, LORA_B
    from rise_jax.models.transformer import MoEModel, RuntimeOptions
    from rise_jax.training import partition
    from rise_jax.training.methods import ExpertLoRA
    from rise_jax.training.methods.rise_lora import LORA_SCALE
    from rise_jax.training.step import make_optimizer, make_steps

    label, hf_cfg = MEMORY_MODELS[model_name]
    cfg = rise_jax.config_from_hf_dict(hf_cfg)
    tx, _ = make_optimizer(2e-5, 1000)
    ids = jax.ShapeDtypeStruct((batch, seq), jnp.int32)
    b = lambda tree: sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree))  # noqa: E731
    w_bf16 = b(
        jax.eval_shape(
            lambda: MoEModel(cfg, RuntimeOptions(dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)).init(
                jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32)
            )
        )["params"]
    )
    model = MoEModel(cfg, RuntimeOptions(dtype=jnp.float32, param_dtype=jnp.float32, dispatch=DISPATCH, remat=True))
    base32 = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32)))["params"]
    grad_step = make_steps(model, tx)[0]
    experts = pick_experts(cfg.num_moe_layers, cfg.num_experts, k)
    h, i = cfg.hidden_size, cfg.moe_intermediate_size
    print(f"\n{label} RISE+LoRA step, K = {k}, batch {batch} x {seq}, remat (same accounting):")
    print(
        f"{'rank':>5s} {'adapters':>9s} {'grads':>8s} {'Adam':>8s} {'act+tmp':>8s} {'total GiB':>10s} {'total GB':>9s}"
    )
    for r in ranks:
        slots = {run: jnp.asarray(s) for run, s in partition.expert_slots(cfg, experts).items()}
        weights = {}
        for run, s in slots.items():
            n = int((np.asarray(s) >= 0).sum())
            weights[run] = {
                p: {
                    LORA_A: jax.ShapeDtypeStruct((n, r, fi), jnp.float32),
                    LORA_B: jax.ShapeDtypeStruct((n, fo, r), jnp.float32),
                }
                for p, (fi, fo) in (("gate_proj", (h, i)), ("up_proj", (h, i)), ("down_proj", (i, h)))
            }
        slots[LORA_SCALE] = jnp.float32(1.0)
        lowered = grad_step.lower(ExpertLoRA(weights, slots), base32, ids, ids, ids, jax.random.PRNGKey(0))
        mem = lowered.compile().memory_analysis()
        adapters, adam = b(weights), b(jax.eval_shape(tx.init, weights))
        act = mem.temp_size_in_bytes
        total = w_bf16 + 2 * adapters + adam + act
        print(
            f"{r:5d} {adapters / GIB:9.3f} {adapters / GIB:8.3f} {adam / GIB:8.3f} {act / GIB:8.2f} "
            f"{total / GIB:10.2f} {total / 1e9:9.1f}"
        )


def time_steps(model, base, trainable, ids, repeats: int) -> dict[str, float]:
    """Run RISE training steps (``grad_step`` + ``apply_step``, AdamW) of ``trainable`` on the
    frozen ``base`` and the batch ``ids``: the first step's loss and gradient norm, its seconds
    (compile included), the median seconds of ``repeats`` more, and the trainable state's size."""
    from rise_jax.training.step import make_optimizer, make_steps, tree_bytes

    tx, _ = make_optimizer(2e-5, 1000)
    grad_step, apply_step, _ = make_steps(model, tx)
    weights, opt = trainable.weights, tx.init(trainable.weights)
    mask = jnp.ones_like(ids)
    state_bytes = {"trainable_gib": tree_bytes(weights) / GIB, "adam_gib": tree_bytes(opt) / GIB}

    def step():
        nonlocal weights, opt
        loss, _, g = grad_step(trainable.replace(weights=weights), base, ids, mask, mask, jax.random.PRNGKey(0))
        weights, opt, gn = apply_step(weights, opt, g, jnp.float32(1.0))
        return float(loss), float(gn)

    t0 = time.perf_counter()
    loss, gn = step()
    first = time.perf_counter() - t0
    t = median_time(step, repeats=repeats, warmup=0)
    return {"loss": loss, "grad_norm": gn, "first_step_s": first, "step_s": t, **state_bytes}


def peak_full_size(batch: int, seq: int, k: int, repeats: int) -> None:
    """Real device memory of one RISE step on Qwen3-30B-A3B: random bf16 weights built on the GPU,
    K fp32 master experts, AdamW; the allocator's peak after init and after the steps."""
    import rise_jax
    from rise_jax.models.transformer import MoEModel, RuntimeOptions
    from rise_jax.training.methods import FullExperts
    from rise_jax.training.step import make_optimizer, make_steps, tree_bytes

    dev = jax.devices()[0]
    cfg = rise_jax.config_from_hf_dict(QWEN3_30B_A3B)
    model = MoEModel(cfg, RuntimeOptions(dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, dispatch="auto", remat=True))
    t0 = time.perf_counter()
    base = jax.jit(lambda key: model.init(key, jnp.zeros((1, 1), jnp.int32))["params"])(jax.random.PRNGKey(0))
    jax.block_until_ready(base)
    after_init = dev.memory_stats()["peak_bytes_in_use"]
    print(
        f"\nQwen3-30B-A3B random bf16 weights on {dev.device_kind}: {tree_bytes(base) / GIB:.2f} GiB "
        f"({time.perf_counter() - t0:.0f} s); allocator peak so far {after_init / GIB:.2f} GiB"
    )
    experts = pick_experts(cfg.num_moe_layers, cfg.num_experts, k)
    trainable = FullExperts.init(base, cfg, experts)
    ids = jnp.asarray(np.random.RandomState(0).randint(0, cfg.vocab_size, (batch, seq)), jnp.int32)
    mask = jnp.ones_like(ids)
    grad_step = make_steps(model, make_optimizer(2e-5, 1000)[0])[0]
    mem = grad_step.lower(trainable, base, ids, mask, mask, jax.random.PRNGKey(0)).compile().memory_analysis()
    r = time_steps(model, base, trainable, ids, repeats)
    stats = dev.memory_stats()
    print(f"RISE step, K = {k}, batch {batch} x {seq}, bf16 compute, fp32 masters + AdamW, remat, dispatch auto:")
    print(
        f"  loss {r['loss']:.3f}, grad norm {r['grad_norm']:.3g}; first step incl. compile {r['first_step_s']:.0f} s, "
        f"then {r['step_s']:.3f} s/step ({batch * seq / r['step_s']:.0f} tokens/s)"
    )
    print(
        f"  XLA GPU memory analysis of grad_step: temporaries {mem.temp_size_in_bytes / GIB:.2f} GiB, "
        f"arguments {mem.argument_size_in_bytes / GIB:.2f} GiB"
    )
    print(
        f"  weights {tree_bytes(base) / GIB:.2f} GiB, masters {r['trainable_gib']:.2f} GiB, Adam {r['adam_gib']:.2f} GiB"
    )
    print(
        f"  REAL PEAK (allocator peak_bytes_in_use): {stats['peak_bytes_in_use'] / GIB:.2f} GiB "
        f"= {stats['peak_bytes_in_use'] / 1e9:.1f} GB (paper Table 12: 72.0 GB; target <= 64 GB)"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=16, help="selected experts in the mid-size step benchmark")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-step", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--dispatch", default="auto", help="MoE dispatch of ours (auto: per backend)")
    ap.add_argument("--gpu", action="store_true", help="time on the GPU and measure the full-size step's real peak")
    ap.add_argument("--memory-ks", default="8,16,32,64,128", help="K values of the full-size memory table (Table 12)")
    ap.add_argument("--lora-ranks", default="8,16,64", help="RISE+LoRA ranks of the full-size accounting")
    ap.add_argument("--lora-k", type=int, default=128, help="selected experts of the RISE+LoRA accounting")
    ap.add_argument("--memory-model", default="qwen3", choices=sorted(MEMORY_MODELS), help="full-size model")
    ap.add_argument(
        "--method", default="experts", choices=("experts", "lora", "rise_lora"), help="lora, rise_lora: the LoRA table"
    )
    ap.add_argument("--lora-dropout", type=float, default=0.0, help="dropout on the dense adapters' input (lora)")
    ap.add_argument("--packing", action="store_true", help="packed vs unpacked micro-batches on real text lengths")
    ap.add_argument("--batch", type=int, default=8, help="--packing: sequences (unpacked) or rows (packed) a step")
    args = ap.parse_args()
    if args.packing:
        bench_packing(args.batch, args.k, args.dispatch)
        return
    if not args.skip_step and args.method in ("lora", "rise_lora"):
        bench_lora_step(4, 512, args.k, 8, args.repeats, gpu=args.gpu, dropout=args.lora_dropout)
    elif not args.skip_step:
        bench_step(4, 512, args.k, args.repeats, gpu=args.gpu, dispatch=args.dispatch)
    if args.skip_memory:
        return
    memory_full_size(2, 512, [int(k) for k in args.memory_ks.split(",")], args.memory_model)
    lora_memory_full_size(2, 512, args.lora_k, [int(r) for r in args.lora_ranks.split(",")], args.memory_model)
    if args.gpu:
        peak_full_size(2, 512, 128, repeats=3)


if __name__ == "__main__":
    main()
