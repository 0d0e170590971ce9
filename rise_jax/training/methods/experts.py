"""``train.method=experts`` (the paper's RISE): fp32 master copies of the K selected experts,
optionally with whole parameter groups chosen by path rules (``train.extra_trainable``).

State::

    weights: {run: {"gate_proj": [K_run, H, I], "up_proj": [K_run, H, I], "down_proj": [K_run, I, H]
                    (+ "gate_bias", "up_bias", "down_bias" for families with expert biases: GPT-OSS)},
              "extra_params": <params-shaped subtree of the path-rule groups>   (only with rules)}
    slots:   {run: int32 [n, E]   (-1 = frozen, else row in the arrays above)}

The model substitutes the trainable rows for the selected experts
(:class:`~rise_jax.models.expert_weights.SubstitutedExperts`) and stops gradients to every base
parameter; the path-rule groups are overlaid on the base params inside the step and get their own
AdamW (peak ``train.extra_lr``) through ``optax.partition``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rise_jax.config_values import comma_list
from rise_jax.errors import SettingError
from rise_jax.models.config import ModelConfig
from rise_jax.models.expert_mlp import PARAM_NAMES, ExpertTensors
from rise_jax.models.expert_weights import SubstitutedExperts
from rise_jax.models.quantized import QuantizedArray
from rise_jax.training.methods.base import MethodSetup, TrainingMethod, count_rows
from rise_jax.training.options import TrainOptions
from rise_jax.training.partition import as_float32, count_trainable, expert_slots, overlay, select_extra, slot_rows

EXTRA = "extra_params"  # key of the path-rule groups in ``weights`` (never a run name)


def group_labels(weights: dict[str, Any]) -> dict[str, Any]:
    """``"extra"`` for the path-rule groups, ``"experts"`` for the selected experts (the labels of
    :func:`~rise_jax.training.step.make_optimizer`'s two AdamWs)."""
    return {
        k: jax.tree_util.tree_map(lambda _, k=k: "extra" if k == EXTRA else "experts", v) for k, v in weights.items()
    }


class FullExperts(TrainingMethod):
    """The selected experts' full weights (and any path-rule groups) train."""

    name = "experts"
    reserved: ClassVar[tuple[str, ...]] = (EXTRA,)  # keys of weights / slots that are not runs

    @classmethod
    def validate(cls, opts: TrainOptions, frozen_dtype: str | None) -> None:
        if opts.extra_trainable and frozen_dtype:
            raise SettingError(
                f"config.train.extra_trainable = {opts.extra_trainable!r} trains non-expert weights, which "
                f"config.model.frozen_dtype = {frozen_dtype!r} stores quantized: use one or the other"
            )

    @classmethod
    def init(
        cls,
        params: dict[str, Any],
        cfg: ModelConfig,
        experts: list[tuple[int, int]],
        extra_patterns: list[str] | tuple = (),
        originals: Callable[[str, str, np.ndarray, np.ndarray], Any] | None = None,
        expert_shards: int = 1,
    ) -> FullExperts:
        """fp32 copies of the selected experts' weights, gathered from ``params`` (plus the groups
        matching ``extra_patterns``, see :func:`~rise_jax.training.partition.select_extra`), and
        their slot tables (rows grouped by owner device for ``expert_shards`` > 1, unused rows
        zero; :func:`~rise_jax.training.partition.expert_slots`).

        ``originals(run, name, layers, experts)`` (``[K, ...]``) reads them instead — a quantized
        frozen base starts training from the checkpoint's own weights, not from their quantized copy."""
        weights: dict[str, Any] = {}
        slots_out: dict[str, Any] = {}
        if extra_patterns:
            weights[EXTRA] = select_extra(params, list(extra_patterns))
        for run, slots in expert_slots(cfg, experts, expert_shards).items():
            li, ei, used = slot_rows(slots, expert_shards)
            stacked = params[run]["moe"]["experts"]
            weights[run] = {}
            for name in cfg.expert_param_names:
                if originals is not None:
                    rows = np.asarray(originals(run, name, li[used], ei[used]), np.float32)
                    full = np.zeros((len(used), *rows.shape[1:]), np.float32)
                    full[used] = rows
                    weights[run][name] = jnp.asarray(full)
                else:
                    rows = stacked[name][li, ei].astype(jnp.float32)
                    weights[run][name] = jnp.where(used.reshape(-1, *[1] * (rows.ndim - 1)), rows, 0.0)
            slots_out[run] = jnp.asarray(slots)
        return cls(weights, slots_out)

    @classmethod
    def create(cls, setup: MethodSetup, opts: TrainOptions) -> FullExperts:
        originals = None
        if setup.frozen_quantized:  # train from the checkpoint's own weights
            from rise_jax.checkpoints.hf_load import expert_reader

            originals = expert_reader(setup.checkpoint, setup.cfg)
        patterns = comma_list(opts.extra_trainable)
        return cls.init(setup.params, setup.cfg, setup.experts, patterns, originals, setup.expert_shards)

    def describe(self, opts: TrainOptions) -> str:
        k = sum(int((np.asarray(t) >= 0).sum()) for t in self.tables().values())
        return f"{k} experts"

    def runs(self) -> dict[str, dict[str, Any]]:
        """The per-run expert entries of ``weights`` (the path-rule groups, routers ... left out)."""
        return {run: w for run, w in self.weights.items() if run not in self.reserved}

    def tables(self) -> dict[str, Any]:
        """The per-run slot tables of the trainable experts."""
        return {run: t for run, t in self.slots.items() if run not in self.reserved}

    def model_params(self, base: dict[str, Any]) -> dict[str, Any]:
        return overlay(base, self.weights.get(EXTRA))

    def expert_override(self, run: str) -> tuple[Any, Any] | None:
        if run not in self.slots:
            return None
        trained = ExpertTensors(*(self.weights[run].get(n) for n in PARAM_NAMES))
        return self.slots[run], SubstitutedExperts(base=None, trained=trained, slots=None)

    def expert_tables(self) -> dict[str, tuple[np.ndarray, int]]:
        return {
            run: (np.asarray(t), jax.tree_util.tree_leaves(self.weights[run])[0].shape[0])
            for run, t in self.tables().items()
        }

    def optimizer(self, opts: TrainOptions, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
        from rise_jax.training.step import make_optimizer

        extra = (opts.extra_lr or opts.lr) if EXTRA in self.weights else None
        return make_optimizer(
            opts.lr,
            total_steps,
            opts.warmup_ratio,
            opts.b1,
            opts.b2,
            opts.eps,
            opts.weight_decay,
            opts.clip_norm,
            extra,
            group_labels,
        )

    def parameter_count(self) -> int:
        total = count_trainable(self.weights.get(EXTRA, {}))
        return total + sum(count_rows(entry, self.slots[run]) for run, entry in self.runs().items())

    def merge(self, params: dict[str, Any]) -> dict[str, Any]:
        merged = jax.tree_util.tree_map(lambda x: x, params)  # new containers, same leaves
        merged = overlay(merged, self.weights.get(EXTRA))
        for run, entry in self.runs().items():
            merged = write_expert_rows(merged, run, self.slots[run], {n: jnp.asarray(entry[n]) for n in entry})
        return merged

    @classmethod
    def matches(cls, weights: dict[str, Any], slots: dict[str, Any]) -> bool:
        return all(isinstance(v, dict) and not _holds_adapters(v) for k, v in weights.items() if k != EXTRA)


def _holds_adapters(entry: dict[str, Any]) -> bool:
    return any(isinstance(v, dict) for v in entry.values())


def write_expert_rows(
    params: dict[str, Any], run: str, table: Any, rows_of: dict[str, Any], delta: bool = False
) -> dict[str, Any]:
    """``params`` with the experts of ``table`` (``[n, E]``, row or -1) in run ``run`` set to
    ``rows_of[name][row]`` (or, with ``delta``, to the base weight plus it, in fp32), cast to the
    base dtype; a quantized frozen base is requantized per expert."""
    table = np.asarray(table)
    li, ei = np.nonzero(table >= 0)
    rows = table[li, ei]
    experts = dict(params[run]["moe"]["experts"])
    for name, values in rows_of.items():
        base = experts[name]
        values = values[rows]
        if delta:  # W + delta, in fp32, of the selected experts
            values = as_float32(base[li, ei]) + values
        if isinstance(base, QuantizedArray):
            experts[name] = base.set((li, ei), values)
        else:
            experts[name] = base.at[li, ei].set(values.astype(base.dtype))
    return {**params, run: {**params[run], "moe": {**params[run]["moe"], "experts": experts}}}
