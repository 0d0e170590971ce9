"""Training methods (``config.train.method``), one class each, registered by name.

A method owns its trainable state (a ``flax.struct`` pytree: ``weights`` + ``slots``), what the
model sees of it, its optimiser, its merge into the base, its extra exports and how its
checkpoint reads back (:class:`~rise_jax.training.methods.base.TrainingMethod`). A new method is
one new module here with a subclass, listed in :data:`METHODS` (docs/ARCHITECTURE.md, "A training
method").
"""

from __future__ import annotations

from typing import Any

from rise_jax.errors import SettingError
from rise_jax.training.methods.base import MethodSetup, TrainingMethod
from rise_jax.training.methods.experts import FullExperts
from rise_jax.training.methods.lora import DenseLoRA
from rise_jax.training.methods.rise_lora import ExpertLoRA
from rise_jax.training.methods.routers import ExpertsRouters, Routers

METHODS: dict[str, type[TrainingMethod]] = {
    cls.name: cls for cls in (FullExperts, ExpertLoRA, DenseLoRA, Routers, ExpertsRouters)
}


def get_method(name: str) -> type[TrainingMethod]:
    """The class registered as ``name`` (``config.train.method``); the error names the choices."""
    if name not in METHODS:
        raise SettingError(f"config.train.method = {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def from_checkpoint(weights: dict[str, Any], slots: dict[str, Any]) -> TrainingMethod:
    """The method whose saved ``{weights, slots}`` tree this is (:meth:`TrainingMethod.matches`)."""
    found = [cls for cls in METHODS.values() if cls.matches(weights, slots)]
    if len(found) != 1:
        raise ValueError(f"trained weights of no single known method (matches: {[c.name for c in found]})")
    return found[0].from_checkpoint(weights, slots)


__all__ = [
    "METHODS",
    "DenseLoRA",
    "ExpertLoRA",
    "ExpertsRouters",
    "FullExperts",
    "MethodSetup",
    "Routers",
    "TrainingMethod",
    "from_checkpoint",
    "get_method",
]
