"""``config.json`` fields and tensor layouts that several families spell the same way."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rise_jax.models.config import ConfigError, ModelConfig, get_float, get_int
from rise_jax.models.families import HFNames


def experts_key(d: Mapping[str, Any], source: str, *keys: str) -> str:
    """The first of ``keys`` the config sets (checkpoints spell the expert count differently)."""
    for key in keys:
        if d.get(key) is not None:
            return key
    raise ConfigError(f"{source}: neither {' nor '.join(repr(k) for k in keys)} is set")


def moe_layer_ids(d: Mapping[str, Any], num_layers: int, source: str) -> tuple[int, ...]:
    """Layers with an MoE block: not in ``mlp_only_layers`` and ``(i + 1) % decoder_sparse_step == 0``."""
    mlp_only = set(d.get("mlp_only_layers") or [])
    step = get_int(d, "decoder_sparse_step", source, 1)
    return tuple(i for i in range(num_layers) if i not in mlp_only and (i + 1) % step == 0)


def attention_biases(d: Mapping[str, Any], default: bool = False) -> dict[str, bool]:
    """``qkv_bias`` / ``o_bias`` from ``attention_bias`` (one switch for all four projections)."""
    bias = bool(d.get("attention_bias", default))
    return dict(qkv_bias=bias, o_bias=bias)


def every_layer_moe(f: Mapping[str, Any], intermediate_size: int) -> dict[str, Any]:
    """The fields of a model whose every layer is MoE with experts of ``intermediate_size``."""
    return dict(
        moe_intermediate_size=intermediate_size,
        intermediate_size=intermediate_size,
        moe_layer_ids=tuple(range(f["num_layers"])),
    )


def optional_int(d: Mapping[str, Any], key: str, source: str) -> int | None:
    """``d[key]`` checked as a positive int, or None when absent or null."""
    return None if d.get(key) is None else get_int(d, key, source)


def moe_layers_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    """Qwen's spelling of which layers are MoE: the dense ones listed, every other layer sparse."""
    return {
        "norm_topk_prob": cfg.norm_topk_prob,
        "mlp_only_layers": [i for i in range(cfg.num_layers) if i not in set(cfg.moe_layer_ids)],
        "decoder_sparse_step": 1,
    }


def block_sparse_moe_names(router_alt: str) -> HFNames:
    """The Mixtral layout (Mixtral, PhiMoE): ``block_sparse_moe.experts.{e}.w1 / w3 / w2`` for gate /
    up / down, the router at ``block_sparse_moe.gate``; ``router_alt`` its in-memory name."""
    return HFNames(
        moe_prefix="block_sparse_moe",
        router="block_sparse_moe.gate.weight",
        router_alt=router_alt,
        experts={"gate_proj": "w1", "up_proj": "w3", "down_proj": "w2"},
    )


def first_k_dense(d: Mapping[str, Any], num_layers: int, source: str, default: int) -> tuple[int, ...]:
    """MoE layers of the DeepSeek layout: every layer from ``first_k_dense_replace`` on."""
    first = get_int(d, "first_k_dense_replace", source, default, minimum=0)
    if first >= num_layers:
        raise ConfigError(f"{source}: first_k_dense_replace = {first} leaves no MoE layer of {num_layers}")
    return tuple(range(first, num_layers))


def deepseek_moe_fields(d: Mapping[str, Any], f: Mapping[str, Any], source: str, *, first_k_default: int) -> dict:
    """The MoE fields DeepSeek-V2/V3 and GLM-4.5 spell alike: ``moe_intermediate_size``, dense
    ``intermediate_size`` for the first ``first_k_dense_replace`` layers, ``n_shared_experts``
    always-active experts fused into one ungated MLP, ``n_group`` / ``topk_group``,
    ``routed_scaling_factor``. ``mlp_bias`` (DeepSeek-V2's optional MLP biases) is refused."""
    if d.get("mlp_bias"):
        raise ConfigError(f"{source}: mlp_bias = true is not supported (dense and shared-expert MLPs without biases)")
    moe_inter = get_int(d, "moe_intermediate_size", source)
    n_groups = get_int(d, "n_group", source, 1)
    return dict(
        moe_intermediate_size=moe_inter,
        intermediate_size=get_int(d, "intermediate_size", source),
        moe_layer_ids=first_k_dense(d, f["num_layers"], source, first_k_default),
        shared_expert_size=moe_inter * get_int(d, "n_shared_experts", source, 1),
        shared_expert_gate=False,
        router_groups=n_groups,
        router_topk_groups=get_int(d, "topk_group", source, n_groups),
        routed_scaling_factor=get_float(d, "routed_scaling_factor", source, 1.0),
    )


def mla_fields(d: Mapping[str, Any], f: Mapping[str, Any], source: str) -> dict:
    """Multi-head Latent Attention widths (``head_dim`` = ``qk_rope_head_dim``, as transformers
    sets it); MLA has one key/value head per query head, so ``num_key_value_heads`` must equal
    ``num_attention_heads`` (transformers' eager attention fails otherwise)."""
    if f["num_kv_heads"] != f["num_heads"]:
        raise ConfigError(
            f"{source}: num_key_value_heads = {f['num_kv_heads']} must equal num_attention_heads = "
            f"{f['num_heads']} for multi-head latent attention"
        )
    return dict(
        attention="mla",
        head_dim=get_int(d, "qk_rope_head_dim", source),
        q_lora_rank=optional_int(d, "q_lora_rank", source),
        kv_lora_rank=get_int(d, "kv_lora_rank", source),
        qk_nope_head_dim=get_int(d, "qk_nope_head_dim", source),
        v_head_dim=get_int(d, "v_head_dim", source),
        **attention_biases(d),
    )


def mla_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    return {
        "q_lora_rank": cfg.q_lora_rank,
        "kv_lora_rank": cfg.kv_lora_rank,
        "qk_nope_head_dim": cfg.qk_nope_head_dim,
        "qk_rope_head_dim": cfg.head_dim,
        "v_head_dim": cfg.v_head_dim,
        "attention_bias": cfg.qkv_bias,
    }


def deepseek_moe_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    return {
        "n_routed_experts": cfg.num_experts,
        "moe_intermediate_size": cfg.moe_intermediate_size,
        "n_shared_experts": cfg.shared_expert_size // cfg.moe_intermediate_size,
        "first_k_dense_replace": cfg.moe_layer_ids[0],
        "n_group": cfg.router_groups,
        "topk_group": cfg.router_topk_groups,
        "routed_scaling_factor": cfg.routed_scaling_factor,
        "norm_topk_prob": cfg.norm_topk_prob,
    }


def check_choice(d: Mapping[str, Any], key: str, source: str, allowed: tuple[str, ...]) -> None:
    """A hub key transformers ignores but whose value must be the one it implements."""
    if d.get(key) is not None and d[key] not in allowed:
        raise ConfigError(f"{source}: {key} = {d[key]!r} is not supported (supported: {', '.join(allowed)})")


DEEPSEEK_NAMES = HFNames(shared_expert="mlp.shared_experts", router_selection_bias="mlp.gate.e_score_correction_bias")
