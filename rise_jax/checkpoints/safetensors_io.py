"""Zero-copy, lazy reading of safetensors files into numpy (bf16 included).

``safetensors``' numpy backend cannot return bfloat16 tensors (numpy has no bf16 dtype), and its
flax backend materialises on the default JAX device. We need host arrays in any dtype, sliced
lazily, so this module memory-maps the file and interprets the documented header (8-byte
little-endian length, JSON ``{name: {dtype, shape, data_offsets}}``) with ``ml_dtypes`` for bf16.
Writing uses ``safetensors.numpy.save_file``, which handles ml_dtypes' bf16.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from typing import Any

import ml_dtypes
import numpy as np

from rise_jax.errors import RiseError

_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


class SafetensorsFormatError(RiseError, ValueError):
    """A file that is not a readable safetensors file; the message names it."""


class SafetensorsFile:
    """A memory-mapped safetensors file: ``keys()``, ``shape(k)``, ``get(k)`` (a read-only view)."""

    def __init__(self, path: str):
        self.path = path
        try:
            self._fh = open(path, "rb")
            size = os.fstat(self._fh.fileno()).st_size
            if size < 8:
                raise SafetensorsFormatError(f"{path}: not a safetensors file (only {size} bytes)")
            (n,) = struct.unpack("<Q", self._fh.read(8))
            if n > size - 8:
                raise SafetensorsFormatError(f"{path}: not a safetensors file (header length {n} > file size)")
            header = json.loads(self._fh.read(n))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
            raise SafetensorsFormatError(f"{path}: cannot read safetensors header: {err}") from err
        self.metadata: dict[str, Any] = header.pop("__metadata__", {}) or {}
        self._entries: dict[str, dict[str, Any]] = header
        self._data_start = 8 + n
        self._mmap = mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ) if size > 8 + n else None

    def keys(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._entries[key]["shape"])

    def dtype(self, key: str) -> np.dtype:
        code = self._entries[key]["dtype"]
        if code not in _DTYPES:
            raise SafetensorsFormatError(f"{self.path}: tensor {key!r} has unsupported dtype {code}")
        return np.dtype(_DTYPES[code])

    def get(self, key: str) -> np.ndarray:
        """The tensor as a read-only numpy view of the mapped file (no copy)."""
        entry = self._entries[key]
        dtype = self.dtype(key)
        begin, end = entry["data_offsets"]
        count = int(np.prod(entry["shape"], dtype=np.int64))
        if end - begin != count * dtype.itemsize:
            raise SafetensorsFormatError(f"{self.path}: tensor {key!r} byte range does not match its shape")
        if count == 0:
            return np.zeros(entry["shape"], dtype)
        arr = np.frombuffer(self._mmap, dtype=dtype, count=count, offset=self._data_start + begin)
        return arr.reshape(entry["shape"])

    def close(self) -> None:
        if self._mmap is not None:
            self._mmap.close()
        self._fh.close()


def save_safetensors(tensors: dict[str, np.ndarray], path: str, metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` to ``path`` atomically (temp file in the same directory, then rename)."""
    from safetensors.numpy import save_file

    tmp = f"{path}.tmp-{os.getpid()}"
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, tmp, metadata=metadata or {"format": "pt"})
    os.replace(tmp, path)
