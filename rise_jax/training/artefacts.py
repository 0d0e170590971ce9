"""Compact expert checkpoints: only the K trained experts (orbax), plus the selection and config.

Layout of ``<workdir>/train``: ``experts/`` (orbax; ``{"weights": {run: {gate_proj, up_proj,
down_proj}}, "slots": {run: int32 [n, E]}}``; for ``train.method=rise_lora`` the weights are
``{run: {proj: {lora_a [K, r, in], lora_b [K, out, r]}}}`` and ``slots`` adds ``lora_scale``; for
``lora`` the weights are ``{"lora_dense": <params-shaped subtree with {lora_a, lora_b} at each
adapted kernel>}`` and ``slots`` = ``{lora_scale}``), ``selection.json`` (the selection trained),
``train_config.json``, ``summary.json``, ``metrics.jsonl``, ``tensorboard/``, ``checkpoints/``
(resumable training state).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from rise_jax.models.expert_weights import LORA_SCALE
from rise_jax.models.transformer import TrainableExperts
from rise_jax.training.partition import merge_experts

# The training directory's own layout (the loop writes the first three, the stage the experts).
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
METRICS = "metrics.jsonl"
EXPERTS = "experts"
TRAIN_STATE_DIRS = (CHECKPOINTS, EXPERTS, TENSORBOARD)  # what a reset removes, with METRICS
TRAIN_STATE_FILES = (METRICS,)


def save_trained_experts(directory: str, trainable: TrainableExperts) -> str:
    target = os.path.abspath(os.path.join(directory, EXPERTS))
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(target, {"weights": trainable.weights, "slots": trainable.slots}, force=True)
    return target


def load_trained_experts(directory: str) -> TrainableExperts:
    """The trainable tree saved by :func:`save_trained_experts` (``directory`` = ``<workdir>/train``)."""
    target = os.path.abspath(os.path.join(directory, EXPERTS))
    if not os.path.isdir(target):
        raise FileNotFoundError(f"{target}: no trained experts (run the train stage first)")
    with ocp.StandardCheckpointer() as ckptr:
        tree = ckptr.restore(target)
    slots = {run: np.asarray(s, np.float32 if run == LORA_SCALE else np.int32) for run, s in tree["slots"].items()}
    return TrainableExperts(jax.tree_util.tree_map(np.asarray, tree["weights"]), slots)


def apply_trained_experts(params: dict[str, Any], directory: str) -> dict[str, Any]:
    """Base params with the trained experts of ``directory`` merged in (in-process)."""
    return merge_experts(params, load_trained_experts(directory))
