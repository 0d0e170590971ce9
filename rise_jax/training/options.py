"""Training options: the one place their defaults are spelled (``configs/base.py`` copies them
into ``config.train``; :meth:`TrainOptions.from_config` reads them back). Paper defaults (RISE,
DESIGN §3): lr 2e-5, AdamW (0.9, 0.999, 1e-8), weight decay 0, warmup 0.05, clip 1.0, 3 epochs,
batch 2 x accumulation 8, seed 42."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    epochs: int = 3
    batch_size: int = 2
    grad_accum: int = 8  # micro-batches per optimiser step (and one at each epoch end)
    lr: float = 2e-5
    warmup_ratio: float = 0.05
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    clip_norm: float = 1.0
    seed: int = 42
    eval_every: int = 50  # optimiser steps between held-out evaluations (0 = only at the end)
    save_every: int = 100  # micro-steps between checkpoints (0 = only at the end / on signal)
    log_every: int = 1  # micro-steps between metric records
    bucket_multiple: int = 32
    # Several sequences a row (segment ids; training/data.py MicroBatches): padding-free, each
    # micro-batch `batch_size` rows of the longest sequence's bucket. Per-token losses equal the
    # unpacked ones, but a micro-batch then holds more sequences (another batch composition, so
    # another loss curve than the paper's batch 2 x accumulation 8): off by default.
    pack: bool = False
    pad_id: int = 0
    max_steps: int = 0  # stop (with a checkpoint) after this many micro-steps; 0 = run to the end
    extra_lr: float = 0.0  # peak lr of the path-rule groups (when the trainable tree has any); 0 = lr
    # More trainable groups by path rule (comma list of regexes over "/"-joined param paths), off by
    # default: e.g. "moe/router" (routers: training changes routing, so interference is no longer
    # bounded by rho) or "attn/" (attention). They get their own AdamW with peak `extra_lr` (0 = lr).
    extra_trainable: str = ""
    # What trains (rise_jax/training/methods/, one class each): "experts" (the selected experts,
    # fp32 masters; the paper's RISE), "rise_lora" (low-rank adapters inside the selected experts
    # only, the paper's App. H) or "lora" (the paper's LoRA baseline: adapters on the dense kernels
    # matching lora_targets, no selection used); PEFT's init and scale alpha / r.
    method: str = "experts"
    lora_rank: int = 8
    lora_alpha: float = 8.0  # scale alpha / r = 1 (PEFT LoraConfig's defaults r = 8, alpha = 8)
    # method=lora: dropout on the dense adapters' input, in training only (PEFT's lora_dropout).
    # Adapters inside experts refuse it, as PEFT does for fused expert weights: the merged
    # W + scale (B A)^T they train through has no per-token input to drop.
    lora_dropout: float = 0.0
    lora_targets: str = r"attn/(q|k|v|o)_proj/kernel$"  # method=lora: regexes over parameter paths
    lora_all_experts: bool = False  # method=lora: adapters on every expert of every MoE layer too
    # Routing alignment (rise_jax/training/alignment.py): loss = NLL + align_weight * A, A the
    # divergence ("kl": KL(English || target), or "js": the analysis's entropy-normalised JS) of the
    # token-mean routing distributions of parallel pairs at align_layers (MoE layers, "3-5";
    # empty = the middle zone), English = align_reference. 0 = off.
    align_weight: float = 0.0
    align_divergence: str = "kl"
    align_layers: str = ""
    align_reference: str = "en"
    # method=routers / experts+routers: the MoE layers whose routers train ("3-5"); empty = align_layers.
    router_layers: str = ""
    progress: bool = True

    @classmethod
    def from_config(cls, section: Any, **overrides: Any) -> TrainOptions:
        """The options named in a config section (``config.train``), the rest left at these
        defaults — the only place they are spelled (``configs/base.py`` copies them)."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: section[k] for k in names if k in section}
        return cls(**{**values, **overrides})


def config_defaults() -> dict[str, Any]:
    """The options a config sets (all but the per-run ``pad_id`` and ``progress``) with their defaults."""
    return {f.name: f.default for f in dataclasses.fields(TrainOptions) if f.name not in ("pad_id", "progress")}
