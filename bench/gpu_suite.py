"""Every GPU figure in one command: ``python bench/gpu_suite.py`` (≤ 8 minutes on one H100 / H200).

    python bench/gpu_suite.py [--out DIR] [--only a,b] [--skip a,b] [--budget-scale 1.0]
    python bench/gpu_suite.py --smoke      # tiny sizes on the CPU, in-process (the test suite runs it)

Parts, in order (each with its own time budget, seconds on the GPU):

* ``env``: device, jax / torch / transformers versions, the CPU model on a CPU run.
* ``parity``: mid-size Qwen3-MoE and DeepSeek-V2 (MLA) forwards on the device in fp32 (full-precision
  matmuls) and bf16 against the HF reference in fp32 on the CPU: max |Δ logit| / max |logit| and
  top-1 agreement.
* ``grad_norms``: the first step's gradient (K = 128 trainable experts) of every dispatch in bf16
  and fp32 against an fp32 ``dense`` step, on Qwen3-30B-A3B's full widths (hidden 2048, 128 experts
  of 768, vocabulary 151,936, 32 / 4 heads) with ``--grad-layers`` layers (default 8 of 48: an fp32
  48-layer model is 114 GiB, over one H100). All runs share one set of random bf16 weights (the fp32
  runs use their exact fp32 values), so the fp32 reference differs from the bf16 runs by arithmetic
  only. Reported: loss, gradient norm, relative error ``|g - g_ref| / |g_ref|`` of the whole
  gradient and of the worst single expert. This is what settles the H200 run's first-step norms (``ragged`` 0.509 vs ``blocked``
  0.347 in bf16, 48 layers, bench/RESULTS.md): whichever is far from the fp32 reference is wrong.
* ``decode_vs_hf`` / ``train_vs_hf``: ``bench/generate.py --gpu`` and ``bench/train_step.py --gpu``
  (mid-size model, fp32 both sides, ratios against HF's best setting in the same run).
* ``step_bfloat16`` / ``step_int8`` / ``step_float8_e4m3fn``: a full-size Qwen3-30B-A3B RISE
  training step (K = 128 fp32 masters, AdamW, batch 2 × 512, remat, bf16 compute, dispatch
  ``auto``) on a frozen base held in that format: weights, s/step and the allocator's peak.
* ``rise_lora`` / ``lora``: the same step with rank-8 adapters in the K = 128 experts
  (``train.method=rise_lora``) and on attention q/k/v/o (``lora``), bf16 base: peak and s/step.
* ``continuous``: continuous-batching generation (default slots) against static batches of 8 on
  the mid-size model in bf16, prompts of mixed lengths whose answers end at varied lengths (stop ids):
  new tokens/s of each and how many answers are identical.

Full-size weights are random (:func:`common.random_params`, built on the device; no checkpoint).
Every part runs in its own process (``--in-process`` runs them in this one): its peak memory is its
own, a crash or an out-of-memory error ends that part only, and the part is stopped at its budget
(plus a short grace for a compile in flight). A part that runs out reports "timed out" with the rows
it finished; an error is reported and the next part runs. The JSON (``DIR/gpu_suite.json``) is
rewritten atomically after every part, so a killed run leaves what it measured; the Markdown
tables (``DIR/gpu_suite.md``, the layout of ``bench/RESULTS.md``) are printed at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    MID_DEEPSEEK_V2,
    MID_QWEN,
    QWEN3_30B_A3B,
    TINY_DEEPSEEK_V2,
    TINY_QWEN,
)

GIB = 1024**3
GRACE_S = 20.0  # past a part's budget before its process is killed (a compile cannot be interrupted)


# (dispatch, dtype) of the gradient-norm part, the reference first, then by what the question needs.
GRAD_CASES = (
    ("dense", "float32"),
    ("blocked", "bfloat16"),
    ("ragged", "bfloat16"),
    ("blocked", "float32"),
    ("ragged", "float32"),
    ("dense", "bfloat16"),
    ("grouped_scan", "bfloat16"),
    ("grouped_scan", "float32"),
)


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Every size the parts use: the GPU run's and the smoke run's (tiny, CPU)."""

    parity: dict[str, dict[str, Any]]  # family -> HF config
    parity_tokens: tuple[int, int]  # batch, sequence
    full: dict[str, Any]  # the full-size model of the step parts
    grad_layers: int  # layers of the full-width gradient-norm model
    grad_cases: tuple[tuple[str, str], ...]  # (dispatch, dtype) of the gradient-norm part, reference first
    k: int  # trainable experts of the full-size steps
    remat: bool  # of the full-size steps and the gradient-norm model
    step_tokens: tuple[int, int]
    lora_rank: int
    mid: dict[str, Any]  # the model of the HF ratios and of generation
    decode: tuple[int, int, int]  # batch, prompt length, new tokens
    train: tuple[int, int, int]  # batch, sequence, trainable experts
    remats: tuple[bool, ...]  # our step's settings in train_vs_hf
    generation: tuple[int, int, int, int, int]  # prompts, shortest, longest, new tokens at most, stop-id modulus
    repeats: int


GPU_SIZES = Sizes(
    parity={"qwen3_moe": MID_QWEN, "deepseek_v2": MID_DEEPSEEK_V2},
    parity_tokens=(2, 128),
    full=QWEN3_30B_A3B,
    grad_layers=8,
    grad_cases=GRAD_CASES,
    k=128,
    remat=True,
    step_tokens=(2, 512),
    lora_rank=8,
    mid=MID_QWEN,
    decode=(8, 128, 64),
    train=(4, 512, 16),
    remats=(False, True),
    generation=(128, 48, 160, 256, 64),  # MGSM-like prompt lengths: 4 buckets of 32 to compile
    repeats=3,
)
SMOKE_SIZES = Sizes(
    parity={"qwen3_moe": TINY_QWEN, "deepseek_v2": TINY_DEEPSEEK_V2},
    parity_tokens=(2, 16),
    full=TINY_QWEN,
    grad_layers=2,
    grad_cases=(("dense", "float32"), ("blocked", "bfloat16")),  # the reference and one other
    k=4,
    remat=False,  # compiles in half the time; remat's own path is the tests' (test_training)
    step_tokens=(2, 16),
    lora_rank=2,
    mid=TINY_QWEN,
    decode=(2, 8, 3),
    train=(2, 16, 4),
    remats=(True,),
    generation=(4, 3, 12, 6, 16),  # 4 prompts fill 4 slots at once: one prefill, one decode program
    repeats=1,
)


class TimeUp(Exception):
    """A part's budget ran out (raised by :meth:`PartContext.check` between measurements)."""


@dataclasses.dataclass
class PartContext:
    """What a part writes to: ``row`` appends one measurement (a flat dict; one table row),
    ``note`` sets part-wide values; each persists the record at once (``save``). ``check`` ends
    the part with :class:`TimeUp` once its deadline (``time.monotonic``) has passed."""

    name: str
    sizes: Sizes
    deadline: float
    record: dict[str, Any]
    save: Callable[[], None]
    gpu: bool

    def row(self, **fields: Any) -> None:
        self.record["rows"].append(fields)
        self.save()

    def note(self, **fields: Any) -> None:
        self.record["notes"].update(fields)
        self.save()

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise TimeUp


# --- the parts -------------------------------------------------------------------------------------


def part_env(ctx: PartContext) -> None:
    from common import environment

    ctx.note(**environment())


def part_parity(ctx: PartContext) -> None:
    """Our forward on the device (fp32 at full matmul precision, and bf16) against HF torch's fp32
    forward on the CPU, same checkpoint and tokens."""
    import jax
    import numpy as np
    import torch
    from common import load_hf, write_hf_qwen

    import rise_jax

    batch, seq = ctx.sizes.parity_tokens
    for family, cfg in ctx.sizes.parity.items():
        path = write_hf_qwen(cfg)
        ids = np.random.RandomState(0).randint(1, cfg["vocab_size"], (batch, seq))
        with torch.no_grad():
            ref = load_hf(path, "eager", "eager").eval()(input_ids=torch.tensor(ids)).logits.float().numpy()
        for dtype in ("float32", "bfloat16"):
            ctx.check()
            model, params = rise_jax.load_model(path, dtype=dtype, progress=False)
            with jax.default_matmul_precision("highest" if dtype == "float32" else "default"):
                out = rise_jax.forward(model, params, ids, np.ones_like(ids)).logits
            ours = np.asarray(out, np.float32)
            ctx.row(
                family=family,
                dtype=dtype,
                device=jax.devices()[0].device_kind,
                rel_max_error=float(np.abs(ours - ref).max() / np.abs(ref).max()),
                top1_agreement=float(np.mean(ours.argmax(-1) == ref.argmax(-1))),
            )


def part_grad_norms(ctx: PartContext) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from common import pick_experts, random_params

    import rise_jax
    from rise_jax.models.transformer import MoEModel, RuntimeOptions
    from rise_jax.training.methods import FullExperts
    from rise_jax.training.step import make_optimizer, make_steps

    cfg = rise_jax.config_from_hf_dict({**ctx.sizes.full, "num_hidden_layers": ctx.sizes.grad_layers})
    batch, seq = ctx.sizes.step_tokens

    def model(dispatch: str, dtype: str) -> MoEModel:
        dt = jnp.dtype(dtype)
        return MoEModel(cfg, RuntimeOptions(dtype=dt, param_dtype=dt, dispatch=dispatch, remat=ctx.sizes.remat))

    base16 = random_params(model("dense", "bfloat16"))
    base32 = jax.jit(lambda p: jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), p))(base16)
    experts = pick_experts(cfg.num_moe_layers, cfg.num_experts, ctx.sizes.k)
    trainable = FullExperts.init(base32, cfg, experts)
    ids = jnp.asarray(np.random.RandomState(0).randint(0, cfg.vocab_size, (batch, seq)), jnp.int32)
    mask = jnp.ones_like(ids)
    ctx.note(
        model=f"{cfg.num_layers} layers at full width (hidden {cfg.hidden_size}, {cfg.num_experts} experts "
        f"of {cfg.moe_intermediate_size}, vocab {cfg.vocab_size})",
        k=len(experts),
        tokens=f"{batch} x {seq}",
    )
    tx = make_optimizer(2e-5, 1000)[0]
    ref, ref_norm = None, 1.0
    for dispatch, dtype in ctx.sizes.grad_cases:
        ctx.check()
        t0 = time.perf_counter()
        try:
            grad_step = make_steps(model(dispatch, dtype), tx)[0]
            with jax.default_matmul_precision("highest" if dtype == "float32" else "default"):
                loss, _, g = grad_step(
                    trainable, base32 if dtype == "float32" else base16, ids, mask, mask, jax.random.PRNGKey(0)
                )
            if ref is None:  # the first case that ran: the fp32 dense step unless it failed
                ref = g
                ctx.note(reference=f"{dispatch} {dtype}")
            norm, rel, worst = _gradient_errors(g, ref)
        except Exception as err:  # noqa: BLE001 - e.g. out of memory: this case's row says so, the rest run
            ctx.row(dispatch=dispatch, dtype=dtype, error=f"{type(err).__name__}: {str(err).splitlines()[0][:200]}")
            continue
        ref_norm = norm if ref is g else ref_norm
        ctx.row(
            dispatch=dispatch,
            dtype=dtype,
            loss=float(loss),
            grad_norm=norm,
            norm_vs_fp32_dense=norm / ref_norm,
            rel_error_vs_fp32_dense=rel,
            worst_expert_rel_error=worst,
            seconds_incl_compile=time.perf_counter() - t0,
        )
        del g


def _gradient_errors(grads: dict[str, Any], ref: dict[str, Any]) -> tuple[float, float, float]:
    """(norm of ``grads``, ``|grads - ref| / |ref|``, the largest relative error of one trainable
    expert's gradient, its projections together), in one compiled program. The per-expert figure
    shows a dispatch that mishandles some experts' rows (padding, group offsets) even when the
    whole gradient's error is small. Leaves are ``[K_run, ...]`` per run."""
    return tuple(float(x) for x in _gradient_errors_fn()(grads, ref))


@functools.cache
def _gradient_errors_fn():
    import jax
    import jax.numpy as jnp

    @jax.jit
    def errors(grads, ref):
        sq = lambda x: jnp.sum(x.astype(jnp.float32) ** 2, axis=tuple(range(1, x.ndim)))  # noqa: E731
        norm2, diff2, ref2, worst = 0.0, 0.0, 0.0, 0.0
        for run in ref:
            leaves = zip(jax.tree_util.tree_leaves(grads[run]), jax.tree_util.tree_leaves(ref[run]), strict=True)
            d2 = r2 = 0.0
            for a, b in leaves:
                norm2 = norm2 + jnp.sum(sq(a))
                d2, r2 = d2 + sq(a.astype(jnp.float32) - b.astype(jnp.float32)), r2 + sq(b)
            diff2, ref2 = diff2 + jnp.sum(d2), ref2 + jnp.sum(r2)
            worst = jnp.maximum(worst, jnp.max(jnp.where(r2 > 0, jnp.sqrt(d2 / jnp.where(r2 > 0, r2, 1.0)), 0.0)))
        return jnp.sqrt(norm2), jnp.sqrt(diff2 / ref2), worst

    return errors


def part_decode_vs_hf(ctx: PartContext) -> None:
    import generate as generate_bench

    batch, prompt, new = ctx.sizes.decode
    out = generate_bench.decode_vs_hf(
        batch, prompt, new, ctx.sizes.repeats, gpu=ctx.gpu, cfg=ctx.sizes.mid, roofline=False
    )
    ctx.note(setting=f"batch {batch}, {prompt}-token prompts, {new} new tokens, fp32", agreement=out["agreement"])
    for name, row in out["rows"].items():
        ctx.row(implementation=name, **row)


def part_train_vs_hf(ctx: PartContext) -> None:
    import train_step

    batch, seq, k = ctx.sizes.train
    times = train_step.bench_step(
        batch, seq, k, ctx.sizes.repeats, gpu=ctx.gpu, cfg=ctx.sizes.mid, remats=ctx.sizes.remats
    )
    best = min(t for name, t in times.items() if name.startswith("hf"))
    ctx.note(setting=f"batch {batch} x {seq}, K = {k}, fp32, AdamW")
    for name, t in times.items():
        ctx.row(implementation=name, s_per_step=t, tokens_per_s=batch * seq / t, vs_best_hf=best / t)


def _full_size_step(ctx: PartContext, frozen: str, method: str) -> None:
    """One full-size RISE training step's time and peak memory: random weights made on the device
    (``frozen``: ``bfloat16`` or a quantized format of the default groups), then ``method``'s
    trainable state (``experts``: K fp32 masters; ``rise_lora`` / ``lora``: rank-r adapters)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import train_step
    from common import peak_bytes, pick_experts, random_params

    import rise_jax
    from rise_jax.models.quantized import check_backend
    from rise_jax.models.transformer import MoEModel, RuntimeOptions
    from rise_jax.training.methods import DenseLoRA, ExpertLoRA, FullExperts
    from rise_jax.training.options import TrainOptions
    from rise_jax.training.step import tree_bytes

    if frozen != "bfloat16":
        check_backend(frozen)
    cfg = rise_jax.config_from_hf_dict(ctx.sizes.full)
    opts = RuntimeOptions(dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, dispatch="auto", remat=ctx.sizes.remat)
    model = MoEModel(cfg, opts)
    t0 = time.perf_counter()
    base = random_params(model, frozen_dtype=None if frozen == "bfloat16" else frozen)
    jax.block_until_ready(base)
    gib = lambda b: None if b is None else b / GIB  # noqa: E731
    ctx.note(
        frozen=frozen,
        method=method,
        weights_gib=tree_bytes(base) / GIB,
        weights_s=time.perf_counter() - t0,
        peak_after_weights_gib=gib(peak_bytes()),
    )
    ctx.check()
    experts = pick_experts(cfg.num_moe_layers, cfg.num_experts, ctx.sizes.k)
    r = ctx.sizes.lora_rank
    if method == "experts":
        trainable = FullExperts.init(base, cfg, experts)
    elif method == "rise_lora":
        trainable = ExpertLoRA.init(cfg, experts, r, float(r))
    else:
        trainable = DenseLoRA.init(base, [TrainOptions.lora_targets], r, float(r))
    batch, seq = ctx.sizes.step_tokens
    ids = jnp.asarray(np.random.RandomState(0).randint(0, cfg.vocab_size, (batch, seq)), jnp.int32)
    out = train_step.time_steps(model, base, trainable, ids, ctx.sizes.repeats)
    ctx.row(
        model=f"{ctx.sizes.full['model_type']}, {cfg.num_layers} layers x {cfg.num_experts} experts",
        frozen=frozen,
        method=method if method != "experts" else f"experts (K = {len(experts)})",
        rank=r if method != "experts" else None,
        **out,
        tokens_per_s=batch * seq / out["step_s"],
        peak_gib=gib(peak_bytes()),
    )


def part_continuous(ctx: PartContext) -> None:
    import jax
    import numpy as np
    from common import write_hf_qwen
    from generate import static_batches

    import rise_jax
    from rise_jax.evaluation.continuous import cache_columns, default_slots, generate_continuous

    n, lo, hi, new, stop_mod = ctx.sizes.generation
    cfg = ctx.sizes.mid
    dtype = "bfloat16" if jax.default_backend() == "gpu" else "float32"
    model, params = rise_jax.load_model(write_hf_qwen(cfg), dtype=dtype, progress=False)
    rng = np.random.RandomState(0)
    prompts = [rng.randint(1, cfg["vocab_size"], rng.randint(lo, hi + 1)).tolist() for _ in range(n)]
    stops = [i for i in range(1, cfg["vocab_size"]) if i % stop_mod == 0]
    # The slots generate_continuous uses by default: the memory bound, at most the prompts' power of two.
    slots = min(default_slots(model, cache_columns(hi, new, 32)[1]), 1 << (n - 1).bit_length())
    ctx.note(setting=f"{n} prompts of {lo}-{hi} tokens, up to {new} new, {len(stops)} stop ids, {dtype}", slots=slots)
    runs = {
        f"continuous ({slots} slots)": lambda: generate_continuous(
            model, params, prompts, max_new_tokens=new, stop_ids=stops, pad_id=0
        ),
        "static batches (8 rows)": lambda: static_batches(model, params, prompts, new, stops),
    }
    first = None
    for name, fn in runs.items():
        ctx.check()
        t0 = time.perf_counter()
        fn()  # compiles
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        tokens = fn()
        secs = time.perf_counter() - t0
        first = tokens if first is None else first
        count = sum(len(t) for t in tokens)
        ctx.row(
            engine=name,
            new_tokens=count,
            seconds=secs,
            new_tok_s=count / secs,
            first_run_s=cold,
            same_answers=f"{sum(a == b for a, b in zip(tokens, first, strict=True))}/{n}",
        )


PARTS: dict[str, tuple[Callable[[PartContext], None], float]] = {  # name -> (part, GPU budget in seconds)
    "env": (part_env, 10),
    "parity": (part_parity, 35),
    "grad_norms": (part_grad_norms, 110),
    "decode_vs_hf": (part_decode_vs_hf, 30),
    "train_vs_hf": (part_train_vs_hf, 30),
    "step_bfloat16": (lambda ctx: _full_size_step(ctx, "bfloat16", "experts"), 50),
    "step_int8": (lambda ctx: _full_size_step(ctx, "int8", "experts"), 50),
    "step_float8_e4m3fn": (lambda ctx: _full_size_step(ctx, "float8_e4m3fn", "experts"), 50),
    "rise_lora": (lambda ctx: _full_size_step(ctx, "bfloat16", "rise_lora"), 30),
    "lora": (lambda ctx: _full_size_step(ctx, "bfloat16", "lora"), 30),
    "continuous": (part_continuous, 45),
}
SMOKE_BUDGET_S = 120.0  # per part on the CPU: generous, a smoke run checks that every part runs


# --- running parts ---------------------------------------------------------------------------------


def write_json_atomic(path: str, obj: Any) -> None:
    """``obj`` as JSON at ``path`` via a temporary file and a rename. (Not rise_jax.io_utils': the
    parent of an isolated run must not start JAX, whose GPU client would reserve the device.)"""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=1, default=str)
        fh.write("\n")
    os.replace(tmp, path)


def run_in_process(
    name: str, part: Callable[[PartContext], None], budget: float, sizes: Sizes, gpu: bool, save: Callable
) -> dict[str, Any]:
    """Run one part here: status ``ok``, ``timed out`` (its rows so far kept) or ``error`` (the
    exception and the end of its traceback)."""
    record: dict[str, Any] = {"status": "running", "budget_s": budget, "rows": [], "notes": {}}
    t0 = time.monotonic()
    ctx = PartContext(name, sizes, t0 + budget, record, lambda: save(record), gpu)
    try:
        part(ctx)
        record["status"] = "ok"
    except TimeUp:
        record["status"] = "timed out"
    except Exception as err:  # noqa: BLE001 - one part's failure is reported, the suite goes on
        record["status"] = "error"
        record["error"] = f"{type(err).__name__}: {err}"[:2000]
        record["traceback"] = traceback.format_exc()[-3000:]
    record["seconds"] = time.monotonic() - t0
    save(record)
    return record


def run_isolated(name: str, budget: float, args: argparse.Namespace, workdir: str) -> dict[str, Any]:
    """Run one part in a child process (this script with ``--child``), killed ``GRACE_S`` after
    its budget; what it recorded before is kept."""
    out = os.path.join(workdir, f"part-{name}.json")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", name, "--child-out", out, "--budget", str(budget)]
    cmd += ["--smoke"] if args.smoke else []
    cmd += ["--grad-layers", str(args.grad_layers)] if args.grad_layers else []
    env = dict(os.environ)
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")  # the full-size steps need the whole device
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)  # its own group: killed with its children
    killed = False
    try:
        code = proc.wait(timeout=budget + GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        code, killed = proc.wait(), True
    except BaseException:  # interrupted (Ctrl-C, SIGTERM): the part must not outlive the suite on the device
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    record = {"status": "running", "budget_s": budget, "rows": [], "notes": {}}
    if os.path.isfile(out):
        with open(out, encoding="utf-8") as fh:
            record = json.load(fh)
    if killed:
        record["status"] = "timed out"
        record["error"] = f"killed {GRACE_S:.0f} s past its budget (a compile or step in flight)"
    elif record["status"] == "running":  # ended without reporting: a crash
        record["status"] = "error"
        record["error"] = f"the part's process exited with status {code} before reporting"
    record["seconds"] = time.monotonic() - t0
    return record


def markdown(doc: dict[str, Any]) -> str:
    """The run as Markdown: a heading with the device, one line per part's status, then each
    part's notes and rows as a table (columns in first-seen order)."""
    env = doc["parts"].get("env", {}).get("notes", {})
    where = env.get("cpu") or env.get("device", "unknown device")
    lines = [
        f"### `{doc['command']}` ({doc['started']})",
        "",
        f"{where}; backend {env.get('backend', '?')}, jax {env.get('jax', '?')}, torch {env.get('torch', '?')}, "
        f"transformers {env.get('transformers', '?')}{' — SMOKE RUN (tiny sizes)' if doc['smoke'] else ''}.",
        "",
        "| part | status | seconds | budget |",
        "|---|---|---:|---:|",
    ]
    for name, rec in doc["parts"].items():
        lines.append(f"| {name} | {rec['status']} | {rec.get('seconds', 0):.0f} | {rec['budget_s']:.0f} |")
    for name, rec in doc["parts"].items():
        if name == "env":
            continue
        lines += ["", f"#### {name} ({rec['status']})", ""]
        notes = "; ".join(f"{k}: {_fmt(v)}" for k, v in rec.get("notes", {}).items())
        if notes:
            lines += [notes, ""]
        if rec.get("error"):
            lines += [f"Error: `{rec['error'].splitlines()[0][:300]}`", ""]
        rows = rec.get("rows", [])
        columns = list(dict.fromkeys(k for row in rows for k in row))
        if rows:
            lines.append("| " + " | ".join(columns) + " |")
            lines.append("|" + "---|" * len(columns))
            lines += ["| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    return str(value)


def run_suite(args: argparse.Namespace) -> dict[str, Any]:
    names = [n for n in PARTS if (not args.only or n in args.only) and n not in args.skip]
    sizes = SMOKE_SIZES if args.smoke else GPU_SIZES
    if args.grad_layers:
        sizes = dataclasses.replace(sizes, grad_layers=args.grad_layers)
    os.makedirs(args.out, exist_ok=True)
    json_path, md_path = os.path.join(args.out, "gpu_suite.json"), os.path.join(args.out, "gpu_suite.md")
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python bench/gpu_suite.py" + "".join(f" {a}" for a in args.argv)
    doc: dict[str, Any] = {"command": command, "started": started, "smoke": args.smoke, "parts": {}}
    budgets = {n: SMOKE_BUDGET_S if args.smoke else PARTS[n][1] * args.budget_scale for n in names}
    print(f"gpu_suite: parts {', '.join(names)}; budgets sum to {sum(budgets.values()):.0f} s", flush=True)

    def save(name: str, record: dict[str, Any]) -> None:
        doc["parts"][name] = record
        write_json_atomic(json_path, doc)

    with tempfile.TemporaryDirectory() as workdir:
        for name in names:
            print(f"\n=== {name} (budget {budgets[name]:.0f} s)", flush=True)
            if args.in_process:
                gpu = not args.smoke and _jax_backend() == "gpu"
                rec = run_in_process(
                    name, PARTS[name][0], budgets[name], sizes, gpu, lambda r, name=name: save(name, r)
                )
            else:
                rec = run_isolated(name, budgets[name], args, workdir)
                save(name, rec)
            print(f"=== {name}: {rec['status']} after {rec['seconds']:.1f} s", flush=True)
            if rec.get("error"):
                print(f"    {rec['error'].splitlines()[0][:300]}", flush=True)
    text = markdown(doc)
    with open(md_path, "w", encoding="utf-8") as fh:
        fh.write(text)
    print("\n" + text + f"\n(written: {json_path}, {md_path})")
    return doc


def _jax_backend() -> str:
    import jax

    return jax.default_backend()


def child(args: argparse.Namespace) -> None:
    """``--child NAME``: run one part in this process, its record written to ``--child-out``."""
    sizes = SMOKE_SIZES if args.smoke else GPU_SIZES
    if args.grad_layers:
        sizes = dataclasses.replace(sizes, grad_layers=args.grad_layers)
    gpu = not args.smoke and _jax_backend() == "gpu"
    run_in_process(
        args.child, PARTS[args.child][0], args.budget, sizes, gpu, lambda r: write_json_atomic(args.child_out, r)
    )


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu_suite_results", help="directory of gpu_suite.json / gpu_suite.md")
    ap.add_argument("--only", default="", help=f"comma list of parts ({', '.join(PARTS)})")
    ap.add_argument("--skip", default="", help="comma list of parts to leave out")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU, in this process (CI)")
    ap.add_argument("--in-process", action="store_true", help="run the parts in this process (default with --smoke)")
    ap.add_argument("--budget-scale", type=float, default=1.0, help="multiply every part's GPU budget")
    ap.add_argument("--grad-layers", type=int, default=0, help="layers of the full-width gradient model (0: 8)")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", default="", help=argparse.SUPPRESS)
    ap.add_argument("--budget", type=float, default=0.0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.argv = argv
    if args.child:
        child(args)
        return None
    args.only = [n for n in args.only.split(",") if n]
    args.skip = [n for n in args.skip.split(",") if n]
    unknown = [n for n in args.only + args.skip if n not in PARTS]
    if unknown:
        ap.error(f"unknown part(s) {unknown}; choose from {', '.join(PARTS)}")
    if args.smoke:
        args.in_process = True
        from common import set_threads

        set_threads(2)
    return run_suite(args)


if __name__ == "__main__":
    main()
