"""Helpers shared by stages."""

from __future__ import annotations

import os

import ml_collections

from rise_jax.checkpoints.resolve import resolve_checkpoint


def checkpoint_path(config: ml_collections.ConfigDict, workdir: str) -> str:
    """The model checkpoint directory: ``config.model.checkpoint`` (directory or hub id), or for
    the demo (``config.model.demo``) a small model written once to ``<workdir>/demo_checkpoint``."""
    if config.model.get("demo", False):
        from rise_jax.demo_model import build_random_checkpoint

        return build_random_checkpoint(os.path.join(workdir, "demo_checkpoint"), seed=config.get("seed", 0))
    return resolve_checkpoint(config.model.checkpoint)


def tokenizer_for(config: ml_collections.ConfigDict, checkpoint_dir: str):
    """``config.model.tokenizer`` if set, else the checkpoint directory's tokenizer."""
    from rise_jax.tokenizer import load_tokenizer

    return load_tokenizer(config.model.get("tokenizer") or checkpoint_dir)
