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


MAX_HEADER_BYTES = 100_000_000  # as the safetensors library


def _check_entries(path: str, entries: dict[str, Any], data_bytes: int) -> None:
    """Validate the header as the safetensors library does: every entry names a dtype, a shape of
    non-negative ints and ``data_offsets`` [begin, end] whose length matches the shape, inside the
    data section; sorted by offset the entries tile the data section exactly (no gap, no overlap)."""
    spans = []
    for name, e in entries.items():
        where = f"{path}: tensor {name!r}"
        if not isinstance(e, dict) or not {"dtype", "shape", "data_offsets"} <= set(e):
            raise SafetensorsFormatError(f"{where}: header entry needs dtype, shape and data_offsets")
        shape, offsets = e["shape"], e["data_offsets"]
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise SafetensorsFormatError(f"{where}: shape {shape!r} is not a list of non-negative integers")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
            raise SafetensorsFormatError(f"{where}: data_offsets {offsets!r} is not [begin, end]")
        begin, end = offsets
        if not 0 <= begin <= end <= data_bytes:
            raise SafetensorsFormatError(
                f"{where}: data_offsets {offsets} outside the data section of {data_bytes} bytes"
            )
        if not isinstance(e["dtype"], str):
            raise SafetensorsFormatError(f"{where}: dtype {e['dtype']!r} is not a string")
        if e["dtype"] in _DTYPES:
            want = int(np.prod(shape, dtype=np.int64)) * np.dtype(_DTYPES[e["dtype"]]).itemsize
            if end - begin != want:
                raise SafetensorsFormatError(f"{where}: {end - begin} bytes for shape {shape} of {e['dtype']}")
        spans.append((begin, end, name))
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            what = "overlaps the previous tensor" if begin < position else f"leaves a gap at byte {position}"
            raise SafetensorsFormatError(f"{path}: tensor {name!r} (data_offsets [{begin}, {end}]) {what}")
        position = end
    if position != data_bytes:
        raise SafetensorsFormatError(f"{path}: the tensors cover {position} of the {data_bytes} data bytes")


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
            if n > min(size - 8, MAX_HEADER_BYTES):
                raise SafetensorsFormatError(
                    f"{path}: not a safetensors file (header length {n} exceeds the file or {MAX_HEADER_BYTES} bytes)"
                )
            header = json.loads(self._fh.read(n))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
            raise SafetensorsFormatError(f"{path}: cannot read safetensors header: {err}") from err
        if not isinstance(header, dict):
            raise SafetensorsFormatError(f"{path}: safetensors header is not a JSON object")
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict):
            raise SafetensorsFormatError(f"{path}: safetensors __metadata__ is not a JSON object")
        self.metadata: dict[str, Any] = metadata
        self._entries: dict[str, dict[str, Any]] = header
        self._data_start = 8 + n
        _check_entries(path, header, size - 8 - n)
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
    from safetensors import SafetensorError
    from safetensors.numpy import save_file

    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, tmp, metadata=metadata or {"format": "pt"})
    except (SafetensorError, OSError) as err:  # a full disk, a vanished directory
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise OSError(f"{path}: cannot write the safetensors file ({err})") from err
    os.replace(tmp, path)
