"""``train.method=rise_lora`` (the paper's App. H): low-rank adapters inside the selected experts
only; the experts themselves stay frozen.

State::

    weights: {run: {proj: {"lora_a": [K_run, r, in], "lora_b": [K_run, out, r]}}}   (proj: gate/up/down)
    slots:   {run: int32 [n, E], "lora_scale": float32 alpha / r}

PEFT's init (``lora_a`` uniform in ±1/sqrt(in), ``lora_b`` zeros: step 0 is exactly the base
model) and scale; the model runs the adapters as a weight source
(:class:`~rise_jax.models.expert_weights.LoRAExperts`), the merge writes ``W + scale (B A)ᵀ``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rise_jax.errors import SettingError
from rise_jax.models.config import ModelConfig
from rise_jax.models.expert_weights import LORA_A, LORA_B, LoRAExperts, lora_delta
from rise_jax.training.methods.base import MethodSetup, TrainingMethod, count_rows
from rise_jax.training.methods.experts import write_expert_rows
from rise_jax.training.options import TrainOptions
from rise_jax.training.partition import expert_slots, slot_rows

LORA_SCALE = "lora_scale"  # key of alpha / r in ``slots`` (never a run name)
LORA_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


def expert_adapters(
    cfg: ModelConfig, experts: list[tuple[int, int]], rank: int, alpha: float, seed: int = 0, expert_shards: int = 1
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(weights, slots) of PEFT-initialised adapters per selected expert and projection —
    ``lora_a [K, r, in]`` uniform in ±1/sqrt(in) (``kaiming_uniform_(a=sqrt(5))``), ``lora_b
    [K, out, r]`` zeros — with the slot tables (owner-grouped for ``expert_shards`` > 1) and
    ``lora_scale`` = alpha / r."""
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    h, i = cfg.hidden_size, cfg.moe_intermediate_size
    shapes = {"gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}  # (in, out)
    key = jax.random.PRNGKey(seed)
    weights: dict[str, Any] = {}
    slots_out: dict[str, Any] = {}
    for run, slots in expert_slots(cfg, experts, expert_shards).items():
        k = len(slot_rows(slots, expert_shards)[2])
        entry = {}
        for name in LORA_PROJECTIONS:
            fan_in, fan_out = shapes[name]
            key, sub = jax.random.split(key)
            bound = 1.0 / np.sqrt(fan_in)
            entry[name] = {
                LORA_A: jax.random.uniform(sub, (k, rank, fan_in), jnp.float32, -bound, bound),
                LORA_B: jnp.zeros((k, fan_out, rank), jnp.float32),
            }
        weights[run] = entry
        slots_out[run] = jnp.asarray(slots)
    slots_out[LORA_SCALE] = jnp.float32(alpha / rank)
    return weights, slots_out


def check_lora_settings(opts: TrainOptions) -> None:
    """Settings every LoRA method shares: a rank >= 1, dropout in [0, 1), no full-weight groups."""
    if int(opts.lora_rank) < 1:
        raise SettingError(f"config.train.lora_rank = {opts.lora_rank!r}: must be >= 1")
    if opts.extra_trainable:
        raise SettingError(f"config.train.extra_trainable trains full weights; not with train.method={opts.method}")
    if not 0.0 <= float(opts.lora_dropout) < 1.0:
        raise SettingError(f"config.train.lora_dropout = {opts.lora_dropout!r}: must be in [0, 1)")


def refuse_expert_dropout(opts: TrainOptions) -> None:
    """Adapters inside experts train through the merged weights: no per-token input to drop."""
    if opts.lora_dropout:
        raise SettingError(
            f"config.train.lora_dropout = {opts.lora_dropout!r}: adapters inside experts train through "
            "the merged weights W + scale (B A)^T, which leave no per-token adapter input to drop "
            "(PEFT refuses lora_dropout on fused expert weights too); use 0, or method=lora without "
            "lora_all_experts"
        )


class ExpertLoRA(TrainingMethod):
    """Adapters on gate/up/down of the selected experts (the base for adapters inside experts)."""

    name = "rise_lora"

    @classmethod
    def validate(cls, opts: TrainOptions, frozen_dtype: str | None) -> None:
        check_lora_settings(opts)
        refuse_expert_dropout(opts)

    @classmethod
    def init(
        cls,
        cfg: ModelConfig,
        experts: list[tuple[int, int]],
        rank: int,
        alpha: float,
        seed: int = 0,
        expert_shards: int = 1,
    ) -> ExpertLoRA:
        """Adapters per selected expert and projection (:func:`expert_adapters`)."""
        return cls(*expert_adapters(cfg, experts, rank, alpha, seed, expert_shards))

    @classmethod
    def create(cls, setup: MethodSetup, opts: TrainOptions) -> ExpertLoRA:
        return cls.init(setup.cfg, setup.experts, opts.lora_rank, opts.lora_alpha, opts.seed, setup.expert_shards)

    def describe(self, opts: TrainOptions) -> str:
        return f"{sum(int((np.asarray(t) >= 0).sum()) for t in self.tables().values())} experts"

    def summary(self, opts: TrainOptions) -> dict[str, Any]:
        return {"lora": {"rank": int(opts.lora_rank), "alpha": float(opts.lora_alpha)}}

    def tables(self) -> dict[str, Any]:
        """Run -> slot table (the scale left out)."""
        return {run: t for run, t in self.slots.items() if run != LORA_SCALE}

    @property
    def scale(self) -> Any:
        return self.slots[LORA_SCALE]

    def expert_override(self, run: str) -> tuple[Any, Any] | None:
        if run not in self.tables():
            return None
        return self.slots[run], LoRAExperts(base=None, adapters=self.weights[run], slots=None, scale=self.scale)

    def expert_tables(self) -> dict[str, tuple[np.ndarray, int]]:
        return {
            run: (np.asarray(t), jax.tree_util.tree_leaves(self.weights[run])[0].shape[0])
            for run, t in self.tables().items()
        }

    def parameter_count(self) -> int:
        return sum(count_rows(self.weights[run], t) for run, t in self.tables().items())

    def merge(self, params: dict[str, Any]) -> dict[str, Any]:
        merged = jax.tree_util.tree_map(lambda x: x, params)  # new containers, same leaves
        return self.merge_expert_adapters(merged)

    def merge_expert_adapters(self, merged: dict[str, Any]) -> dict[str, Any]:
        """``merged`` with ``W + scale (B A)ᵀ`` (fp32, then the base dtype) at the selected experts."""
        if LORA_SCALE not in self.slots:
            return merged
        scale = float(self.scale)
        for run, table in self.tables().items():
            delta = {
                n: lora_delta(jnp.asarray(ad[LORA_A]), jnp.asarray(ad[LORA_B]), scale)
                for n, ad in self.weights[run].items()
            }
            merged = write_expert_rows(merged, run, table, delta, delta=True)
        return merged

    @classmethod
    def matches(cls, weights: dict[str, Any], slots: dict[str, Any]) -> bool:
        return LORA_SCALE in slots and all(k in slots for k in weights)

    @classmethod
    def from_checkpoint(cls, weights: dict[str, Any], slots: dict[str, Any]) -> ExpertLoRA:
        return cls(
            jax.tree_util.tree_map(np.asarray, weights),
            {k: np.asarray(v, np.float32 if k == LORA_SCALE else np.int32) for k, v in slots.items()},
        )
