"""Tiny random HF models (the correctness oracle), built with transformers and ``save_pretrained``."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import transformers

QWEN_BASE: dict[str, Any] = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=48,
    moe_intermediate_size=16,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    num_experts=8,
    num_experts_per_tok=2,
    norm_topk_prob=True,
    max_position_embeddings=256,
)

PHI_BASE: dict[str, Any] = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=24,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    num_local_experts=6,
    num_experts_per_tok=2,
    max_position_embeddings=256,
)


OLMOE_BASE: dict[str, Any] = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=16,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    num_experts=8,
    num_experts_per_tok=2,
    max_position_embeddings=256,
    pad_token_id=0,
    eos_token_id=1,
)

QWEN2_BASE: dict[str, Any] = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=40,
    moe_intermediate_size=16,
    shared_expert_intermediate_size=24,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    num_experts=8,
    num_experts_per_tok=2,
    max_position_embeddings=256,
)

MIXTRAL_BASE: dict[str, Any] = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=24,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    num_local_experts=6,
    num_experts_per_tok=2,
    max_position_embeddings=256,
)

GPT_OSS_BASE: dict[str, Any] = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=16,
    head_dim=8,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    num_local_experts=6,
    num_experts_per_tok=2,
    sliding_window=4,
    swiglu_limit=0.05,  # clamps: the tiny model's pre-activations exceed it
    max_position_embeddings=256,
    rope_parameters=dict(
        rope_type="yarn",
        rope_theta=150000.0,
        factor=32.0,
        beta_fast=32.0,
        beta_slow=1.0,
        truncate=False,
        original_max_position_embeddings=16,
    ),
)

# DeepSeek-style models (deepseek_v2 / deepseek_v3 / glm4_moe): MLA widths all different, one
# leading dense layer, a shared expert; the router and rope variants are set per parity case.
DEEPSEEK_V2_BASE: dict[str, Any] = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=40,
    moe_intermediate_size=16,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=4,
    n_routed_experts=8,
    num_experts_per_tok=2,
    n_shared_experts=1,
    first_k_dense_replace=1,
    kv_lora_rank=12,
    q_lora_rank=None,
    qk_nope_head_dim=6,
    qk_rope_head_dim=4,
    v_head_dim=10,
    topk_method="greedy",
    max_position_embeddings=256,
)
DEEPSEEK_V3_BASE: dict[str, Any] = {
    **{k: v for k, v in DEEPSEEK_V2_BASE.items() if k != "topk_method"},
    "n_group": 4,
    "topk_group": 2,
    "routed_scaling_factor": 2.5,
}
GLM4_MOE_BASE: dict[str, Any] = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=40,
    moe_intermediate_size=16,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    n_routed_experts=8,
    num_experts_per_tok=2,
    n_shared_experts=1,
    first_k_dense_replace=1,
    n_group=1,
    topk_group=1,
    attention_bias=True,
    max_position_embeddings=256,
)

GLM4_MOE_LITE_BASE: dict[str, Any] = {
    **{k: v for k, v in DEEPSEEK_V3_BASE.items() if k != "first_k_dense_replace"},
    "num_hidden_layers": 4,
    "mlp_layer_types": ["dense", "sparse", "dense", "sparse"],  # MoE runs split by a dense layer
    "routed_scaling_factor": 1.8,
}

# Llama-4 text: layer 3 without rope (no_rope_layer_interval 4), chunks of 4 positions, a floor
# scale small enough that the NoPE layer's temperature changes within a test sequence.
LLAMA4_TEXT_BASE: dict[str, Any] = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=16,
    intermediate_size_mlp=40,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    num_local_experts=6,
    num_experts_per_tok=1,
    attention_chunk_size=4,
    floor_scale=3,
    attn_scale=0.5,
    max_position_embeddings=256,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)

# The published Llama-4 checkpoints' class (Llama4ForConditionalGeneration): the tiny text model
# above beside a one-layer vision tower.
LLAMA4_BASE: dict[str, Any] = dict(
    text_config=LLAMA4_TEXT_BASE,
    vision_config=dict(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        image_size=28,
        patch_size=14,
        vision_output_dim=16,
        projector_input_dim=16,
        projector_output_dim=16,
    ),
)

# Qwen3-Next: three Gated DeltaNet layers then one gated softmax-attention layer (the default
# layer_types), two key heads serving four value heads of a different width.
QWEN3_NEXT_BASE: dict[str, Any] = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=40,
    moe_intermediate_size=16,
    shared_expert_intermediate_size=24,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    num_experts=8,
    num_experts_per_tok=2,
    linear_num_key_heads=2,
    linear_num_value_heads=4,
    linear_key_head_dim=8,
    linear_value_head_dim=6,
    max_position_embeddings=256,
)

# Qwen3.5-MoE: the same blocks, Qwen3.5's layout (every layer MoE, four linear-attention input
# projections); the published checkpoint class adds a vision tower (one tiny block here).
QWEN3_5_MOE_TEXT_BASE: dict[str, Any] = {k: v for k, v in QWEN3_NEXT_BASE.items() if k not in ("intermediate_size",)}
QWEN3_5_MOE_BASE: dict[str, Any] = dict(
    text_config=QWEN3_5_MOE_TEXT_BASE,
    vision_config=dict(
        depth=1,
        hidden_size=16,
        intermediate_size=16,
        num_heads=2,
        out_hidden_size=32,
        num_position_embeddings=16,
        patch_size=4,
        temporal_patch_size=2,
    ),
)

# Gemma-4's MoE text model: sliding layers (head_dim 8, 2 kv heads) and full layers (global_head_dim
# 16, one kv head, k = v, proportional rope over a quarter of the head), the dense MLP beside the
# experts, logit soft-capping small enough to bend the tiny model's logits.
GEMMA4_TEXT_BASE: dict[str, Any] = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=40,
    moe_intermediate_size=16,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    global_head_dim=16,
    num_global_key_value_heads=1,
    attention_k_eq_v=True,
    enable_moe_block=True,
    num_experts=8,
    top_k_experts=2,
    hidden_size_per_layer_input=0,
    sliding_window=4,
    layer_types=["sliding_attention", "sliding_attention", "full_attention", "full_attention"],
    final_logit_softcapping=3.0,
    max_position_embeddings=256,
)

# The published Gemma-4 checkpoints' class (Gemma4ForConditionalGeneration): the tiny text model
# above beside a one-layer vision tower.
GEMMA4_BASE: dict[str, Any] = dict(
    text_config=GEMMA4_TEXT_BASE,
    vision_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32),
    audio_config=None,
)

FAMILIES: dict[str, tuple[Any, Any, dict[str, Any]]] = {
    "qwen3_moe": (transformers.Qwen3MoeConfig, transformers.Qwen3MoeForCausalLM, QWEN_BASE),
    "phimoe": (transformers.PhimoeConfig, transformers.PhimoeForCausalLM, PHI_BASE),
    "olmoe": (transformers.OlmoeConfig, transformers.OlmoeForCausalLM, OLMOE_BASE),
    "qwen2_moe": (transformers.Qwen2MoeConfig, transformers.Qwen2MoeForCausalLM, QWEN2_BASE),
    "mixtral": (transformers.MixtralConfig, transformers.MixtralForCausalLM, MIXTRAL_BASE),
    "gpt_oss": (transformers.GptOssConfig, transformers.GptOssForCausalLM, GPT_OSS_BASE),
    "deepseek_v2": (transformers.DeepseekV2Config, transformers.DeepseekV2ForCausalLM, DEEPSEEK_V2_BASE),
    "deepseek_v3": (transformers.DeepseekV3Config, transformers.DeepseekV3ForCausalLM, DEEPSEEK_V3_BASE),
    "glm4_moe": (transformers.Glm4MoeConfig, transformers.Glm4MoeForCausalLM, GLM4_MOE_BASE),
    "glm4_moe_lite": (transformers.Glm4MoeLiteConfig, transformers.Glm4MoeLiteForCausalLM, GLM4_MOE_LITE_BASE),
    "llama4_text": (transformers.Llama4TextConfig, transformers.Llama4ForCausalLM, LLAMA4_TEXT_BASE),
    "llama4": (transformers.Llama4Config, transformers.Llama4ForConditionalGeneration, LLAMA4_BASE),
    "gemma4_text": (transformers.Gemma4TextConfig, transformers.Gemma4ForCausalLM, GEMMA4_TEXT_BASE),
    "gemma4": (transformers.Gemma4Config, transformers.Gemma4ForConditionalGeneration, GEMMA4_BASE),
    "qwen3_next": (transformers.Qwen3NextConfig, transformers.Qwen3NextForCausalLM, QWEN3_NEXT_BASE),
    "qwen3_5_moe_text": (
        transformers.Qwen3_5MoeTextConfig,
        transformers.Qwen3_5MoeForCausalLM,
        QWEN3_5_MOE_TEXT_BASE,
    ),
    "qwen3_5_moe": (
        transformers.Qwen3_5MoeConfig,
        transformers.Qwen3_5MoeForConditionalGeneration,
        QWEN3_5_MOE_BASE,
    ),
}


def yarn(factor: float, original_max: int, mscale: float, mscale_all_dim: float) -> dict[str, Any]:
    """DeepSeek's YaRN rope parameters (``mscale`` / ``mscale_all_dim`` as its configs set them)."""
    return dict(
        rope_type="yarn",
        rope_theta=10000.0,
        factor=factor,
        original_max_position_embeddings=original_max,
        beta_fast=32.0,
        beta_slow=1.0,
        mscale=mscale,
        mscale_all_dim=mscale_all_dim,
    )


def longrope(head_dim: int, original_max: int) -> dict[str, Any]:
    half = head_dim // 2
    return dict(
        rope_type="longrope",
        rope_theta=10000.0,
        short_factor=[1.0 + 0.1 * i for i in range(half)],
        long_factor=[1.5 + 0.2 * i for i in range(half)],
        short_mscale=1.05,
        long_mscale=1.2,
        original_max_position_embeddings=original_max,
    )


def make_hf_model(family: str, seed: int = 0, **overrides) -> transformers.PreTrainedModel:
    torch.manual_seed(seed)
    config_cls, model_cls, base = FAMILIES[family]
    model = model_cls(config_cls(**{**base, **overrides}))
    # Random init leaves norms at 1/0 and biases at 0; perturb them so they are tested too
    # (GPT-OSS sinks and expert biases included).
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias") or name.endswith("sinks"):
                p.add_(0.1 * torch.randn_like(p))
            if family == "gpt_oss" and "experts" in name:
                p.mul_(10.0)  # pre-activations well past swiglu_limit, so the clamp is exercised
            if name.endswith("mlp.gate.weight") and family in FAMILIES and "n_routed_experts" in base:
                p.mul_(10.0)  # router scores spread out: no near-ties for fp32 round-off to flip
            if "linear_attn" in name and ("proj" in name or "conv1d" in name):
                p.mul_(4.0)  # Gated DeltaNet's share of the logits well above the tolerance
            if family.startswith("gemma4") and name.endswith(("router.scale", "per_expert_scale")):
                p.add_(0.3 * torch.randn_like(p))  # Gemma-4's router scales (initialised to 1)
            if family.startswith("gemma4") and name.endswith("router.proj.weight"):
                p.mul_(20.0)  # its input is normalised to H^-1/2: spread the scores past near-ties
        for name, buf in model.named_buffers():
            if name.endswith("e_score_correction_bias"):  # a selection-only bias big enough to matter
                buf.copy_(0.08 * torch.randn_like(buf))
            if name.endswith("layer_scalar"):  # Gemma-4's stored per-layer output scale
                buf.copy_(1.0 + 0.2 * torch.randn_like(buf))
    return model.eval()


def save_hf_model(model, path: str, **kwargs) -> str:
    model.save_pretrained(path, **kwargs)
    return path


def load_hf_model(path: str, dtype=torch.float32):
    return transformers.AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, attn_implementation="eager", experts_implementation="eager"
    ).eval()


def padded_batch(vocab: int, lengths: list[int], total: int, left: list[bool], seed: int = 0):
    """``input_ids``/``attention_mask`` ``[B, total]``; row ``b`` has ``lengths[b]`` real tokens,
    padded on the left where ``left[b]``."""
    rng = np.random.RandomState(seed)
    ids = np.zeros((len(lengths), total), np.int64)
    mask = np.zeros((len(lengths), total), np.int64)
    for b, (n, is_left) in enumerate(zip(lengths, left, strict=True)):
        sl = slice(total - n, total) if is_left else slice(0, n)
        ids[b, sl] = rng.randint(1, vocab, n)
        mask[b, sl] = 1
    return ids, mask


@torch.no_grad()
def hf_forward(model, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray | None = None):
    """HF logits ``[B, T, V]`` and per-layer router logits ``[L, B, T, E]`` as numpy."""
    out = model(
        input_ids=torch.tensor(ids),
        attention_mask=torch.tensor(mask),
        position_ids=None if positions is None else torch.tensor(positions),
        output_router_logits=True,
    )
    b, t = ids.shape
    router = np.stack([r.float().reshape(b, t, -1).numpy() for r in out.router_logits])
    return out.logits.float().numpy(), router


def safetensors_bits(path: str) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint directory's safetensors files, fp32 ones viewed as int32 so
    ``torch.equal`` compares bits (-0.0 and NaN payloads included): the round-trip tests' view."""
    from safetensors.torch import load_file

    out = {}
    for f in sorted(os.listdir(path)):
        if f.endswith(".safetensors"):
            for k, v in load_file(os.path.join(path, f)).items():
                out[k] = v.view(torch.int32) if v.dtype == torch.float32 else v
    return out
