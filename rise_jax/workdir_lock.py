"""One run per workdir: an exclusive lock held for the whole run.

``<workdir>/.rise/lock`` is locked with ``flock`` (the kernel drops the lock when its process
dies, however it dies) and holds who has it: ``{"pid", "host", "started", "argv"}``. A second
launch on the same workdir refuses in one line naming the holder. A lock file that names a process
which no longer holds the lock (killed, or crashed) is taken over with a message saying whose it
was. The file is never deleted (deleting a locked file lets two processes lock two different
files); it is emptied on release.

Re-entrant within one process (a caller may hold it around the pipeline, which takes it again), and in a multi-process job only process 0 takes it, once for the whole job.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator

from absl import logging

from rise_jax.distributed import is_writer
from rise_jax.errors import RiseError

_held: dict[str, tuple[int, int]] = {}  # realpath of the lock file -> (fd, depth)


class WorkdirBusy(RiseError, RuntimeError):
    """Another run holds the workdir's lock."""


def lock_path(workdir: str) -> str:
    return os.path.join(workdir, ".rise", "lock")


def _holder(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 1 << 16)
    try:
        info = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (UnicodeDecodeError, ValueError):
        info = {}
    return info if isinstance(info, dict) else {}


def _describe(info: dict) -> str:
    if not info:
        return "another process"
    return f"process {info.get('pid', '?')} on host {info.get('host', '?')} (started {info.get('started', '?')})"


@contextlib.contextmanager
def hold_workdir(workdir: str) -> Iterator[None]:
    """Hold ``workdir``'s lock for the ``with`` block; :class:`WorkdirBusy` if another run has it."""
    if not is_writer():  # a multi-process job: process 0 alone locks (rise_jax.distributed)
        yield
        return
    os.makedirs(os.path.join(workdir, ".rise"), exist_ok=True)
    path = os.path.realpath(lock_path(workdir))
    if path in _held:
        fd, depth = _held[path]
        _held[path] = (fd, depth + 1)
        try:
            yield
        finally:
            _held[path] = (fd, _held[path][1] - 1)
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        info = _holder(fd)
        os.close(fd)
        raise WorkdirBusy(
            f"workdir {workdir} is in use by {_describe(info)}; wait for it to finish or use another "
            f"--workdir (the lock is {path})"
        ) from None
    try:
        stale = _holder(fd)
        if stale:
            logging.warning(f"taking over the lock of {_describe(stale)}, which no longer runs in {workdir}")
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "argv": sys.argv,
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(me) + "\n").encode())
        os.fsync(fd)
        _held[path] = (fd, 1)
        yield
    finally:
        _held.pop(path, None)
        try:
            os.ftruncate(fd, 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
