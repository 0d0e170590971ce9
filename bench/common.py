"""Shared benchmark helpers: the mid-size and full-size configs, timing by medians, matmul peaks,
the machine's description, random weights built on the device, the allocator's peak."""

from __future__ import annotations

import functools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

MID_QWEN: dict[str, Any] = {
    "model_type": "qwen3_moe",
    "architectures": ["Qwen3MoeForCausalLM"],
    "vocab_size": 4096,
    "hidden_size": 512,
    "intermediate_size": 1024,
    "moe_intermediate_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 64,
    "num_experts": 64,
    "num_experts_per_tok": 8,
    "norm_topk_prob": True,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
    "max_position_embeddings": 4096,
    "tie_word_embeddings": False,
}

QWEN3_30B_A3B: dict[str, Any] = {
    **MID_QWEN,
    "vocab_size": 151936,
    "hidden_size": 2048,
    "intermediate_size": 6144,
    "moe_intermediate_size": 768,
    "num_hidden_layers": 48,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "head_dim": 128,
    "num_experts": 128,
    "num_experts_per_tok": 8,
    "max_position_embeddings": 40960,
}

# Phi-3.5-MoE (microsoft/Phi-3.5-MoE-instruct config.json, the fields our parser reads).
PHI35_MOE: dict[str, Any] = {
    "model_type": "phimoe",
    "vocab_size": 32064,
    "hidden_size": 4096,
    "intermediate_size": 6400,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "num_local_experts": 16,
    "num_experts_per_tok": 2,
    "max_position_embeddings": 131072,
    "attention_bias": True,
    "lm_head_bias": True,
    "rope_theta": 10000.0,
}

# Mid-size configs of the companion study's other families (bench/forward.py --family).
MID_GPT_OSS: dict[str, Any] = {
    "model_type": "gpt_oss",
    "vocab_size": 4096,
    "hidden_size": 512,
    "intermediate_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 64,
    "num_local_experts": 32,
    "num_experts_per_tok": 4,
    "sliding_window": 128,
    "max_position_embeddings": 4096,
}

MID_OLMOE: dict[str, Any] = {
    "model_type": "olmoe",
    "vocab_size": 4096,
    "hidden_size": 512,
    "intermediate_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 8,
    "num_experts": 64,
    "num_experts_per_tok": 8,
    "max_position_embeddings": 4096,
}

# Full-size configs (hub config.json values) for the compile / memory check.
GPT_OSS_20B: dict[str, Any] = {
    **MID_GPT_OSS,
    "vocab_size": 201088,
    "hidden_size": 2880,
    "intermediate_size": 2880,
    "num_hidden_layers": 24,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "num_local_experts": 32,
    "max_position_embeddings": 131072,
    "rope_parameters": {
        "rope_type": "yarn",
        "rope_theta": 150000.0,
        "factor": 32.0,
        "beta_fast": 32.0,
        "beta_slow": 1.0,
        "truncate": False,
        "original_max_position_embeddings": 4096,
    },
}

OLMOE_1B_7B: dict[str, Any] = {
    **MID_OLMOE,
    "vocab_size": 50304,
    "hidden_size": 2048,
    "intermediate_size": 1024,
    "num_hidden_layers": 16,
    "num_attention_heads": 16,
    "num_key_value_heads": 16,
}

# DeepSeek-style full-size configs: the hubs' config.json as published (4.x spellings, DeepSeek's
# remote-code keys), kept once in tests/data/hub_configs (tests/test_deepseek_style.py parses them
# against transformers).
_HUB_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "data", "hub_configs")


def _hub_config(name: str) -> dict[str, Any]:
    with open(os.path.join(_HUB_CONFIGS, f"{name}.json"), encoding="utf-8") as fh:
        return json.load(fh)


DEEPSEEK_V2_LITE: dict[str, Any] = _hub_config("deepseek_v2_lite")
GLM45_AIR: dict[str, Any] = _hub_config("glm45_air")
# Gemma-4-26B-A4B's text model: the text_config of the published (multimodal) config.json.
GEMMA4_26B_A4B: dict[str, Any] = _hub_config("gemma4_26b_a4b")["text_config"]
# Qwen3-Next-80B-A3B (qwen3_next) and Qwen3.5-35B-A3B (the multimodal qwen3_5_moe config: its
# text_config is the model we load).
QWEN3_NEXT_80B_A3B: dict[str, Any] = _hub_config("qwen3_next_80b_a3b")
QWEN35_35B_A3B: dict[str, Any] = _hub_config("qwen3_5_35b_a3b")

# Mid-size qwen3_next (bench/forward.py --family qwen3_next): Qwen3-Next-80B-A3B's blocks at
# MID_QWEN's widths (H 512, 64 experts top-8, I 256, vocab 4096), 4 layers = the 3 Gated DeltaNet
# + 1 gated softmax-attention pattern once; linear attention 4 key heads / 8 value heads of 64
# (the hub's 1 : 2 ratio), softmax attention 8 / 2 heads of 64 with partial rotary 0.25, a shared
# expert of 256 behind its sigmoid gate.
MID_QWEN3_NEXT: dict[str, Any] = {
    "model_type": "qwen3_next",
    "vocab_size": 4096,
    "hidden_size": 512,
    "intermediate_size": 1024,
    "moe_intermediate_size": 256,
    "shared_expert_intermediate_size": 256,
    "num_hidden_layers": 4,
    "full_attention_interval": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "partial_rotary_factor": 0.25,
    "linear_num_key_heads": 4,
    "linear_num_value_heads": 8,
    "linear_key_head_dim": 64,
    "linear_value_head_dim": 64,
    "linear_conv_kernel_dim": 4,
    "num_experts": 64,
    "num_experts_per_tok": 8,
    "norm_topk_prob": True,
    "rope_theta": 10000000.0,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": False,
}

# Mid-size gemma4_text (bench/forward.py --family gemma4_text): Gemma-4-26B-A4B's blocks at
# MID_QWEN's widths (H 512, 64 experts, I 256, vocab 4096), 6 layers = the 5:1 sliding / full
# pattern once (window 128 < the 512 tokens timed), full layers twice as wide per head with one
# kv head and k = v, the dense MLP beside the experts.
MID_GEMMA4_TEXT: dict[str, Any] = {
    "model_type": "gemma4_text",
    "vocab_size": 4096,
    "hidden_size": 512,
    "intermediate_size": 384,
    "moe_intermediate_size": 256,
    "num_hidden_layers": 6,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 64,
    "global_head_dim": 128,
    "num_global_key_value_heads": 1,
    "attention_k_eq_v": True,
    "enable_moe_block": True,
    "num_experts": 64,
    "top_k_experts": 8,
    "hidden_size_per_layer_input": 0,
    "sliding_window": 128,
    "final_logit_softcapping": 30.0,
    "max_position_embeddings": 4096,
}

# Mid-size DeepSeek-style configs (bench/forward.py --family): the full-size models' blocks at
# MID_QWEN's widths (H 512, 4 layers, 64 experts, I 256, vocab 4096): 87.2 M / 85.7 M parameters
# (333 / 327 MiB in fp32).
# deepseek_v2: DeepSeek-V2-Lite's choices (MLA without q_lora_rank, YaRN, softmax greedy top-6,
# 2 shared experts, layer 0 dense); glm4_moe: GLM-4.5-Air's (GQA with q/k/v biases, partial rotary
# 0.5, sigmoid router with the correction bias, 1 shared expert, layer 0 dense) plus groups
# (n_group 4, topk_group 2) so the group-limited path is timed too.
MID_DEEPSEEK_V2: dict[str, Any] = {
    "model_type": "deepseek_v2",
    "vocab_size": 4096,
    "hidden_size": 512,
    "intermediate_size": 1024,
    "moe_intermediate_size": 256,
    "num_hidden_layers": 4,
    "first_k_dense_replace": 1,
    "num_attention_heads": 8,
    "num_key_value_heads": 8,
    "q_lora_rank": None,
    "kv_lora_rank": 128,
    "qk_nope_head_dim": 64,
    "qk_rope_head_dim": 32,
    "v_head_dim": 64,
    "n_routed_experts": 64,
    "num_experts_per_tok": 6,
    "n_shared_experts": 2,
    "topk_method": "greedy",
    "n_group": 1,
    "topk_group": 1,
    "norm_topk_prob": False,
    "routed_scaling_factor": 1.0,
    "rope_scaling": {
        "type": "yarn",
        "factor": 4.0,
        "beta_fast": 32,
        "beta_slow": 1,
        "mscale": 0.707,
        "mscale_all_dim": 0.707,
        "original_max_position_embeddings": 1024,
    },
    "rope_theta": 10000.0,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": False,
}

MID_GLM4_MOE: dict[str, Any] = {
    "model_type": "glm4_moe",
    "vocab_size": 4096,
    "hidden_size": 512,
    "intermediate_size": 1024,
    "moe_intermediate_size": 256,
    "num_hidden_layers": 4,
    "first_k_dense_replace": 1,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 64,
    "attention_bias": True,
    "partial_rotary_factor": 0.5,
    "use_qk_norm": False,
    "n_routed_experts": 64,
    "num_experts_per_tok": 8,
    "n_shared_experts": 1,
    "n_group": 4,
    "topk_group": 2,
    "norm_topk_prob": True,
    "routed_scaling_factor": 2.5,
    "rope_theta": 1000000.0,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": False,
}

# Llama-4-Scout's config.json (the multimodal checkpoint; its text model is what we load).
LLAMA4_SCOUT: dict[str, Any] = _hub_config("llama4_scout")

# Mid-size Llama-4 text model (bench/forward.py --family llama4_text): Scout's choices (every layer
# MoE, 16 experts top-1 with the score on the expert input, a shared expert of the experts' width,
# l2 q/k norm, every 4th layer NoPE with the query temperature, chunked attention, llama3 rope) at
# H 512, 4 layers, vocab 4096; chunks and floor_scale of 128 so both act within a 512-token row.
MID_LLAMA4_TEXT: dict[str, Any] = {
    "model_type": "llama4_text",
    "vocab_size": 4096,
    "hidden_size": 512,
    "intermediate_size": 512,
    "intermediate_size_mlp": 1024,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "num_local_experts": 16,
    "num_experts_per_tok": 1,
    "attention_chunk_size": 128,
    "floor_scale": 128,
    "attn_scale": 0.1,
    "rope_parameters": {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 16.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 1.0,
        "original_max_position_embeddings": 1024,
    },
    "max_position_embeddings": 16384,
    "tie_word_embeddings": False,
}

# Tiny configs (the tests' sizes: tests/hf_reference.py) for ``bench/gpu_suite.py --smoke``, which
# runs every part on the CPU in the test suite so the GPU script cannot rot.
TINY_QWEN: dict[str, Any] = {
    **MID_QWEN,
    "vocab_size": 128,
    "hidden_size": 32,
    "intermediate_size": 48,
    "moe_intermediate_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "num_experts": 8,
    "num_experts_per_tok": 2,
    "max_position_embeddings": 256,
}
TINY_DEEPSEEK_V2: dict[str, Any] = {
    **MID_DEEPSEEK_V2,
    "vocab_size": 128,
    "hidden_size": 32,
    "intermediate_size": 40,
    "moe_intermediate_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "kv_lora_rank": 12,
    "qk_nope_head_dim": 6,
    "qk_rope_head_dim": 4,
    "v_head_dim": 10,
    "n_routed_experts": 8,
    "num_experts_per_tok": 2,
    "n_shared_experts": 1,
    "rope_scaling": {**MID_DEEPSEEK_V2["rope_scaling"], "original_max_position_embeddings": 64},
    "max_position_embeddings": 256,
}

MID_CONFIGS = {
    "qwen3_moe": MID_QWEN,
    "gpt_oss": MID_GPT_OSS,
    "olmoe": MID_OLMOE,
    "deepseek_v2": MID_DEEPSEEK_V2,
    "glm4_moe": MID_GLM4_MOE,
    "llama4_text": MID_LLAMA4_TEXT,
    "gemma4_text": MID_GEMMA4_TEXT,
    "qwen3_next": MID_QWEN3_NEXT,
}
FULL_CONFIGS = {"qwen3_moe": ("Qwen3-30B-A3B", QWEN3_30B_A3B), "gpt_oss": ("GPT-OSS-20B", GPT_OSS_20B)}
FULL_CONFIGS["olmoe"] = ("OLMoE-1B-7B", OLMOE_1B_7B)
FULL_CONFIGS["deepseek_v2"] = ("DeepSeek-V2-Lite", DEEPSEEK_V2_LITE)
FULL_CONFIGS["glm4_moe"] = ("GLM-4.5-Air", GLM45_AIR)
FULL_CONFIGS["llama4_text"] = ("Llama-4-Scout-17B-16E", LLAMA4_SCOUT)
FULL_CONFIGS["gemma4_text"] = ("Gemma-4-26B-A4B", GEMMA4_26B_A4B)
FULL_CONFIGS["qwen3_next"] = ("Qwen3-Next-80B-A3B", QWEN3_NEXT_80B_A3B)


# The two HF settings every benchmark compares against: (label, attn_implementation, experts_implementation).
HF_SETTINGS = (("hf eager/eager", "eager", "eager"), ("hf sdpa/grouped_mm (default)", "sdpa", "grouped_mm"))


def write_hf_qwen(cfg: dict[str, Any], seed: int = 0) -> str:
    """A randomly initialised HF checkpoint of ``cfg`` (any family, by its ``model_type``; torch
    seed ``seed``) in a temp dir, written once per process (callers only read it)."""
    return _write_hf(json.dumps(cfg, sort_keys=True), seed)


@functools.cache
def _write_hf(cfg_json: str, seed: int) -> str:
    import tempfile

    import torch
    import transformers

    cfg = json.loads(cfg_json)
    torch.manual_seed(seed)
    kwargs = {k: v for k, v in cfg.items() if k not in ("model_type", "architectures")}
    hf_cfg = transformers.AutoConfig.for_model(cfg["model_type"], **kwargs)
    path = tempfile.mkdtemp()
    transformers.AutoModelForCausalLM.from_config(hf_cfg).save_pretrained(path)
    return path


def load_hf(path: str, attn: str, experts: str):
    """The HF model from ``path`` in fp32 with the given attention / experts implementations."""
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(
        path, dtype="float32", attn_implementation=attn, experts_implementation=experts
    )


def torch_sync(device: str) -> None:
    """Wait for queued CUDA work, so host timers measure it (no-op on CPU)."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def device_label(gpu: bool) -> str:
    """What the run timed on: the GPU's name, or the CPU thread count."""
    if not gpu:
        return f"CPU, 2 threads: {cpu_line()}"
    import jax
    import torch

    return (
        f"{torch.cuda.get_device_name()} (torch) / {jax.devices()[0].device_kind} (jax), fp32 matmuls at full precision"
    )


def use_gpu(gpu: bool) -> str:
    """The torch device for ``--gpu``; JAX then runs on its default (GPU) backend with fp32 matmuls at
    full precision (no TF32), as torch's default, so both sides do the same arithmetic."""
    if not gpu:
        return "cpu"
    import jax

    if jax.default_backend() != "gpu":
        raise SystemExit(f"--gpu: JAX sees no GPU (backend {jax.default_backend()!r})")
    jax.config.update("jax_default_matmul_precision", "highest")
    return "cuda"


def set_threads(n: int = 2) -> None:
    os.environ.setdefault("XLA_FLAGS", f"--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={n}")
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass


def median_time(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def forward_flops(cfg: dict[str, Any], batch: int, seq: int) -> float:
    """Model FLOPs of one forward (multiply-add = 2), full T x T attention as computed (any family's
    HF config dict; read through rise_jax's parser, so key spellings do not matter). Gated DeltaNet
    layers count their projections, the convolution and the recurrence per token (three
    ``Dk x Dv`` products per value head: ``Sᵀk``, the rank-1 update, ``Sᵀq``), not the chunked
    form's extra intra-chunk work."""
    import rise_jax

    m = rise_jax.config_from_hf_dict(cfg)
    h, n_layers, n = m.hidden_size, m.num_layers, m.num_heads
    if m.full_attention is not None:  # Gemma-4: each layer's own attention shape, + the dense MLP
        sliding = m.sliding_layers or (False,) * n_layers
        per_tok = 0
        for s in sliding:
            a = m.attention_config(s)
            qd, kvd = n * a.head_dim, a.num_kv_heads * a.head_dim
            per_tok += 2 * h * (2 * qd + (1 if a.k_eq_v else 2) * kvd) + 2 * 2 * seq * qd
            per_tok += 2 * h * m.num_experts + 2 * 3 * h * (m.moe_intermediate_size * m.top_k + m.intermediate_size)
        return batch * seq * (per_tok + 2 * h * m.vocab_size)
    if m.attention == "mla":  # DeepSeek's MLA, computed as transformers does (latent expanded by kv_b)
        dn, dr, dv, r = m.qk_nope_head_dim, m.head_dim, m.v_head_dim, m.kv_lora_rank
        q = h * n * (dn + dr) if m.q_lora_rank is None else h * m.q_lora_rank + m.q_lora_rank * n * (dn + dr)
        attn = 2 * (q + h * (r + dr) + r * n * (dn + dv) + n * dv * h)  # q, kv_a, kv_b, o projections
        attn += 2 * seq * n * (dn + dr + dv)  # scores + weighted values
    else:
        qd, kvd = n * m.head_dim, m.num_kv_heads * m.head_dim
        attn = 2 * h * ((3 if m.attn_output_gate else 2) * qd + 2 * kvd)  # q (+ its gate), k, v, o
        attn += 2 * 2 * seq * qd  # scores + weighted values
    n_linear = sum(m.is_linear_layer)
    if n_linear:  # Gated DeltaNet: its projections + the delta rule (S^T q, S^T k, the k u^T update)
        lin = m.linear
        proj = 2 * h * (lin.conv_dim + lin.value_dim + 2 * lin.num_v_heads) + 2 * lin.value_dim * h
        rule = 3 * 2 * lin.num_v_heads * lin.k_head_dim * lin.v_head_dim
        linear = proj + rule + 2 * lin.conv_kernel * lin.conv_dim
        attn_total = (n_layers - n_linear) * attn + n_linear * linear
    else:
        attn_total = n_layers * attn
    moe = 2 * h * m.num_experts  # router
    moe += 2 * 3 * h * m.moe_intermediate_size * m.top_k  # routed experts
    moe += 2 * 3 * h * m.shared_expert_size  # shared experts (Qwen2-MoE, DeepSeek, GLM-4.5)
    dense = 2 * 3 * h * m.intermediate_size  # dense layers (mlp_only / first_k_dense_replace)
    n_moe = m.num_moe_layers
    per_seq_tok = attn_total + n_moe * moe + (n_layers - n_moe) * dense
    return batch * seq * (per_seq_tok + 2 * h * m.vocab_size)


def matmul_peaks(n: int = 2048) -> dict[str, float]:
    """GFLOP/s of one fp32 n x n matmul in XLA and in torch on this machine."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    a = jnp.asarray(np.random.rand(n, n).astype(np.float32))
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    t_xla = median_time(lambda: f(a).block_until_ready(), repeats=7)
    out = {"xla": 2 * n**3 / t_xla / 1e9}
    try:
        import torch

        ta = torch.rand(n, n)
        t_torch = median_time(lambda: ta @ ta, repeats=7)
        out["torch"] = 2 * n**3 / t_torch / 1e9
    except ImportError:
        pass
    return out


def read_bandwidth(mib: int = 512) -> dict[str, float]:
    """GB/s at which this machine reads memory: the sum of a ``mib``-MiB fp32 array (far larger
    than any cache) in XLA (its threads) and in torch; the decode roofline's denominator."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    n = mib * 1024 * 1024 // 4
    a = jnp.ones((n,), jnp.float32)
    f = jax.jit(jnp.sum)
    f(a).block_until_ready()
    out = {"xla": 4 * n / median_time(lambda: f(a).block_until_ready(), repeats=7) / 1e9}
    try:
        import torch

        ta = torch.from_numpy(np.ones(n, np.float32))
        out["torch"] = 4 * n / median_time(lambda: ta.sum(), repeats=7) / 1e9
    except ImportError:
        pass
    return out


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The vector / matrix extensions that decide a CPU's matmul peak (x86 and Arm flag names).
VECTOR_FLAGS = (
    "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16",
    "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "sve2",
)  # fmt: skip


def vector_extensions() -> list[str]:
    """Which of :data:`VECTOR_FLAGS` the CPU reports (``/proc/cpuinfo`` flags / Features)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    have = set(line.split(":", 1)[1].split())
                    return [f for f in VECTOR_FLAGS if f in have]
    except OSError:
        pass
    return []


def cpu_line() -> str:
    """The CPU model, its vector extensions and the logical CPU count: what CPU timings depend on
    (torch's MKL and XLA reach different matmul peaks per extension, bench/RESULTS.md)."""
    ext = ", ".join(vector_extensions()) or "extensions unknown"
    return f"{cpu_model()} [{ext}], {os.cpu_count()} logical CPUs"


def environment() -> dict[str, Any]:
    """What a benchmark ran on: JAX's backend and device, library versions, the CPU model (and
    its thread count) when JAX runs on the CPU, the device's memory limit where it reports one."""
    import jax

    dev = jax.local_devices()[0]
    out: dict[str, Any] = {
        "backend": jax.default_backend(),
        "device": dev.device_kind,
        "devices": jax.local_device_count(),
        "jax": jax.__version__,
    }
    for lib in ("jaxlib", "flax", "torch", "transformers"):
        try:
            out[lib] = __import__(lib).__version__
        except ImportError:
            pass
    if out["backend"] == "cpu":
        out["cpu"] = cpu_line()
    stats = dev.memory_stats()
    if stats and "bytes_limit" in stats:
        out["memory_limit_gib"] = stats["bytes_limit"] / 1024**3
    return out


def peak_bytes() -> int | None:
    """The allocator's peak (``peak_bytes_in_use``) of this process on the first local device, or
    None where the backend keeps no statistics (XLA CPU)."""
    import jax

    stats = jax.local_devices()[0].memory_stats()
    return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def pick_experts(num_layers: int, num_experts: int, k: int, seed: int = 0) -> list[tuple[int, int]]:
    """``k`` distinct (MoE layer, expert) pairs drawn uniformly (seeded), sorted."""
    import numpy as np

    rng = np.random.default_rng(seed)
    flat = rng.choice(num_layers * num_experts, k, replace=False)
    return sorted((int(f) // num_experts, int(f) % num_experts) for f in flat)


def random_params(model: Any, seed: int = 0, frozen_dtype: str | None = None, groups: tuple[str, ...] | None = None):
    """Random params of ``model`` (its shapes and ``param_dtype``) made on the default device in one
    compiled program, so a full-size model needs no checkpoint and no more memory than its weights
    plus one layer: every stacked leaf (layers, or experts) is drawn one leading-axis slice at a
    time. Norm scales 1, biases 0, dense kernels lecun-normal (as ``model.init``), everything else
    (expert stacks, routers, embeddings, sinks) normal(0.02), HF's ``initializer_range``.

    ``frozen_dtype`` (``int8`` / ``float8_e4m3fn``): the kernels :func:`~rise_jax.models.quantized.
    is_quantizable` picks in ``groups`` (default: the default ``model.frozen_groups``) are held as
    :class:`~rise_jax.models.quantized.QuantizedArray`, each slice quantized as it is drawn (as the
    loader quantizes a checkpoint layer by layer), so the bf16 model never exists."""
    import jax
    import jax.numpy as jnp

    from rise_jax.models.quantized import DEFAULT_GROUPS, QuantizedArray, is_quantizable

    groups = DEFAULT_GROUPS if groups is None else groups
    abstract = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32)))["params"]
    leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract)
    specs = []
    for path, leaf in leaves:
        keys = tuple(str(getattr(k, "key", k)) for k in path)
        name = keys[-1]
        kind = "ones" if name == "scale" else "zeros" if "bias" in name else "lecun" if name == "kernel" else "normal"
        quant = frozen_dtype if frozen_dtype and is_quantizable(keys, groups) else None
        specs.append((tuple(leaf.shape), jnp.dtype(leaf.dtype).name, kind, quant))
    made = _random_leaves()(jax.random.key(seed, impl="rbg"), tuple(specs))
    out = [QuantizedArray(*m, jnp.dtype(s[1])) if s[3] else m for m, s in zip(made, specs, strict=True)]
    return jax.tree_util.tree_unflatten(treedef, out)


@functools.cache
def _random_leaves():
    """The jitted maker of :func:`random_params` (built on first use: this module imports no JAX at
    import time, so ``set_threads`` can still set XLA's flags; cached so a process compiles each
    model's once). Keys are ``rbg`` (XLA's RngBitGenerator): far less to compile than threefry's
    rounds for every leaf, and the values need no reproducibility across backends."""
    import jax
    import jax.numpy as jnp

    from rise_jax.models.quantized import quantize

    def one(key, shape, dtype, kind, quant):
        if kind in ("ones", "zeros"):
            return (jnp.ones if kind == "ones" else jnp.zeros)(shape, dtype)
        std = 1.0 / max(1, shape[-2]) ** 0.5 if kind == "lecun" and len(shape) >= 2 else 0.02
        w = jax.random.normal(key, shape, jnp.float32) * std
        return quantize(w, quant) if quant else w.astype(dtype)

    def leaf(key, shape, dtype, kind, quant):
        if len(shape) >= 3:  # a stack: one slice at a time bounds the working set
            return jax.lax.map(lambda k: one(k, shape[1:], dtype, kind, quant), jax.random.split(key, shape[0]))
        return one(key, shape, dtype, kind, quant)

    @functools.partial(jax.jit, static_argnums=(1,))
    def make(key, specs):
        return [leaf(k, *spec) for k, spec in zip(jax.random.split(key, len(specs)), specs, strict=True)]

    return make


TEST_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "data")
# Real text for the packing benchmarks (tests/data: in every checkout): FLoRes sentences, and
# XQuAD question + context (TyDiQA-GoldP's SQuAD format, as the RISE reference code replays QA text).
REAL_TEXTS = {
    "flores": dict(kind="flores", path="flores200", split="dev"),
    "qa": dict(kind="squad", path="xquad/xquad.{lang}.json", text_fields="question,context"),
}


def real_text_sequences(kind: str, languages: list[str], max_length: int, vocab: int) -> list[Any]:
    """Token sequences of real text (``REAL_TEXTS[kind]`` of ``languages`` from tests/data, the
    Qwen3 tokenizer, cut at ``max_length``): their lengths are what the packing benchmarks need,
    so the ids are folded into the benchmark model's ``vocab`` (``id % vocab``)."""
    sys.path.insert(0, os.path.dirname(TEST_DATA))
    from fixture_data import QWEN_TOKENIZER  # the tokenizer.json unpacked from its .xz

    import rise_jax
    from rise_jax.data.batching import tokenize_examples
    from rise_jax.data.sources import SourceSpec, load_examples

    src = dict(REAL_TEXTS[kind])
    src["path"] = os.path.join(TEST_DATA, src["path"])
    spec = SourceSpec(**src)
    tok = rise_jax.load_tokenizer(QWEN_TOKENIZER)
    out = []
    for lang in languages:
        out += [s % vocab for s in tokenize_examples(lang, load_examples(spec, lang), tok, max_length).sequences]
    return out
