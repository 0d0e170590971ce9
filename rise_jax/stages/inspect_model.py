"""Stage ``inspect``: load a checkpoint and describe it (layers, experts, zones, parameter counts).

Artefact ``inspect.json`` (keys: ``checkpoint``, ``model_type``, ``num_layers``, ``moe_layers``,
``num_experts``, ``top_k``, ``hidden_size``, ``heads``, ``kv_heads``, ``head_dim``,
``vocab_size``, ``params`` {``total``, ``experts``, ``router``, ``embedding``, ``active_per_token``},
``zones`` {``shallow``, ``middle``, ``deep``: [first, last] MoE-layer indices or null}, ``dtype``);
optionally the converted params as an orbax checkpoint in ``<workdir>/params``.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections
import numpy as np

from rise_jax.checkpoints.hf_load import read_hf_config
from rise_jax.io_utils import write_json_atomic
from rise_jax.models.config import ModelConfig
from rise_jax.stages.build import abstract_params, build_model
from rise_jax.stages.common import checkpoint_path, zone_ratios
from rise_jax.stages.registry import Stage
from rise_jax.workdir import Workdir
from rise_jax.zones import DEFAULT_RATIOS, zone_spans


def parameter_counts(cfg: ModelConfig) -> dict[str, int]:
    """Counts from abstract shapes (no weights allocated)."""
    flat = jax.tree_util.tree_flatten_with_path(abstract_params(cfg))[0]
    total = experts = router = embed = 0
    for path, leaf in flat:
        keys = [getattr(p, "key", str(p)) for p in path]
        n = int(np.prod(leaf.shape))
        total += n
        if "experts" in keys:
            experts += n
        elif "router" in keys:
            router += n
        elif "embed_tokens" in keys or "lm_head" in keys:
            embed += n
    active = total - experts + experts * cfg.top_k // max(cfg.num_experts, 1)
    return {"total": total, "experts": experts, "router": router, "embedding": embed, "active_per_token": active}


def describe(cfg: ModelConfig, zone_ratios: tuple[float, float] = DEFAULT_RATIOS) -> dict[str, Any]:
    return {
        "model_type": cfg.model_type,
        "num_layers": cfg.num_layers,
        "moe_layers": cfg.num_moe_layers,
        "moe_layer_ids": list(cfg.moe_layer_ids),
        "num_experts": cfg.num_experts,
        "top_k": cfg.top_k,
        "hidden_size": cfg.hidden_size,
        "heads": cfg.num_heads,
        "kv_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "moe_intermediate_size": cfg.moe_intermediate_size,
        "vocab_size": cfg.vocab_size,
        "params": parameter_counts(cfg),
        "zones": zone_spans(cfg.num_moe_layers, zone_ratios),
    }


def format_summary(info: dict[str, Any]) -> str:
    p = info["params"]
    z = info["zones"]
    zone = lambda r: "-" if r is None else f"{r[0]}-{r[1]}"  # noqa: E731
    lines = [
        f"checkpoint   {info.get('checkpoint', '')}",
        f"model_type   {info['model_type']}",
        f"layers       {info['num_layers']} ({info['moe_layers']} MoE)",
        f"experts      {info['num_experts']} per layer, top-{info['top_k']}",
        f"attention    {info['heads']} heads / {info['kv_heads']} kv heads, head_dim {info['head_dim']}",
        f"hidden       {info['hidden_size']}, expert width {info['moe_intermediate_size']}, vocab {info['vocab_size']}",
        f"parameters   {p['total']:,} total, {p['experts']:,} in experts, {p['active_per_token']:,} active/token",
        f"zones        shallow {zone(z['shallow'])} | middle {zone(z['middle'])} | deep {zone(z['deep'])}",
    ]
    return "\n".join(lines)


def run(config: ml_collections.ConfigDict, wd: Workdir) -> dict[str, Any]:
    path = checkpoint_path(config)
    cfg, _ = read_hf_config(path)
    info = {
        "checkpoint": os.path.abspath(path),
        **describe(cfg, zone_ratios(config.select)),
        "dtype": config.model.dtype,
    }
    if config.inspect.load_weights or config.inspect.save_params:
        params = build_model(config, quantized=False, placed=False).params
        if config.inspect.save_params:
            import orbax.checkpoint as ocp

            target = os.path.abspath(wd.params)
            with ocp.StandardCheckpointer() as ckptr:
                ckptr.save(target, params, force=True)
            info["params_checkpoint"] = target
    print(format_summary(info), flush=True)
    write_json_atomic(wd.inspect, info)
    return info


def validate(config: ml_collections.ConfigDict) -> None:
    zone_ratios(config.select)


# Reads only the checkpoint (not chained after the other stages); zones as the selection draws them.
STAGE = Stage(
    "inspect",
    ("model", "inspect", "select.zone_ratios"),
    run,
    validate=validate,
    outputs=lambda wd: (wd.inspect,),
    chained=False,
)
