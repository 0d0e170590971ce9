"""Helpers shared by stages."""

from __future__ import annotations

import ml_collections

from rise_jax.checkpoints.resolve import resolve_checkpoint


def checkpoint_path(config: ml_collections.ConfigDict, workdir: str) -> str:
    """The model checkpoint directory: ``config.model.checkpoint`` (directory or hub id; for the
    demo, the pretrained model that :func:`rise_jax.launch.run` builds in the workdir)."""
    del workdir
    return resolve_checkpoint(config.model.checkpoint)


def tokenizer_for(config: ml_collections.ConfigDict, checkpoint_dir: str):
    """``config.model.tokenizer`` if set, else the checkpoint directory's tokenizer."""
    from rise_jax.tokenizer import load_tokenizer

    return load_tokenizer(config.model.get("tokenizer") or checkpoint_dir)
