"""Helpers shared by stages (stages never import each other; what two of them need lives here;
building the configured model is :mod:`rise_jax.stages.build`'s)."""

from __future__ import annotations

import hashlib
import os

import ml_collections

from rise_jax.checkpoints.resolve import resolve_checkpoint
from rise_jax.config_values import comma_list
from rise_jax.content_hash import file_sha256, tree_sha256
from rise_jax.errors import SettingError
from rise_jax.workdir import Workdir
from rise_jax.zones import DEFAULT_RATIOS, check_ratios


def checkpoint_path(config: ml_collections.ConfigDict) -> str:
    """The model checkpoint directory: ``config.model.checkpoint`` (directory or hub id; for the
    demo and the testbed, a checkpoint the ``pretrain`` stage wrote in the workdir)."""
    return resolve_checkpoint(config.model.checkpoint)


# The files of a checkpoint directory that define the model and its tokenizer (README, images,
# original/ consolidated PyTorch weights and the like are not part of its identity).
_CHECKPOINT_FILES = (".json", ".safetensors", ".model", ".txt", ".jinja", ".tiktoken")


def _checkpoint_files_sha256(path: str) -> str:
    """SHA-256 over the names and contents of the model and tokenizer files directly in ``path``."""
    digest = hashlib.sha256()
    names = sorted(n for n in os.listdir(path) if n.endswith(_CHECKPOINT_FILES) and not n.startswith("."))
    for name in names:
        file = os.path.join(path, name)
        if os.path.isfile(file):
            digest.update(f"{name}:{file_sha256(file)}\n".encode())
    return digest.hexdigest()


def checkpoint_identity(config: ml_collections.ConfigDict, wd: Workdir | None = None) -> dict[str, str]:
    """What identifies the model beyond its path: a SHA-256 of the content of the checkpoint's
    weights, config and tokenizer files (and of ``config.model.tokenizer`` when set), so artefacts
    made from other weights or another tokenizer at the same path are recognised as stale. Each
    file is hashed once (:mod:`rise_jax.content_hash` remembers it until the file changes). A hub id
    (not a local directory) is identified by the id."""
    del wd  # the checkpoint may live in the workdir (pretrain's): its own files are its identity
    path = config.model.checkpoint
    if not os.path.isdir(path):
        return {"checkpoint": path}
    out = {"checkpoint": os.path.abspath(path), "checkpoint_sha256": _checkpoint_files_sha256(path)}
    tokenizer = config.model.get("tokenizer") or ""
    if tokenizer and os.path.isdir(tokenizer):
        out["tokenizer_sha256"] = _checkpoint_files_sha256(tokenizer)
    elif tokenizer and os.path.isfile(tokenizer):
        out["tokenizer_sha256"] = file_sha256(tokenizer)
    return out


def files_identity(path: str, wd: Workdir | None = None) -> str | None:
    """A SHA-256 over the names and contents of the regular files at ``path`` (a file or a
    directory tree; a path with ``{lang}``-style placeholders stands for its directory), leaving
    out the workdir ``wd`` when it lies inside (a run's own artefacts are not its data), so an
    artefact made from data that changed since is recognised as stale while a rewritten identical
    file is not; None when ``path`` is not local (a hub dataset id is identified by the config)."""
    if "{" in (path or ""):
        path = os.path.dirname(path.split("{")[0])
    if not path or not os.path.exists(path):
        return None
    return tree_sha256(path, skip=(wd.root,) if wd is not None else ())


def checkpoint_pending(config: ml_collections.ConfigDict) -> bool:
    """Whether this run pretrains its model (``pretrain`` in ``config.stages``): the checkpoint and
    the corpus it names are then written by that stage, after validation, and are not looked for."""
    return "pretrain" in comma_list(config.stages)


def check_model_inputs(config: ml_collections.ConfigDict, tokenizer: bool = True) -> None:
    """The checks every stage that builds the model makes in ``validate``: the mesh against the
    visible devices, the checkpoint (before its data: a wrong path is the first thing to say; one
    the ``pretrain`` stage of this run writes is not there yet: :func:`checkpoint_pending`) and,
    with ``tokenizer``, that the tokenizer loads and fits the checkpoint's vocabulary."""
    from rise_jax.checkpoints.resolve import check_checkpoint
    from rise_jax.sharding import check_mesh
    from rise_jax.tokenizer import check_config_tokenizer

    check_mesh(config.mesh.data, config.mesh.model, config.mesh.expert_parallel)
    if checkpoint_pending(config):
        return
    check_checkpoint(config.model.checkpoint)
    if tokenizer:
        check_config_tokenizer(config.model)


def replayed_reference(config: ml_collections.ConfigDict, error: type[Exception], why: str) -> str:
    """``config.analyze.reference`` as a language code, refused with ``error`` (saying ``why`` it
    must be replayed) when it is not among the non-empty ``config.data.languages``."""
    from rise_jax.data.languages import language_field, parse_languages

    languages = parse_languages(config.data.languages, "config.data.languages", allow_empty=False)
    reference = language_field(config.analyze.reference, "config.analyze.reference")
    if reference not in languages:
        raise error(
            f"config.analyze.reference = {config.analyze.reference!r} is not among config.data.languages "
            f"({', '.join(languages)}): {why}"
        )
    return reference


def zone_ratios(select: ml_collections.ConfigDict) -> tuple[float, float]:
    """``config.select.zone_ratios`` (shallow, middle fractions), checked; default (0.375, 0.25)."""
    try:
        return check_ratios(tuple(select.get("zone_ratios", DEFAULT_RATIOS)))
    except (TypeError, ValueError) as err:
        raise SettingError(f"config.select.zone_ratios: {err}") from err


def tokenizer_for(config: ml_collections.ConfigDict, checkpoint_dir: str):
    """``config.model.tokenizer`` if set, else the checkpoint directory's tokenizer."""
    from rise_jax.tokenizer import load_tokenizer

    return load_tokenizer(config.model.get("tokenizer") or checkpoint_dir)
