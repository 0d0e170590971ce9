"""Helpers shared by stages (stages never import each other; what two of them need lives here;
building the configured model is :mod:`rise_jax.stages.build`'s)."""

from __future__ import annotations

import functools
import hashlib
import os

import ml_collections

from rise_jax.checkpoints.resolve import resolve_checkpoint
from rise_jax.errors import SettingError
from rise_jax.zones import DEFAULT_RATIOS, check_ratios


def checkpoint_path(config: ml_collections.ConfigDict) -> str:
    """The model checkpoint directory: ``config.model.checkpoint`` (directory or hub id; for the
    demo, the pretrained model that :func:`rise_jax.launch.run` builds in the workdir)."""
    return resolve_checkpoint(config.model.checkpoint)


def checkpoint_identity(config: ml_collections.ConfigDict) -> dict[str, str]:
    """What identifies ``config.model.checkpoint`` beyond its path: a SHA-256 of its ``config.json``,
    its index (or the names and sizes of its safetensors files), so artefacts made from another
    checkpoint at the same path are recognised as stale. A hub id (not a local directory) is
    identified by the id."""
    path = config.model.checkpoint
    if not os.path.isdir(path):
        return {"checkpoint": path}
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors.index.json"):
        file = os.path.join(path, name)
        if os.path.isfile(file):
            with open(file, "rb") as fh:
                digest.update(name.encode() + b"\0" + fh.read())
    for name in sorted(os.listdir(path)):
        if name.endswith(".safetensors"):
            digest.update(f"{name}:{os.path.getsize(os.path.join(path, name))}".encode())
    return {"checkpoint": os.path.abspath(path), "checkpoint_sha256": digest.hexdigest()}


@functools.lru_cache(maxsize=65536)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """Content hash of one file (memoised on its size and modification time)."""
    del size, mtime_ns  # part of the cache key only
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def files_identity(path: str) -> str | None:
    """A SHA-256 over the names and contents of the files at ``path`` (a file or a directory tree;
    a path with ``{lang}``-style placeholders stands for its directory), so an artefact made from
    data that changed since is recognised as stale while a rewritten identical file is not; None
    when ``path`` is not local (a hub dataset id is identified by the config itself)."""
    if "{" in (path or ""):
        path = os.path.dirname(path.split("{")[0])
    if not path or not os.path.exists(path):
        return None
    digest = hashlib.sha256()
    files = [path] if os.path.isfile(path) else sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs)
    for file in files:
        st = os.stat(file)
        digest.update(f"{os.path.relpath(file, path)}:{_file_sha256(file, st.st_size, st.st_mtime_ns)}\n".encode())
    return digest.hexdigest()


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
