"""Resolve a checkpoint argument: a local directory, or a Hugging Face hub id downloaded once."""

from __future__ import annotations

import os

from rise_jax.checkpoints.hf_load import CheckpointError

# Only what the loader reads: no pickled weights, no remote code.
HUB_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "*.txt", "*.jinja"]


def resolve_checkpoint(path_or_id: str, cache_dir: str | None = None) -> str:
    """A local directory is returned as is; ``org/name`` is fetched with ``huggingface_hub``
    (safetensors, configs and tokenizer files only) into its cache."""
    if not path_or_id:
        raise CheckpointError("no checkpoint given (set config.model.checkpoint to a directory or hub id)")
    if os.path.isdir(path_or_id):
        return path_or_id
    check_checkpoint(path_or_id)
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(path_or_id, allow_patterns=HUB_PATTERNS, cache_dir=cache_dir)
    except Exception as err:  # offline, unknown repo, auth: all reported the same way
        raise CheckpointError(
            f"{path_or_id}: not a local directory and the hub download failed ({type(err).__name__}: {err})"
        ) from err


def check_checkpoint(path_or_id: str) -> None:
    """:func:`resolve_checkpoint`'s refusals without fetching anything (for validation): an empty
    argument, or one that is neither a local directory nor shaped like a hub id ``org/name``."""
    if not path_or_id:
        raise CheckpointError("no checkpoint given (set config.model.checkpoint to a directory or hub id)")
    if os.path.isdir(path_or_id):
        return
    looks_like_id = path_or_id.count("/") == 1 and not path_or_id.startswith((".", "/", "~"))
    if not looks_like_id:
        raise CheckpointError(f"{path_or_id}: checkpoint directory does not exist")
