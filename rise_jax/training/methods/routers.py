"""``train.method=routers`` and ``experts+routers``: the router weights of chosen MoE layers
(``train.router_layers``; default ``train.align_layers``, itself the middle zone by default) train,
alone or beside RISE's selected experts. The companion study steers the routers at inference;
these train them (with or without the routing-alignment term, :mod:`rise_jax.training.alignment`,
which is an objective option orthogonal to what trains).

State (``routers`` alone; ``experts+routers`` adds :mod:`.experts`' entries beside it)::

    weights: {"routers": {run: {"router": [n_r, H, E] (+ "router_bias" [n_r, E]: GPT-OSS;
                                  "router_scale" [n_r, H], "router_expert_scale" [n_r, E]: Gemma-4)}}}
    slots:   {"routers": {run: int32 [n_r]   (the run's layers whose rows these are)}}

"Router weights" are the parameters of the HF router module that pretraining trains: the
projection, its bias, Gemma-4's input and per-expert scales. DeepSeek-V3 / GLM-4.5's selection
bias (``router_selection_bias``, ``e_score_correction_bias``) is a load-balancing buffer that no
gradient trains in transformers, so it never trains here either. The training forward writes the
fp32 rows into the base leaves (cast to their dtype; the rest of each leaf is the base, bitwise);
the merge does the same, so an export writes the trained routers into the HF checkpoint like
trained experts. A PEFT LoRA adapter cannot express a trained router (a full weight of some
layers), so no ``export/peft`` is written (:meth:`write_exports` says so).

A router that changes moves tokens to other experts: unlike RISE's frozen-router training, the
interference mass ρ no longer bounds what changes on other languages (replay the merged model:
the ``routing_divergence`` eval task or ``stats`` on the export).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from rise_jax.errors import SettingError
from rise_jax.models.config import ModelConfig
from rise_jax.models.layout import moe_layer_location
from rise_jax.models.quantized import QuantizedArray
from rise_jax.training.methods.base import MethodSetup, TrainingMethod
from rise_jax.training.methods.experts import EXTRA, FullExperts
from rise_jax.training.options import TrainOptions
from rise_jax.training.partition import count_trainable

ROUTERS = "routers"  # key of the router rows in ``weights`` and ``slots`` (never a run name)
# The router module's trained parameters (models/transformer.py's MoEBlock); the selection-only
# bias (router_selection_bias) is a buffer and is left out on purpose.
ROUTER_LEAVES = ("router", "router_bias", "router_scale", "router_expert_scale")


def router_rows(
    params: dict[str, Any], cfg: ModelConfig, layers: tuple[int, ...] | list[int]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(weights, slots) of the router parameters of MoE ``layers``: fp32 copies of their rows,
    grouped by scanned run, and each run's layer indices (int32, ascending)."""
    if not layers:
        raise ValueError("router training needs at least one MoE layer (config.train.router_layers)")
    by_run: dict[str, list[int]] = {}
    for layer in sorted(set(layers)):
        if not 0 <= layer < cfg.num_moe_layers:
            raise ValueError(f"router layer {layer} out of range [0, {cfg.num_moe_layers})")
        run, idx = moe_layer_location(cfg, layer)
        by_run.setdefault(run, []).append(idx)
    weights, slots = {}, {}
    for run, rows in by_run.items():
        moe = params[run]["moe"]
        idx = np.asarray(rows, np.int32)
        entry = {}
        for name in ROUTER_LEAVES:
            if name in moe:
                if isinstance(moe[name], QuantizedArray):
                    raise ValueError(f"{run}/moe/{name} is stored quantized: routers train from full-precision weights")
                entry[name] = jnp.asarray(moe[name])[idx].astype(jnp.float32)
        weights[run], slots[run] = entry, idx
    return weights, slots


def with_router_rows(params: dict[str, Any], weights: dict[str, Any], slots: dict[str, Any]) -> dict[str, Any]:
    """``params`` with each run's router rows ``slots[run]`` replaced by ``weights[run]`` (cast to
    the base dtype; every other value of the leaves is the base's, bitwise)."""
    out = dict(params)
    for run, entry in weights.items():
        idx = jnp.asarray(slots[run])
        moe = dict(params[run]["moe"])
        for name, rows in entry.items():
            base = moe[name]
            moe[name] = jnp.asarray(base).at[idx].set(jnp.asarray(rows).astype(base.dtype))
        out[run] = {**params[run], "moe": moe}
    return out


def _peft_message(name: str) -> None:
    logging.info(
        f"export/peft: not written: train.method={name} trains full router weights, which a PEFT LoRA "
        "adapter cannot express (the merged HF checkpoint in export/hf holds them)"
    )


def _restore(weights: dict[str, Any], slots: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Checkpoint trees as numpy: weights as saved, slot tables int32 (the router rows nested)."""
    out = {k: (jax.tree_util.tree_map(lambda x: np.asarray(x, np.int32), v) if k == ROUTERS else np.asarray(v, np.int32))
           for k, v in slots.items()}  # fmt: skip
    return jax.tree_util.tree_map(np.asarray, weights), out


class Routers(TrainingMethod):
    """The routers of the chosen MoE layers train; every other weight (experts included) is frozen."""

    name = "routers"
    trains_routers = True

    @classmethod
    def validate(cls, opts: TrainOptions, frozen_dtype: str | None) -> None:
        if opts.extra_trainable:
            raise SettingError(
                f"config.train.extra_trainable = {opts.extra_trainable!r} with train.method=routers: path-rule "
                "groups train beside the experts (train.method=experts or experts+routers)"
            )

    @classmethod
    def init(cls, params: dict[str, Any], cfg: ModelConfig, layers: tuple[int, ...] | list[int]) -> Routers:
        weights, slots = router_rows(params, cfg, layers)
        return cls({ROUTERS: weights}, {ROUTERS: slots})

    @classmethod
    def create(cls, setup: MethodSetup, opts: TrainOptions) -> Routers:
        return cls.init(setup.params, setup.cfg, setup.router_layers)

    def describe(self, opts: TrainOptions) -> str:
        return f"the routers of {sum(len(np.asarray(v)) for v in self.slots[ROUTERS].values())} MoE layers"

    def summary(self, opts: TrainOptions) -> dict[str, Any]:
        return {"router_layers": {run: [int(i) for i in np.asarray(v)] for run, v in self.slots[ROUTERS].items()}}

    def model_params(self, base: dict[str, Any]) -> dict[str, Any]:
        return with_router_rows(base, self.weights[ROUTERS], self.slots[ROUTERS])

    def parameter_count(self) -> int:
        return count_trainable(self.weights)

    def merge(self, params: dict[str, Any]) -> dict[str, Any]:
        return with_router_rows(params, self.weights[ROUTERS], self.slots[ROUTERS])

    def write_exports(
        self, cfg: ModelConfig, out_dirs: dict[str, str], settings: dict[str, Any], source: str
    ) -> list[str]:
        _peft_message(self.name)
        return []

    @classmethod
    def matches(cls, weights: dict[str, Any], slots: dict[str, Any]) -> bool:
        return set(weights) == {ROUTERS}

    @classmethod
    def from_checkpoint(cls, weights: dict[str, Any], slots: dict[str, Any]) -> Routers:
        return cls(*_restore(weights, slots))


class ExpertsRouters(FullExperts):
    """RISE's selected experts (as ``experts``) and the routers of the chosen layers train together;
    both get the ``train.lr`` AdamW (path-rule groups keep ``train.extra_lr``)."""

    name = "experts+routers"
    trains_routers = True
    reserved = (EXTRA, ROUTERS)

    @classmethod
    def create(cls, setup: MethodSetup, opts: TrainOptions) -> ExpertsRouters:
        experts = FullExperts.create(setup, opts)
        weights, slots = router_rows(setup.params, setup.cfg, setup.router_layers)
        return cls({**experts.weights, ROUTERS: weights}, {**experts.slots, ROUTERS: slots})

    def describe(self, opts: TrainOptions) -> str:
        routers = sum(len(np.asarray(v)) for v in self.slots[ROUTERS].values())
        return f"{super().describe(opts)} and the routers of {routers} MoE layers"

    def summary(self, opts: TrainOptions) -> dict[str, Any]:
        return {"router_layers": {run: [int(i) for i in np.asarray(v)] for run, v in self.slots[ROUTERS].items()}}

    def model_params(self, base: dict[str, Any]) -> dict[str, Any]:
        return with_router_rows(super().model_params(base), self.weights[ROUTERS], self.slots[ROUTERS])

    def parameter_count(self) -> int:
        return super().parameter_count() + count_trainable(self.weights[ROUTERS])

    def merge(self, params: dict[str, Any]) -> dict[str, Any]:
        return with_router_rows(super().merge(params), self.weights[ROUTERS], self.slots[ROUTERS])

    def write_exports(
        self, cfg: ModelConfig, out_dirs: dict[str, str], settings: dict[str, Any], source: str
    ) -> list[str]:
        _peft_message(self.name)
        return []

    @classmethod
    def matches(cls, weights: dict[str, Any], slots: dict[str, Any]) -> bool:
        return ROUTERS in weights and bool(set(weights) - {ROUTERS, EXTRA})

    @classmethod
    def from_checkpoint(cls, weights: dict[str, Any], slots: dict[str, Any]) -> ExpertsRouters:
        return cls(*_restore(weights, slots))
