"""Content identity: SHA-256 of files and directory trees, each file hashed once.

A checkpoint of 60 GB is hashed the first time a run sees it (with a progress bar); the digest is
remembered in a small JSON memo keyed by the file's absolute path, size, modification time,
change time and inode, so later runs — and later stages of the same run — reuse it until the file
is rewritten. Change time is part of the key because ``cp -p`` over an existing file keeps its
size, modification time and inode, but not its change time.

The memo lives in ``$RISE_JAX_CACHE`` (default ``$XDG_CACHE_HOME/rise_jax``, else
``~/.cache/rise_jax``) as ``file_hashes.json`` ({"<abs path>": {"key": [size, mtime_ns,
ctime_ns, inode], "sha256": hex}}), written atomically when a pipeline run ends and when the
process exits (entries of files that no longer exist are dropped then); an unreadable memo is
ignored (everything is rehashed), an unwritable cache directory only costs the rehash.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import stat
import threading
from collections.abc import Iterable

from absl import logging

from rise_jax.io_utils import write_json_atomic

_BIG = 1 << 30  # files above this size are hashed with a progress bar
_lock = threading.Lock()
_memo: dict[str, dict] | None = None
_dirty = False


def cache_dir() -> str:
    """Where the hash memo lives (``$RISE_JAX_CACHE`` or the user's cache directory)."""
    if os.environ.get("RISE_JAX_CACHE"):
        return os.environ["RISE_JAX_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "rise_jax")


def _memo_path() -> str:
    return os.path.join(cache_dir(), "file_hashes.json")


def _load_memo() -> dict[str, dict]:
    global _memo
    if _memo is None:
        try:
            with open(_memo_path(), encoding="utf-8") as fh:
                loaded = json.load(fh)
            _memo = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            _memo = {}
    return _memo


def save_memo() -> None:
    """Write the memo if it gained entries (merged with what other processes wrote meanwhile, less
    the files that no longer exist). Called when a pipeline run ends and when the process exits,
    not after every hash: the memo is one file, rewritten whole."""
    global _dirty
    with _lock:
        if not _dirty or _memo is None:
            return
        try:
            with open(_memo_path(), encoding="utf-8") as fh:
                on_disk = json.load(fh)
            merged = {**(on_disk if isinstance(on_disk, dict) else {}), **_memo}
        except (OSError, ValueError):
            merged = dict(_memo)
        merged = {path: entry for path, entry in merged.items() if os.path.exists(path)}
        try:
            write_json_atomic(_memo_path(), merged)
            _dirty = False
        except OSError as err:
            logging.warning(f"could not save the file-hash memo {_memo_path()}: {err}")


def _key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def file_sha256(path: str) -> str:
    """SHA-256 of one regular file's bytes, from the memo when the file is unchanged since."""
    global _dirty
    path = os.path.abspath(path)
    st = os.stat(path)
    key = _key(st)
    with _lock:
        entry = _load_memo().get(path)
        if isinstance(entry, dict) and entry.get("key") == key and isinstance(entry.get("sha256"), str):
            return entry["sha256"]
    digest = hashlib.sha256()
    bar = None
    if st.st_size >= _BIG:
        from tqdm import tqdm

        bar = tqdm(total=st.st_size, unit="B", unit_scale=True, desc=f"hashing {os.path.basename(path)} (once)")
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
            if bar is not None:
                bar.update(len(block))
    if bar is not None:
        bar.close()
    value = digest.hexdigest()
    with _lock:
        _load_memo()[path] = {"key": key, "sha256": value}
        _dirty = True
    return value


def regular_files(root: str, skip: Iterable[str] = ()) -> list[str]:
    """Every regular file under ``root`` (a file: itself), sorted; hidden temp files (``.*.tmp*``),
    non-regular files (FIFOs, sockets) and anything under a path in ``skip`` are left out."""
    skip = tuple(os.path.abspath(s) for s in skip)

    def skipped(p: str) -> bool:
        name, a = os.path.basename(p), os.path.abspath(p)
        temp = name.startswith(".") and ".tmp" in name  # io_utils' temp files and directories
        return temp or any(a == s or a.startswith(s + os.sep) for s in skip)

    if os.path.isfile(root):
        return [root]
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if not skipped(os.path.join(d, x)))
        for name in files:
            p = os.path.join(d, name)
            if skipped(p):
                continue
            try:
                if stat.S_ISREG(os.stat(p).st_mode):
                    out.append(p)
            except OSError:
                continue
    return sorted(out)


def tree_sha256(root: str, skip: Iterable[str] = ()) -> str | None:
    """SHA-256 over the relative names and contents of the regular files at ``root`` (a file or a
    directory tree); None when ``root`` does not exist."""
    if not os.path.exists(root):
        return None
    digest = hashlib.sha256()
    base = root if os.path.isdir(root) else os.path.dirname(root)
    for file in regular_files(root, skip):
        digest.update(f"{os.path.relpath(file, base)}:{file_sha256(file)}\n".encode())
    return digest.hexdigest()


def json_sha256(obj: object) -> str:
    """SHA-256 of a JSON-able value (keys sorted; anything else by its ``str``): a fingerprint."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def paths_sha256(paths: Iterable[str], base: str) -> dict[str, str | None]:
    """``{path relative to base: tree_sha256(path)}`` for each of ``paths``."""
    return {os.path.relpath(p, base): tree_sha256(p) for p in paths}


atexit.register(save_memo)  # hashes made outside a pipeline run (API callers) are kept too
