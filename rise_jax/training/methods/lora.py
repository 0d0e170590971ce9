"""``train.method=lora`` (the paper's LoRA baseline): adapters on the dense kernels matching
``train.lora_targets`` (default: attention q/k/v/o), no selection used; with
``train.lora_all_experts`` also inside every expert of every MoE layer (as :mod:`.rise_lora`).

State::

    weights: {"lora_dense": <params-shaped subtree with {lora_a [..., r, in], lora_b [..., out, r]}
                             at each adapted kernel>  (+ the expert adapters' runs)}
    slots:   {"lora_scale": alpha / r  (+ the expert adapters' slot tables)}

The training step places ``lora_a`` and ``scale · lora_b`` beside each adapted kernel, where
:class:`~rise_jax.models.layers.Dense` adds ``B (A dropout(x))`` to ``x W`` (unmerged as in PEFT,
so the adapter dropout ``train.lora_dropout`` acts per token); the merge writes
``W + scale (B A)ᵀ``; the export also writes the adapters as a PEFT adapter (``export/peft``).
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from rise_jax.config_values import comma_list
from rise_jax.models.config import ModelConfig
from rise_jax.models.expert_weights import LORA_A, LORA_B, lora_delta
from rise_jax.models.quantized import QuantizedArray
from rise_jax.training.methods.base import MethodSetup
from rise_jax.training.methods.rise_lora import (
    LORA_SCALE,
    ExpertLoRA,
    check_lora_settings,
    expert_adapters,
    refuse_expert_dropout,
)
from rise_jax.training.options import TrainOptions
from rise_jax.training.partition import as_float32, count_trainable, overlay, path_name

LORA_DENSE = "lora_dense"  # key of the dense-layer adapters in ``weights`` (never a run name)


def dense_adapters(params: dict[str, Any], patterns: list[str], rank: int, seed: int = 0) -> dict[str, Any]:
    """Adapters on every dense kernel whose ``/``-joined path matches one of ``patterns`` — for a
    kernel ``[..., in, out]`` (scanned runs stack ``n`` layers in front) ``lora_a [..., r, in]``
    uniform in ±1/sqrt(in) and ``lora_b [..., out, r]`` zeros (PEFT's init) — as a subtree shaped
    like ``params``. Experts are never targets."""
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    out: dict[str, Any] = {}
    hits = dict.fromkeys(patterns, 0)
    key = jax.random.PRNGKey(seed)
    for keys, leaf in jax.tree_util.tree_flatten_with_path(params, is_leaf=lambda x: isinstance(x, QuantizedArray))[0]:
        path = path_name(keys)
        matched = [p for p in patterns if re.search(p, path)]
        if not matched:
            continue
        if "moe/experts" in path or not path.endswith("kernel"):
            raise ValueError(f"LoRA target pattern(s) {matched} match {path}: dense kernels only (experts: rise_lora)")
        for p in matched:
            hits[p] += 1
        *lead, fan_in, fan_out = leaf.shape
        key, sub = jax.random.split(key)
        bound = 1.0 / np.sqrt(fan_in)
        node = out
        for name in path.split("/"):
            node = node.setdefault(name, {})
        node[LORA_A] = jax.random.uniform(sub, (*lead, rank, fan_in), jnp.float32, -bound, bound)
        node[LORA_B] = jnp.zeros((*lead, fan_out, rank), jnp.float32)
    missing = [p for p, n in hits.items() if n == 0]
    if missing:
        raise ValueError(
            f"LoRA target pattern(s) {missing} match no parameter; paths look like layers/attn/q_proj/kernel"
        )
    return out


def dense_lora_kernels(params: dict[str, Any], adapters: dict[str, Any], scale: Any) -> dict[str, Any]:
    """``W + scale · (B A)ᵀ`` for every kernel with adapters, as a subtree for
    :func:`~rise_jax.training.partition.overlay` (fp32; ``overlay`` casts back to the base dtype)."""
    if LORA_A in adapters:
        return jax.lax.stop_gradient(as_float32(params)) + lora_delta(adapters[LORA_A], adapters[LORA_B], scale)
    return {k: dense_lora_kernels(params[k], sub, scale) for k, sub in adapters.items()}


def with_dense_adapters(params: dict[str, Any], adapters: dict[str, Any], scale: Any) -> dict[str, Any]:
    """``params`` with each adapted layer's ``lora_a`` and ``scale · lora_b`` placed beside its
    ``kernel``, where :class:`~rise_jax.models.layers.Dense` adds ``B (A dropout(x))`` to ``x W``."""
    out = dict(params)
    for key, sub in adapters.items():
        if LORA_A in sub:  # the adapters of out[key] (a kernel): beside it, in its layer
            out[LORA_A], out[LORA_B] = sub[LORA_A], scale * sub[LORA_B]
        else:
            out[key] = with_dense_adapters(params[key], sub, scale)
    return out


class DenseLoRA(ExpertLoRA):
    """Adapters on path-rule dense kernels (and, optionally, inside every expert)."""

    name = "lora"
    dropout: float = struct.field(pytree_node=False, default=0.0)  # train.lora_dropout

    @classmethod
    def validate(cls, opts: TrainOptions, frozen_dtype: str | None) -> None:
        check_lora_settings(opts)
        if opts.lora_all_experts:
            refuse_expert_dropout(opts)

    @classmethod
    def init(
        cls, params: dict[str, Any], patterns: list[str], rank: int, alpha: float, seed: int = 0, dropout: float = 0.0
    ) -> DenseLoRA:
        """Dense adapters (:func:`dense_adapters`) with ``lora_scale`` = alpha / r and the adapter
        input ``dropout`` of training steps."""
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {dropout!r}")
        adapters = dense_adapters(params, patterns, rank, seed)
        return cls({LORA_DENSE: adapters}, {LORA_SCALE: jnp.float32(alpha / rank)}, dropout=dropout)

    @classmethod
    def create(cls, setup: MethodSetup, opts: TrainOptions) -> DenseLoRA:
        method = cls.init(
            setup.params, comma_list(opts.lora_targets), opts.lora_rank, opts.lora_alpha, opts.seed, opts.lora_dropout
        )
        if opts.lora_all_experts:  # ... and inside every expert of every MoE layer
            cfg = setup.cfg
            every = [(layer, e) for layer in range(cfg.num_moe_layers) for e in range(cfg.num_experts)]
            weights, slots = expert_adapters(
                cfg, every, opts.lora_rank, opts.lora_alpha, opts.seed + 1, setup.expert_shards
            )
            method = method.replace(weights={**method.weights, **weights}, slots=slots)
        return method

    def describe(self, opts: TrainOptions) -> str:
        return f"LoRA adapters on {opts.lora_targets}"

    def summary(self, opts: TrainOptions) -> dict[str, Any]:
        lora = super().summary(opts)["lora"]
        lora.update(
            targets=opts.lora_targets, dropout=float(opts.lora_dropout), all_experts=bool(opts.lora_all_experts)
        )
        return {"lora": lora}

    @property
    def adapter_dropout(self) -> float:
        return float(self.dropout)

    def model_params(self, base: dict[str, Any]) -> dict[str, Any]:
        return with_dense_adapters(base, self.weights[LORA_DENSE], self.scale)

    def parameter_count(self) -> int:
        return count_trainable(self.weights[LORA_DENSE]) + super().parameter_count()

    def merge(self, params: dict[str, Any]) -> dict[str, Any]:
        merged = jax.tree_util.tree_map(lambda x: x, params)  # new containers, same leaves
        merged = overlay(merged, dense_lora_kernels(merged, self.weights[LORA_DENSE], float(self.scale)))
        return self.merge_expert_adapters(merged)

    def write_exports(
        self, cfg: ModelConfig, out_dirs: dict[str, str], settings: dict[str, Any], source: str
    ) -> list[str]:
        """The dense adapters as a PEFT adapter directory (``out_dirs["peft"]``)."""
        from rise_jax.checkpoints.peft_export import export_peft_adapter

        export_peft_adapter(
            self.weights[LORA_DENSE],
            cfg,
            out_dirs["peft"],
            settings["lora_rank"],
            settings["lora_alpha"],
            source,
            settings.get("lora_dropout", 0.0),
        )
        return ["peft"]

    @classmethod
    def matches(cls, weights: dict[str, Any], slots: dict[str, Any]) -> bool:
        return LORA_DENSE in weights
