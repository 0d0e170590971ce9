"""Atomic artefact writing: temp file in the destination directory, then ``os.replace``."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any


def publish(tmp: str, path: str) -> str:
    """Give a finished temp file the mode a plain ``open`` would (mkstemp makes it 0600), then
    rename it onto ``path`` atomically."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    os.replace(tmp, path)
    return path


def write_text_atomic(path: str, text: str) -> str:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json_atomic(path: str, obj: Any) -> str:
    return write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def ensure_writable_dir(path: str) -> str:
    """Create ``path`` if needed and check it is writable; clear error otherwise."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise OSError(f"workdir {path!r} cannot be created: {err}") from err
    if not os.access(path, os.W_OK):
        raise OSError(f"workdir {path!r} is not writable")
    return path
