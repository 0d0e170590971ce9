"""Decode throughput of rise_jax vs HF ``generate`` on the mid-size Qwen3-MoE config.

    python bench/generate.py            # batch 8, 128-token prompts, 64 new tokens, fp32, 2 threads
    python bench/generate.py --quick    # batch 2, 32-token prompts, 8 new tokens
    python bench/generate.py --gpu      # HF on CUDA, JAX on its GPU backend (both fp32, no TF32)
    python bench/generate.py --vllm [--languages en,bn --max-samples 0 --max-new 256]
        # vLLM's CPU build (RISE_JAX_VLLM_PYTHON, default /tmp/rise_jax-vllm/bin/python) against
        # our continuous batching and our static batches, on MGSM prompts (../shared/data/mgsm)

Both decode greedily with a KV cache, no stop token (every row generates all new tokens), so the
work is identical; the script checks the generated tokens agree. Prints new tokens/s of each
and the ratio against HF's fastest setting in the same run (medians of ``--repeats`` runs), end to
end (prefill included, as ``generate`` is called) and split into prefill (+ first token) and the
per-step decode time after it. On the CPU it then prints the decode roofline: the bytes a step
must read at the least (the weights it uses, each used expert once, the KV cache so far) over the
machine's read bandwidth (``common.read_bandwidth``), and each implementation's share of it.

``--vllm``: the mid-size model is exported by rise_jax (``export_model``) and both engines read
that export. Prompts are the MGSM questions of ``--languages`` in Qwen3's chat template (the
real tokenizer under ``../shared/data/tokenizers/qwen3``), token ids taken modulo the mid-size
vocabulary (random weights: only the lengths matter). A random model has no end of answer, so
the ids divisible by ``--stop-mod`` are stop tokens (vLLM's ``stop_token_ids``, ours
``stop_ids``): answers end at varied lengths, as real ones do, which is what continuous
batching is for. Prints new tokens/s of vLLM, of our continuous batching and of our static
batches (8 rows, sorted by length; today's ``generate_text``), the ratios, and how many
answers are identical token for token. Our runs are timed warm (a first run compiles).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    HF_SETTINGS,
    MID_QWEN,
    device_label,
    load_hf,
    median_time,
    read_bandwidth,
    set_threads,
    torch_sync,
    use_gpu,
    write_hf_qwen,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if sys.argv[1:2] != ["--vllm-worker"]:  # vLLM's own Python sets its threads
    set_threads(2)

import numpy as np  # noqa: E402


def vllm_worker(export_dir: str, request_path: str, result_path: str) -> None:
    """Runs under vLLM's Python: decode the request's prompts greedily, time ``generate``."""
    import json

    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    with open(request_path, encoding="utf-8") as fh:
        req = json.load(fh)
    t0 = time.perf_counter()
    llm = LLM(
        model=export_dir,
        dtype="float32",
        enforce_eager=req["eager"],
        skip_tokenizer_init=True,
        max_model_len=req["max_model_len"],
        gpu_memory_utilization=0.1,
        seed=0,
    )
    load_s = time.perf_counter() - t0
    params = SamplingParams(
        temperature=0.0,
        max_tokens=req["max_new_tokens"],
        stop_token_ids=req["stop_ids"],
        ignore_eos=True,
        detokenize=False,
    )
    prompts = [TokensPrompt(prompt_token_ids=p) for p in req["prompts"]]
    t0 = time.perf_counter()
    llm.generate(prompts[:4], params, use_tqdm=False)  # warm-up
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - t0
    result = {
        "tokens": [list(o.outputs[0].token_ids) for o in outputs],
        "seconds": seconds,
        "load_s": load_s,
        "warmup_s": warm_s,
        "version": __import__("vllm").__version__,
    }
    with open(result_path, "w", encoding="utf-8") as fh:
        json.dump(result, fh)


def mgsm_prompts(path: str, languages: list[str], max_samples: int, vocab: int) -> list[list[int]]:
    """MGSM questions in Qwen3's chat template (thinking off), ids modulo ``vocab``."""
    import transformers

    from rise_jax.data.sources import SourceSpec, load_examples

    tok_dir = os.path.join(os.path.dirname(path.rstrip("/")), "tokenizers", "qwen3")
    tok = transformers.AutoTokenizer.from_pretrained(tok_dir)
    out = []
    for lang in languages:
        examples = load_examples(SourceSpec("mgsm", path), lang)
        for ex in examples[: max_samples or None]:
            text = tok.apply_chat_template(
                [{"role": "user", "content": ex.question}],
                tokenize=False,
                add_generation_prompt=True,
                enable_thinking=False,
            )
            out.append([t % vocab for t in tok(text, add_special_tokens=False)["input_ids"]])
    return out


def static_batches(model, params, prompts: list[list[int]], new: int, stops: list[int], batch: int = 8):
    """Each prompt's new tokens from static batches of ``batch`` rows sorted by length (today's
    ``generate_text``: a batch decodes until its last row stops), in the prompts' order."""
    from rise_jax.evaluation.generate import generate, left_pad

    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: dict[int, list[int]] = {}
    for start in range(0, len(order), batch):
        chunk = order[start : start + batch]
        rows = [prompts[i] for i in chunk] + [prompts[chunk[0]]] * (batch - len(chunk))
        ids, mask = left_pad(rows, 0, 32)
        got = generate(model, params, ids, mask, max_new_tokens=new, stop_ids=stops, pad_id=0)
        out.update(zip(chunk, got, strict=False))
    return [out[i] for i in range(len(prompts))]


def vllm_comparison(args: argparse.Namespace) -> None:
    """vLLM's CPU build against our continuous and static batching on one exported model."""
    import json
    import subprocess
    import tempfile

    import rise_jax
    from rise_jax.evaluation.continuous import cache_columns, default_slots, generate_continuous

    python = os.environ.get("RISE_JAX_VLLM_PYTHON", "/tmp/rise_jax-vllm/bin/python")
    if not os.path.isfile(python):
        sys.exit(f"no vLLM Python at {python} (README: the vLLM check builds one); set RISE_JAX_VLLM_PYTHON")
    cfg = dict(MID_QWEN)
    src = write_hf_qwen(cfg)
    model, params = rise_jax.load_model(src, dtype="float32", progress=False)
    export = os.path.join(tempfile.mkdtemp(), "export")
    rise_jax.export_model(model, params, export, source_dir=src)
    model, params = rise_jax.load_model(export, dtype="float32", progress=False)
    prompts = mgsm_prompts(args.mgsm, args.languages.split(","), args.max_samples, cfg["vocab_size"])
    stops = [i for i in range(1, cfg["vocab_size"]) if i % args.stop_mod == 0]
    new = args.max_new
    lengths = sorted(len(p) for p in prompts)
    print(
        f"{len(prompts)} prompts ({args.languages}, MGSM), lengths {lengths[0]}-{lengths[-1]} "
        f"(median {lengths[len(lengths) // 2]}), up to {new} new tokens, {len(stops)} stop ids"
    )

    with tempfile.TemporaryDirectory() as tmp:
        req = os.path.join(tmp, "req.json")
        res = os.path.join(tmp, "res.json")
        with open(req, "w", encoding="utf-8") as fh:
            json.dump(
                dict(
                    prompts=prompts,
                    max_new_tokens=new,
                    stop_ids=stops,
                    max_model_len=lengths[-1] + new + 8,
                    eager=args.vllm_eager,
                ),
                fh,
            )
        env = dict(os.environ, OMP_NUM_THREADS="2")
        subprocess.run([python, os.path.abspath(__file__), "--vllm-worker", export, req, res], check=True, env=env)
        with open(res, encoding="utf-8") as fh:
            vllm_out = json.load(fh)
    print(
        f"vLLM {vllm_out['version']}: load {vllm_out['load_s']:.1f} s, warm-up {vllm_out['warmup_s']:.1f} s, "
        f"generate {vllm_out['seconds']:.1f} s"
    )

    def ours_continuous(slots: int, refill: int):
        return generate_continuous(
            model, params, prompts, max_new_tokens=new, stop_ids=stops, pad_id=0, slots=slots, refill=refill
        )

    def ours_static():
        return static_batches(model, params, prompts, new, stops)

    timed: dict[str, tuple[float, list[list[int]]]] = {}
    auto = default_slots(model, cache_columns(lengths[-1], new, 32)[1])
    runs = []
    for slots in (int(n) or auto for n in args.slots.split(",")):
        for refill in (int(r) or max(1, slots // 4) for r in args.refill.split(",")):
            name = f"rise_jax continuous {slots}/{refill}"
            runs.append((name, functools.partial(ours_continuous, slots, refill)))
    for name, fn in [*runs, ("rise_jax static (8 rows)", ours_static)]:
        t0 = time.perf_counter()
        fn()
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        toks = fn()
        timed[name] = (time.perf_counter() - t0, toks)
        print(f"{name}: first run (compiles) {cold:.1f} s, timed run {timed[name][0]:.1f} s")
    timed["vllm"] = (vllm_out["seconds"], vllm_out["tokens"])

    stop_set = set(stops)

    def strip(row):
        return row[:-1] if row and row[-1] in stop_set else row

    first = runs[0][0]
    ref = [strip(r) for r in timed[first][1]]
    n_new = sum(len(r) for r in timed[first][1])
    print(
        f"\nmid-size Qwen3-MoE (exported), greedy, fp32, CPU: {len(prompts)} prompts, {n_new} new tokens "
        f"(default slots {auto}); continuous s/r: s slots, refilled once r are free"
    )
    answer = sorted(len(r) for r in timed[first][1])
    print(
        f"answer lengths: min {answer[0]}, quartiles {answer[len(answer) // 4]} / {answer[len(answer) // 2]} / "
        f"{answer[3 * len(answer) // 4]}, max {answer[-1]}"
    )
    print(
        f"{'engine':32s} {'new tokens':>10s} {'seconds':>8s} {'new tok/s':>10s} {'vs vLLM':>8s} {'same answers':>13s}"
    )
    base = sum(len(r) for r in timed["vllm"][1]) / timed["vllm"][0]
    for name, (secs, toks) in timed.items():
        count = sum(len(r) for r in toks)
        same = sum(strip(a) == b for a, b in zip(toks, ref, strict=True))
        print(
            f"{name:32s} {count:10d} {secs:8.1f} {count / secs:10.1f} {count / secs / base:7.2f}x {same:6d}/{len(ref)}"
        )
    agree = [
        1.0 if strip(a) == b else sum(x == y for x, y in zip(strip(a), b, strict=False)) / max(len(strip(a)), len(b))
        for a, b in zip(timed["vllm"][1], ref, strict=True)
    ]
    print(f"vLLM vs {first}: token agreement {np.mean(agree):.3f} (positions equal / longer answer)")


def decode_step_bytes(model, params, ids: np.ndarray, mask: np.ndarray, new_tokens: np.ndarray) -> dict[str, float]:
    """The bytes one greedy decode step must read at the least, averaged over steps 1..new-1 of
    a run that produced ``new_tokens`` ``[B, new]`` from the prompts ``ids``: every weight but the
    experts and the embedding table; the embedding rows of the batch's tokens; in each MoE layer
    the experts the batch's tokens use, each once (from the routing of those tokens, replayed in
    one forward); and the keys and values cached so far (fp32 K and V of every layer)."""
    import jax
    import jax.numpy as jnp

    import rise_jax

    cfg = model.cfg
    b, p = ids.shape
    fed = np.concatenate([ids, new_tokens[:, :-1]], axis=1)  # step s feeds new token s-1
    m = np.concatenate([mask, np.ones((b, new_tokens.shape[1] - 1), mask.dtype)], axis=1)
    pos = np.maximum(np.cumsum(m, axis=1) - 1, 0)
    out = rise_jax.forward(
        model, params, jnp.asarray(fed), jnp.asarray(m), jnp.asarray(pos), return_routing=True, skip_lm_head=True,
        inference=True,
    )  # fmt: skip
    idx = np.asarray(out.routing.topk_indices)[:, :, p:]  # [L, B, steps, k]: the decode steps' tokens
    used = np.mean(
        [sum(len(np.unique(idx[layer, :, s])) for layer in range(idx.shape[0])) for s in range(idx.shape[2])]
    )
    expert_bytes = other = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        keys = [getattr(k, "key", "") for k in path]
        if "experts" in keys:
            expert_bytes += leaf.nbytes / (leaf.shape[0] * leaf.shape[1])  # one [layer, expert]'s share
        elif "embed_tokens" not in keys:
            other += leaf.nbytes
    expert_bytes /= len([r for r in params if "moe" in params[r]])  # summed over runs: one layer's expert
    other += b * cfg.hidden_size * 4
    steps = np.arange(1, new_tokens.shape[1])
    kv = cfg.num_layers * 2 * b * cfg.num_kv_heads * cfg.head_dim * 4 * float(np.mean(p + steps))
    return {"experts": used * expert_bytes, "other_weights": float(other), "kv_cache": kv,
            "experts_used_per_step": float(used)}  # fmt: skip


def decode_vs_hf(
    batch: int,
    prompt: int,
    new: int,
    repeats: int,
    gpu: bool = False,
    cfg: dict | None = None,
    roofline: bool = True,
) -> dict[str, Any]:
    """Greedy decoding of ours against HF ``generate`` (both settings) on ``cfg`` (default the
    mid-size Qwen3-MoE): ``batch`` random prompts of ``prompt`` tokens, ``new`` new tokens each, no
    stop token. Prints the table; returns per implementation new tokens/s end to end, prefill
    seconds, ms per decode step and the ratios against HF's best, and the token agreement. On the
    CPU with ``roofline``, also the bytes a step must read (:func:`decode_step_bytes`), the
    machine's read bandwidth and each implementation's share of that floor."""
    dev = use_gpu(gpu)
    import torch

    import rise_jax
    from rise_jax.evaluation.generate import generate

    cfg = dict(MID_QWEN if cfg is None else cfg)
    tmp = write_hf_qwen(cfg)
    ids = np.random.RandomState(0).randint(1, cfg["vocab_size"], (batch, prompt)).astype(np.int32)
    mask = np.ones_like(ids)

    results: dict[str, float] = {}  # end to end: prefill + all new tokens
    prefill: dict[str, float] = {}  # prefill + the first new token only
    outputs: dict[str, np.ndarray] = {}
    t_ids = torch.tensor(ids, dtype=torch.long, device=dev)
    t_mask = torch.tensor(mask, dtype=torch.long, device=dev)
    for name, attn, experts in HF_SETTINGS:
        m = load_hf(tmp, attn, experts).eval().to(dev)

        def hf_run(n=new, m=m):
            with torch.no_grad():
                out = m.generate(
                    input_ids=t_ids,
                    attention_mask=t_mask,
                    max_new_tokens=n,
                    min_new_tokens=n,
                    do_sample=False,
                    pad_token_id=0,
                    eos_token_id=None,
                )
            torch_sync(dev)
            return out

        outputs[name] = hf_run()[:, prompt:].cpu().numpy()
        results[name] = median_time(hf_run, repeats=repeats, warmup=0)
        prefill[name] = median_time(lambda: hf_run(1), repeats=repeats, warmup=0)
        del m

    model, params = rise_jax.load_model(tmp, dtype="float32", progress=False)

    def ours(n=new):
        return generate(model, params, ids, mask, max_new_tokens=n, stop_ids=[], pad_id=0)

    t0 = time.perf_counter()
    outputs["rise_jax"] = np.asarray(ours())
    ours(1)
    print(f"(rise_jax first calls incl. compile: {time.perf_counter() - t0:.1f} s)")
    results["rise_jax (dispatch auto)"] = median_time(ours, repeats=repeats, warmup=0)
    prefill["rise_jax (dispatch auto)"] = median_time(lambda: ours(1), repeats=repeats, warmup=0)

    agree = {k: float(np.mean(v == outputs["rise_jax"])) for k, v in outputs.items() if k != "rise_jax"}
    best_hf = min(v for k, v in results.items() if k.startswith("hf"))
    # Decode only: the time of the new-1 tokens after the first, per token (prefill subtracted).
    step = {k: (results[k] - prefill[k]) / (new - 1) for k in results}
    best_step = min(v for k, v in step.items() if k.startswith("hf"))
    best_pre = min(v for k, v in prefill.items() if k.startswith("hf"))
    print(
        f"\nmid-size Qwen3-MoE greedy decoding: batch {batch}, {prompt}-token prompts, {new} new tokens, fp32, "
        + device_label(gpu)
    )
    print(
        f"{'implementation':34s} {'new tok/s':>10s} {'vs best HF':>10s} {'prefill s':>10s} {'vs HF':>6s}"
        f" {'ms/step':>8s} {'decode tok/s':>12s} {'vs HF':>6s}"
    )
    for name, t in results.items():
        print(
            f"{name:34s} {batch * new / t:10.1f} {best_hf / t:9.2f}x {prefill[name]:10.3f} {best_pre / prefill[name]:5.2f}x"
            f" {1e3 * step[name]:8.1f} {batch / step[name]:12.1f} {best_step / step[name]:5.2f}x"
        )
    print("token agreement with rise_jax: " + ", ".join(f"{k} {v:.3f}" for k, v in agree.items()))
    roof = None
    if roofline and not gpu:  # the read-bandwidth roofline of a decode step on this CPU
        need = decode_step_bytes(model, params, ids, mask, outputs["rise_jax"])
        bw = read_bandwidth()
        total = need["experts"] + need["other_weights"] + need["kv_cache"]
        floor_ms = 1e3 * total / (max(bw.values()) * 1e9)
        print(
            f"decode roofline: {total / 1e6:.1f} MB read per step (experts {need['experts'] / 1e6:.1f} MB: "
            f"{need['experts_used_per_step']:.1f} expert-layers used of {model.cfg.num_moe_layers * model.cfg.num_experts}; "
            f"other weights {need['other_weights'] / 1e6:.1f} MB; KV cache {need['kv_cache'] / 1e6:.1f} MB) at "
            + ", ".join(f"{k} {v:.1f}" for k, v in bw.items())
            + f" GB/s read bandwidth = {floor_ms:.1f} ms per step at best"
        )
        for name in results:
            print(
                f"  {name:34s} {1e3 * step[name]:6.1f} ms/step = {floor_ms / (1e3 * step[name]):5.1%} of the roofline"
            )
        roof = {"bytes_per_step": need, "read_gb_s": bw, "floor_ms": floor_ms}

    table = {
        name: {
            "new_tok_s": batch * new / t,
            "vs_best_hf": best_hf / t,
            "prefill_s": prefill[name],
            "ms_per_step": 1e3 * step[name],
            "decode_vs_hf": best_step / step[name],
            **({} if roof is None else {"roofline_share": roof["floor_ms"] / (1e3 * step[name])}),
        }
        for name, t in results.items()
    }
    return {"rows": table, "agreement": agree, "roofline": roof}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--vllm-worker":
        vllm_worker(*sys.argv[2:5])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--gpu", action="store_true", help="HF on CUDA and JAX on its GPU backend")
    ap.add_argument("--vllm", action="store_true", help="vLLM's CPU build vs our continuous / static batching")
    ap.add_argument("--mgsm", default=os.path.join(ROOT, "..", "shared", "data", "mgsm"), help="--vllm: MGSM TSVs")
    ap.add_argument("--languages", default="en,bn", help="--vllm: MGSM languages")
    ap.add_argument("--max-samples", type=int, default=0, help="--vllm: problems per language (0 = all)")
    ap.add_argument("--max-new", type=int, default=256, help="--vllm: new tokens at most")
    ap.add_argument("--stop-mod", type=int, default=64, help="--vllm: ids divisible by this are stop tokens")
    ap.add_argument("--slots", default="8,0", help="--vllm: our decode slots to time (comma list; 0 = default_slots)")
    ap.add_argument("--refill", default="0", help="--vllm: refill thresholds to time (comma list; 0 = default)")
    ap.add_argument("--vllm-eager", action="store_true", help="--vllm: vLLM without torch.compile")
    args = ap.parse_args()
    if args.vllm:
        vllm_comparison(args)
        return
    batch, prompt, new = (2, 32, 8) if args.quick else (8, 128, 64)
    decode_vs_hf(batch, prompt, new, args.repeats, args.gpu)


if __name__ == "__main__":
    main()
