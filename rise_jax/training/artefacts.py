"""Compact checkpoints of what trained (orbax), plus the selection and config.

Layout of ``<workdir>/train``: ``experts/`` (orbax; the training method's two fields as
``{"weights": ..., "slots": ...}``, each method's module in :mod:`rise_jax.training.methods`
documents its trees: ``experts`` ``{run: {gate_proj, up_proj, down_proj}}`` + ``{run: int32
[n, E]}``; ``rise_lora`` ``{run: {proj: {lora_a [K, r, in], lora_b [K, out, r]}}}`` + the slot
tables and ``lora_scale``; ``lora`` ``{"lora_dense": <params-shaped subtree with {lora_a, lora_b}
at each adapted kernel>}`` + ``{lora_scale}``; the checkpoint holds no method name: the method
whose trees these are reads it back), ``selection.json`` (the selection trained),
``train_config.json``, ``summary.json``, ``metrics.jsonl``, ``tensorboard/``, ``checkpoints/``
(resumable training state).
"""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp

from rise_jax.training.methods import from_checkpoint
from rise_jax.training.methods.base import TrainingMethod

# The training directory's own layout (the loop writes the first three, the stage the experts).
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
METRICS = "metrics.jsonl"
EXPERTS = "experts"
TRAIN_STATE_DIRS = (CHECKPOINTS, EXPERTS, TENSORBOARD)  # what a reset removes, with METRICS
TRAIN_STATE_FILES = (METRICS,)


def save_trained_experts(directory: str, trainable: TrainingMethod) -> str:
    target = os.path.abspath(os.path.join(directory, EXPERTS))
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(target, {"weights": trainable.weights, "slots": trainable.slots}, force=True)
    return target


def load_trained_experts(directory: str) -> TrainingMethod:
    """The training method saved by :func:`save_trained_experts` (``directory`` = ``<workdir>/train``)."""
    target = os.path.abspath(os.path.join(directory, EXPERTS))
    if not os.path.isdir(target):
        raise FileNotFoundError(f"{target}: no trained experts (run the train stage first)")
    with ocp.StandardCheckpointer() as ckptr:
        tree = ckptr.restore(target)
    return from_checkpoint(tree["weights"], tree["slots"])


def apply_trained_experts(params: dict[str, Any], directory: str) -> dict[str, Any]:
    """Base params with the trained experts of ``directory`` merged in (in-process)."""
    return load_trained_experts(directory).merge(params)
