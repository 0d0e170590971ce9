"""The base class of a training method: one object that owns what trains and how.

A method (``train.method``) is a ``flax.struct`` pytree with two fields, kept apart from creation
on: ``weights`` (what is differentiated and optimised, fp32) and ``slots`` (bookkeeping, never
differentiated: slot tables ``[n, E]`` int32, scalars). Its class says, in one place, what the
model sees (:meth:`model_params`, :meth:`expert_override`, :attr:`adapter_dropout`), how it is
optimised (:meth:`optimizer`), how it merges into the base (:meth:`merge`), what else it exports
(:meth:`write_exports`) and how its checkpoint reads back (:meth:`from_checkpoint`). The steps,
the loop, the artefacts and the stages ask the object, never the keys of its dicts.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar

import jax
import numpy as np
import optax
from flax import struct

from rise_jax.models.config import ModelConfig
from rise_jax.training.options import TrainOptions
from rise_jax.training.partition import count_trainable


@dataclasses.dataclass(frozen=True, eq=False)
class MethodSetup:
    """What a method may build its trainable state from (the train stage fills it in)."""

    params: Any  # the loaded (possibly quantized) base params
    cfg: ModelConfig
    experts: list[tuple[int, int]]  # the selection's (MoE layer, expert)
    checkpoint: str = ""  # the source checkpoint directory
    frozen_quantized: bool = False  # base weights stored int8 / fp8: experts train from the originals
    expert_shards: int = 1  # devices owning the experts (trainable rows grouped by owner)
    router_layers: tuple[int, ...] = ()  # MoE layers whose routers train (train.method=routers, experts+routers)


class TrainingMethod(struct.PyTreeNode, metaclass=abc.ABCMeta):
    """One training method's trainable state (see the module docstring). Subclasses set ``name``,
    implement the abstract :meth:`create`, :meth:`merge` and :meth:`matches`, and override the
    rest where they differ; :data:`rise_jax.training.methods.METHODS` lists them under their name."""

    weights: dict[str, Any]
    slots: dict[str, Any]

    name: ClassVar[str] = ""
    trains_routers: ClassVar[bool] = False  # reads MethodSetup.router_layers (train.router_layers)

    # --- creation and configuration ----------------------------------------------------------

    @classmethod
    def validate(cls, opts: TrainOptions, frozen_dtype: str | None) -> None:
        """Raise :class:`~rise_jax.errors.SettingError` for settings this method cannot train with
        (``frozen_dtype``: the quantized storage of the frozen weights, or None)."""

    @classmethod
    @abc.abstractmethod
    def create(cls, setup: MethodSetup, opts: TrainOptions) -> TrainingMethod:
        """The initial trainable state for the configured ``opts``."""

    def describe(self, opts: TrainOptions) -> str:
        """What trains, for the log line (``training <this> (<method>, N parameters)``)."""
        return "the trainable weights"

    def summary(self, opts: TrainOptions) -> dict[str, Any]:
        """Entries the train stage adds to ``train/summary.json`` (settings the report names)."""
        return {}

    # --- what the model sees -------------------------------------------------------------------

    @property
    def adapter_dropout(self) -> float:
        """Dropout on the input of dense-layer LoRA adapters (training steps only)."""
        return 0.0

    def model_params(self, base: dict[str, Any]) -> dict[str, Any]:
        """The params the training forward pass runs with (``base`` unless the method changes
        non-expert leaves)."""
        return base

    def expert_override(self, run: str) -> tuple[Any, Any] | None:
        """(slot table ``[n, E]``, the run's override source) or None (the run's experts frozen)."""
        return None

    def expert_tables(self) -> dict[str, tuple[np.ndarray, int]]:
        """Run -> (slot table, trainable rows) of every run with trainable experts (the
        expert-parallel step checks their owner-grouped layout)."""
        return {}

    # --- optimisation, merge, export, checkpoint -----------------------------------------------

    def optimizer(self, opts: TrainOptions, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
        """(optimiser over ``weights``, learning-rate schedule)."""
        from rise_jax.training.step import make_optimizer

        return make_optimizer(
            opts.lr, total_steps, opts.warmup_ratio, opts.b1, opts.b2, opts.eps, opts.weight_decay, opts.clip_norm
        )

    def parameter_count(self) -> int:
        """Trained values (rows no expert uses are not counted)."""
        return count_trainable(self.weights)

    @abc.abstractmethod
    def merge(self, params: dict[str, Any]) -> dict[str, Any]:
        """Base params with the trained weights written in (cast to the base dtype)."""

    def write_exports(
        self, cfg: ModelConfig, out_dirs: dict[str, str], settings: dict[str, Any], source: str
    ) -> list[str]:
        """Artefacts beyond the merged HF checkpoint (e.g. a PEFT adapter) into ``out_dirs``
        (kind -> directory); returns the kinds written. ``settings``: the train config it trained with."""
        return []

    @classmethod
    @abc.abstractmethod
    def matches(cls, weights: dict[str, Any], slots: dict[str, Any]) -> bool:
        """Whether a saved ``{weights, slots}`` tree is this method's (checkpoints hold no name)."""

    @classmethod
    def from_checkpoint(cls, weights: dict[str, Any], slots: dict[str, Any]) -> TrainingMethod:
        """The method from its restored checkpoint tree (numpy arrays; slot tables int32)."""
        return cls(jax.tree_util.tree_map(np.asarray, weights), {k: np.asarray(v, np.int32) for k, v in slots.items()})


def count_rows(entry: Any, table: Any) -> int:
    """Values of the rows of ``entry`` (``[K, ...]`` leaves) that a selected expert of ``table`` uses."""
    rows = int((np.asarray(table) >= 0).sum())
    return int(sum(rows * int(np.prod(x.shape[1:])) for x in jax.tree_util.tree_leaves(entry)))
