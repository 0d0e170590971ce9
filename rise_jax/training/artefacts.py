"""Compact expert checkpoints: only the K trained experts (orbax), plus the selection and config.

Layout of ``<workdir>/train``: ``experts/`` (orbax; ``{"weights": {run: {gate_proj, up_proj,
down_proj}}, "slots": {run: int32 [n, E]}}``), ``selection.json`` (the selection trained),
``train_config.json``, ``summary.json``, ``metrics.jsonl``, ``tensorboard/``, ``checkpoints/``
(resumable training state).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from rise_jax.training.partition import join_trainable, merge_experts, split_trainable


def save_trained_experts(directory: str, trainable: dict[str, Any]) -> str:
    weights, slots = split_trainable(trainable)
    target = os.path.abspath(os.path.join(directory, "experts"))
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(target, {"weights": weights, "slots": slots}, force=True)
    return target


def load_trained_experts(directory: str) -> dict[str, Any]:
    """The trainable tree saved by :func:`save_trained_experts` (``directory`` = ``<workdir>/train``)."""
    target = os.path.abspath(os.path.join(directory, "experts"))
    if not os.path.isdir(target):
        raise FileNotFoundError(f"{target}: no trained experts (run the train stage first)")
    with ocp.StandardCheckpointer() as ckptr:
        tree = ckptr.restore(target)
    slots = {run: np.asarray(s, np.int32) for run, s in tree["slots"].items()}
    return join_trainable(jax.tree_util.tree_map(np.asarray, tree["weights"]), slots)


def apply_trained_experts(params: dict[str, Any], directory: str) -> dict[str, Any]:
    """Base params with the trained experts of ``directory`` merged in (in-process)."""
    return merge_experts(params, load_trained_experts(directory))
