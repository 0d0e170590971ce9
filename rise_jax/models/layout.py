"""Layer layout: which decoder layers are MoE and how they group into scanned *runs*.

Consecutive layers of the same kind form one run, scanned together (``nn.scan``) and stored with a
leading ``[n]`` layer axis. The kind is: MoE or dense MLP; softmax or Gated DeltaNet linear
attention as the token mixer; and, where full-attention layers have other shapes than sliding
ones (``ModelConfig.full_attention``, Gemma-4), sliding or full attention. All released Qwen3-MoE
and PhiMoE checkpoints are all-MoE and so have a single run named ``layers``; mixed models
(``mlp_only_layers``, ``decoder_sparse_step``), hybrid ones (Qwen3-Next / Qwen3.5: three
linear-attention layers, then one softmax-attention layer) and Gemma-4 (five sliding layers, then
one full) get runs ``layers_0``, ``layers_1``, ... The params tree, the KV cache, the checkpoint
layout and the trainable-expert slot tables are all keyed by run name.
"""

from __future__ import annotations

from typing import NamedTuple

from rise_jax.models.config import ModelConfig


class LayerRun(NamedTuple):
    """A maximal block of consecutive decoder layers of one kind, scanned together."""

    name: str
    is_moe: bool
    start: int  # first decoder layer
    length: int
    moe_start: int  # index of its first layer among the MoE layers (if is_moe)
    linear: bool = False  # token mixer: Gated DeltaNet (True) or softmax attention
    sliding: bool = True  # its layers' attention kind, where kinds split runs (cfg.full_attention)


def _kinds(cfg: ModelConfig) -> list[tuple[bool, bool, bool]]:
    """(MoE, linear attention, sliding attention where that splits runs) per decoder layer: what
    a scanned run's layers share."""
    split = cfg.full_attention is not None
    sliding = cfg.sliding_layers or (False,) * cfg.num_layers
    return [
        (moe, linear, bool(s) if split else True)
        for moe, linear, s in zip(cfg.is_moe_layer, cfg.is_linear_layer, sliding, strict=True)
    ]


def layer_runs(cfg: ModelConfig) -> tuple[LayerRun, ...]:
    kinds = _kinds(cfg)
    spans: list[tuple[tuple[bool, bool, bool], int, int]] = []
    for i, kind in enumerate(kinds):
        if spans and spans[-1][0] == kind:
            spans[-1] = (kind, spans[-1][1], spans[-1][2] + 1)
        else:
            spans.append((kind, i, 1))
    runs, moe_seen = [], 0
    for j, ((is_moe, linear, sliding), start, length) in enumerate(spans):
        name = "layers" if len(spans) == 1 else f"layers_{j}"
        runs.append(LayerRun(name, is_moe, start, length, moe_seen, linear, sliding))
        moe_seen += length if is_moe else 0
    return tuple(runs)


def moe_layer_location(cfg: ModelConfig, moe_layer: int) -> tuple[str, int]:
    """(run name, index inside the run's stacked params) of the ``moe_layer``-th MoE layer."""
    for run in layer_runs(cfg):
        if run.is_moe and run.moe_start <= moe_layer < run.moe_start + run.length:
            return run.name, moe_layer - run.moe_start
    raise IndexError(f"MoE layer {moe_layer} out of range [0, {cfg.num_moe_layers})")
