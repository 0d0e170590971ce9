"""Atomic artefact writing: temp file in the destination directory, then ``os.replace``.

In a multi-process job only the writer (process 0, :func:`rise_jax.distributed.is_writer`)
writes: on the other processes the writers here return without touching the file system, and a
temp file or directory handed to :func:`publish` / :func:`publish_dir` is removed instead of
renamed (writers that build large artefacts ask ``is_writer`` before building them).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any

from rise_jax.distributed import is_writer


def publish(tmp: str, path: str) -> str:
    """Give a finished temp file the mode a plain ``open`` would (mkstemp makes it 0600), then
    rename it onto ``path`` atomically (removed instead on a process that is not the writer)."""
    if not is_writer():
        os.unlink(tmp)
        return path
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_dir(tmp: str, path: str) -> str:
    """Give a finished temp directory (mkdtemp makes it 0700) and its files the modes a plain
    ``mkdir`` / ``open`` would, then rename it onto ``path`` (replacing an existing one; removed
    instead on a process that is not the writer)."""
    if not is_writer():
        shutil.rmtree(tmp, ignore_errors=True)
        return path
    mask = _umask()
    for dirpath, _, files in os.walk(tmp):
        os.chmod(dirpath, 0o777 & ~mask)
        for name in files:
            os.chmod(os.path.join(dirpath, name), 0o666 & ~mask)
    if os.path.exists(path):
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def temp_dir_beside(path: str) -> str:
    """A fresh temp directory next to ``path`` (``.<name>.tmp-<pid>-*``), after removing those that
    processes no longer running left behind (a killed export leaves tens of GB otherwise)."""
    parent, name = os.path.split(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    prefix = f".{name}.tmp-"
    for entry in os.listdir(parent):
        if entry.startswith(prefix) and not _pid_alive(entry[len(prefix) :].split("-")[0]):
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent)


def _pid_alive(pid: str) -> bool:
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


@contextlib.contextmanager
def _temp_beside(path: str) -> Iterator[str]:
    """A temp file next to ``path`` to fill in the ``with`` block; published onto ``path`` when
    the block ends, removed if it raises."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        yield tmp
        publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str, text: str) -> str:
    if not is_writer():
        return path
    with _temp_beside(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


def copy_atomic(src: str, path: str) -> str:
    """Copy the file ``src`` onto ``path`` atomically (temp file beside ``path``, then rename)."""
    if not is_writer():
        return path
    with _temp_beside(path) as tmp:
        shutil.copyfile(src, tmp)
    return path


def read_json_object(path: str, what: str, error: type[Exception] = ValueError) -> dict[str, Any]:
    """The JSON object in ``path``; anything else (unreadable, not UTF-8, not JSON, not an object)
    raises ``error`` naming the file and ``what`` it should have been."""
    try:
        with open(path, encoding="utf-8") as fh:
            obj = json.load(fh)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:  # JSONDecodeError is a ValueError
        raise error(f"{path}: unreadable {what}: {err}") from err
    if not isinstance(obj, dict):
        raise error(f"{path}: unreadable {what}: expected a JSON object")
    return obj


def write_json_atomic(path: str, obj: Any) -> str:
    return write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_jsonl_atomic(path: str, records: Iterable[Any]) -> str:
    """One JSON value a line (UTF-8, not ASCII-escaped), written atomically."""
    return write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def ensure_writable_dir(path: str) -> str:
    """Create ``path`` if needed and check it is writable; clear error otherwise."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise OSError(f"workdir {path!r} cannot be created: {err}") from err
    if not os.access(path, os.W_OK):
        raise OSError(f"workdir {path!r} is not writable")
    return path
