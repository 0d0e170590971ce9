"""``config.json`` fields and tensor layouts that several families spell the same way."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rise_jax.models.config import ConfigError, ModelConfig, get_int
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
