"""Layer layout: which decoder layers are MoE and how they group into scanned *runs*.

Consecutive layers of the same kind (MoE or dense MLP) form one run, scanned together
(``nn.scan``) and stored with a leading ``[n]`` layer axis. All released Qwen3-MoE and PhiMoE
checkpoints are all-MoE and so have a single run named ``layers``; mixed models
(``mlp_only_layers``, ``decoder_sparse_step``) get runs ``layers_0``, ``layers_1``, ... Where
full-attention layers have other shapes than sliding ones (``ModelConfig.full_attention``,
Gemma-4), a change of attention kind also starts a new run. The
params tree, the KV cache, the checkpoint layout and the trainable-expert slot tables are all
keyed by run name.
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
    sliding: bool = True  # its layers' attention kind, where kinds split runs (cfg.full_attention)


def layer_runs(cfg: ModelConfig) -> tuple[LayerRun, ...]:
    split = cfg.full_attention is not None
    sliding = cfg.sliding_layers or (False,) * cfg.num_layers
    kinds = [(moe, bool(s) if split else True) for moe, s in zip(cfg.is_moe_layer, sliding, strict=True)]
    spans: list[tuple[tuple[bool, bool], int, int]] = []
    for i, kind in enumerate(kinds):
        if spans and spans[-1][0] == kind:
            spans[-1] = (kind, spans[-1][1], spans[-1][2] + 1)
        else:
            spans.append((kind, i, 1))
    runs, moe_seen = [], 0
    for j, ((is_moe, is_sliding), start, length) in enumerate(spans):
        name = "layers" if len(spans) == 1 else f"layers_{j}"
        runs.append(LayerRun(name, is_moe, start, length, moe_seen, is_sliding))
        moe_seen += length if is_moe else 0
    return tuple(runs)


def moe_layer_location(cfg: ModelConfig, moe_layer: int) -> tuple[str, int]:
    """(run name, index inside the run's stacked params) of the ``moe_layer``-th MoE layer."""
    for run in layer_runs(cfg):
        if run.is_moe and run.moe_start <= moe_layer < run.moe_start + run.length:
            return run.name, moe_layer - run.moe_start
    raise IndexError(f"MoE layer {moe_layer} out of range [0, {cfg.num_moe_layers})")
