"""Load an HF checkpoint directory (config.json + safetensors) into a params pytree.

Reads tensor by tensor from memory-mapped safetensors straight into each destination array
(``jax.make_array_from_callback``: a device's block is assembled from only the tensors it covers),
so the weights are never held twice: the peak host overhead is one leaf (or one shard of it).
Accepts one or many safetensors files (with or without ``model.safetensors.index.json``) and
experts stored per expert (hub layout) or fused per layer, the fused ones also as MXFP4
``*_blocks``/``*_scales`` pairs (GPT-OSS hub checkpoints; dequantised tensor by tensor,
:mod:`rise_jax.checkpoints.mxfp4`). Every problem raises
:class:`CheckpointError` naming the file and tensor.
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from rise_jax.checkpoints import mxfp4
from rise_jax.checkpoints.hf_layout import LeafSpec, leaf_specs
from rise_jax.checkpoints.safetensors_io import SafetensorsFile, SafetensorsFormatError
from rise_jax.errors import RiseError
from rise_jax.io_utils import read_json_object
from rise_jax.models.config import ConfigError, ModelConfig
from rise_jax.models.families import config_from_hf_dict, get_family
from rise_jax.models.quantized import DEFAULT_GROUPS, QuantizedArray, check_backend, is_quantizable, quantize

# Tensors a checkpoint may carry that the model does not use.
_IGNORED = (re.compile(r".*\.rotary_emb\.inv_freq$"),)


_LAYER = re.compile(r"model\.layers\.(\d+)\.")


def mtp_layers(raw: dict[str, Any]) -> int:
    """How many multi-token-prediction layers ``config.json`` declares after the decoder's last
    (DeepSeek-V3 and GLM-4.5 publish them as ``model.layers.{num_hidden_layers + j}``; the hubs
    spell the count ``num_nextn_predict_layers``, transformers 5 writes ``num_mtp_layers``)."""
    for key in ("num_mtp_layers", "num_nextn_predict_layers"):
        value = raw.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 0


def _mtp_tensor(name: str, num_layers: int, num_mtp: int) -> bool:
    """A tensor of a multi-token-prediction layer, ``model.layers.{i}`` with ``num_hidden_layers <=
    i < num_hidden_layers + num_mtp``: not part of the causal LM (transformers loads them into a
    separate draft model), so they are skipped. A layer beyond those is an unexpected tensor, so a
    ``config.json`` that undercounts its layers is refused rather than silently truncated."""
    m = _LAYER.match(name)
    return m is not None and num_layers <= int(m.group(1)) < num_layers + num_mtp


class CheckpointError(RiseError, ValueError):
    """A checkpoint directory that cannot be loaded; the message names the file and tensor."""


class HFCheckpoint(NamedTuple):
    """What :func:`load_hf_checkpoint` returns."""

    config: ModelConfig
    params: dict[str, Any]
    hf_config: dict[str, Any]  # config.json as read, to write back on export
    path: str


def read_hf_config(path: str) -> tuple[ModelConfig, dict[str, Any]]:
    """Parse ``<path>/config.json``; errors name the file."""
    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: checkpoint directory does not exist")
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise CheckpointError(f"{cfg_path}: missing (an HF checkpoint directory needs config.json)")
    raw = read_json_object(cfg_path, "config", CheckpointError)
    try:
        return config_from_hf_dict(raw, source=cfg_path), raw
    except ConfigError as err:
        raise CheckpointError(str(err)) from err


class TensorIndex:
    """Name -> open :class:`SafetensorsFile` over every weight file of a checkpoint directory."""

    def __init__(self, path: str):
        self.path = path
        index_path = os.path.join(path, "model.safetensors.index.json")
        if os.path.isfile(index_path):
            try:
                with open(index_path, encoding="utf-8") as fh:
                    weight_map = json.load(fh)["weight_map"]
            except (OSError, KeyError, TypeError, json.JSONDecodeError) as err:
                raise CheckpointError(f"{index_path}: unreadable index: {err}") from err
            if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
                raise CheckpointError(f"{index_path}: unreadable index: weight_map must map tensor names to file names")
            files = sorted(set(weight_map.values()))
            root = os.path.realpath(path)
            for f in files:
                if os.path.commonpath([root, os.path.realpath(os.path.join(path, f))]) != root:
                    raise CheckpointError(f"{index_path}: weight file {f!r} lies outside the checkpoint directory")
                if not os.path.isfile(os.path.join(path, f)):
                    raise CheckpointError(f"{os.path.join(path, f)}: missing (listed in {index_path})")
        else:
            files = sorted(os.path.basename(f) for f in glob.glob(os.path.join(path, "*.safetensors")))
        if not files:
            pickled = [
                os.path.basename(f)
                for pat in ("*.bin", "*.pt", "*.pth", "*.ckpt")
                for f in glob.glob(os.path.join(path, pat))
            ]
            if pickled:
                raise CheckpointError(
                    f"{path}: only pickled weights ({', '.join(sorted(pickled))}); rise_jax reads safetensors only "
                    "and never unpickles checkpoint files. Convert once with transformers: "
                    "`AutoModelForCausalLM.from_pretrained(dir).save_pretrained(new_dir)` (writes safetensors)."
                )
            raise CheckpointError(f"{path}: no *.safetensors weight files found")
        self.files: dict[str, SafetensorsFile] = {}
        self.owner: dict[str, str] = {}
        for f in files:
            full = os.path.join(path, f)
            try:
                st = SafetensorsFile(full)
            except SafetensorsFormatError as err:
                raise CheckpointError(str(err)) from err
            self.files[full] = st
            for k in st.keys():
                if k in self.owner:
                    raise CheckpointError(f"{full}: tensor {k!r} also present in {self.owner[k]}")
                self.owner[k] = full

        for name in self.owner:
            if name.endswith(mxfp4.BLOCKS_SUFFIX):
                base = name[: -len(mxfp4.BLOCKS_SUFFIX)]
                if base + mxfp4.SCALES_SUFFIX not in self.owner:
                    raise CheckpointError(
                        f"{self.owner[name]}: MXFP4 tensor {name!r} has no {base + mxfp4.SCALES_SUFFIX!r} "
                        f"(searched {len(self.files)} file(s))"
                    )
        self._dequantized: tuple[str, np.ndarray] | None = None  # the last MXFP4 tensor read

    def _mxfp4(self, name: str) -> tuple[str, str] | None:
        """(blocks, scales) names when ``name`` is stored as an MXFP4 pair instead of itself."""
        if name in self.owner:
            return None
        blocks, scales = name + mxfp4.BLOCKS_SUFFIX, name + mxfp4.SCALES_SUFFIX
        return (blocks, scales) if blocks in self.owner and scales in self.owner else None

    def __contains__(self, name: str) -> bool:
        return name in self.owner or self._mxfp4(name) is not None

    def stored_names(self, name: str) -> tuple[str, ...]:
        """The tensors actually stored for ``name`` (itself, or its MXFP4 blocks and scales)."""
        return self._mxfp4(name) or (name,)

    def shape(self, name: str) -> tuple[int, ...]:
        pair = self._mxfp4(name)
        if pair is None:
            return self.files[self.owner[name]].shape(name)
        return mxfp4.dequantized_shape(self.files[self.owner[pair[0]]].shape(pair[0]))

    def get(self, name: str) -> np.ndarray:
        pair = self._mxfp4(name)
        if pair is None:
            return self.files[self.owner[name]].get(name)
        if self._dequantized is None or self._dequantized[0] != name:  # gate and up read the same tensor
            blocks, scales = (self.files[self.owner[n]].get(n) for n in pair)
            try:
                self._dequantized = (name, mxfp4.dequantize(blocks, scales))
            except ValueError as err:
                raise CheckpointError(f"{self.owner[pair[0]]}: tensor {pair[0]!r}: {err}") from err
        return self._dequantized[1]

    def where(self, name: str) -> str:
        return self.owner.get(name) or self.owner.get(name + mxfp4.BLOCKS_SUFFIX, self.path)

    def close(self) -> None:
        for f in self.files.values():
            f.close()


def _fmt(name: str, layer: int | None = None, expert: int | None = None) -> str:
    return name.replace("{l}", str(layer)).replace("{e}", str(expert))


class _LeafReader:
    """Resolves one leaf's sources (checking names and shapes) and reads arbitrary blocks of it."""

    def __init__(self, spec: LeafSpec, tensors: TensorIndex, cfg: ModelConfig, used: set[str]):
        self.spec, self.t = spec, tensors
        self.sources: list[Any] = []  # per stacked layer: hub names / fused name / single name
        if spec.layers is None:
            self.sources = [self._check(spec.hf_name, spec.hf_shape(), used)]
            return
        for layer in spec.layers:
            if not spec.per_expert:
                name = _fmt(spec.hf_name, layer)
                if name not in tensors and spec.alt_name is not None and _fmt(spec.alt_name, layer) in tensors:
                    name = _fmt(spec.alt_name, layer)
                self.sources.append(self._check(name, spec.hf_shape(), used))
                continue
            hub = None if spec.hf_name is None else [_fmt(spec.hf_name, layer, e) for e in range(cfg.num_experts)]
            fused = _fmt(spec.fused.name, layer)
            if hub is None or (hub[0] not in tensors and fused in tensors):
                self.sources.append(("fused", self._check(fused, (cfg.num_experts, *spec.fused.shape), used)))
            else:
                self.sources.append(("hub", [self._check(n, spec.hf_shape(), used) for n in hub]))

    def _check(self, name: str, shape: tuple[int, ...], used: set[str]) -> str:
        if name not in self.t:
            raise CheckpointError(f"{self.t.path}: missing tensor {name!r} (searched {len(self.t.files)} file(s))")
        got = self.t.shape(name)
        if got != tuple(shape):
            raise CheckpointError(
                f"{self.t.where(name)}: tensor {name!r} has shape {list(got)}, expected {list(shape)}"
            )
        used.update(self.t.stored_names(name))
        return name

    def _hf(self, name: str) -> np.ndarray:
        a = self.t.get(name)
        return a.T if self.spec.transpose else a

    def read(self, index: tuple[slice, ...], dtype: np.dtype) -> np.ndarray:
        """Block ``index`` of the leaf in ``dtype``; a NaN or infinity in it is an error naming the
        checkpoint tensor (one pass over what is read anyway: weights are never trusted silently)."""
        out = self._read(index, dtype)
        if jnp.issubdtype(out.dtype, jnp.floating) and not np.isfinite(out).all():
            raise CheckpointError(f"{self._non_finite_tensor()}: non-finite values (NaN or inf) in the weights")
        return out

    def _source_names(self) -> list[str]:
        names = []
        for src in self.sources:
            if isinstance(src, str):
                names.append(src)
            else:
                names.extend([src[1]] if src[0] == "fused" else src[1])
        return names

    def _non_finite_tensor(self) -> str:
        """``<file>: tensor '<name>'`` of the first source tensor holding a NaN or infinity."""
        for name in self._source_names():
            a = self.t.get(name)
            if jnp.issubdtype(a.dtype, jnp.floating) and not np.isfinite(a).all():
                return f"{self.t.where(name)}: tensor {name!r}"
        return f"{self.t.path}: leaf {'/'.join(self.spec.path)}"

    def _read(self, index: tuple[slice, ...], dtype: np.dtype) -> np.ndarray:
        spec = self.spec
        if spec.layers is None:
            return self._hf(self.sources[0])[index].astype(dtype)
        block = tuple(range(*s.indices(n)) for s, n in zip(index, spec.shape, strict=False))
        out = np.empty(tuple(len(r) for r in block), dtype)
        for a, li in enumerate(block[0]):
            src = self.sources[li]
            if not spec.per_expert:
                out[a] = self._hf(src)[index[1:]]
                continue
            kind, names = src
            fused = self.t.get(names) if kind == "fused" else None
            for b, e in enumerate(block[1]):
                if kind == "hub":
                    t = self._hf(names[e])
                else:
                    t = fused[e][spec.fused.index]
                    t = t.T if spec.fused.transpose else t
                out[a, b] = t[index[2:]]
        return out


ShardingFn = Callable[[tuple[str, ...], tuple[int, ...]], jax.sharding.Sharding]


def _quantized_leaf(
    spec: LeafSpec, reader: _LeafReader, frozen_dtype: str, dtype: Any, shard_fn: Callable
) -> QuantizedArray:
    """A frozen kernel read and quantized one stacked layer at a time (the full-precision leaf is
    never held: host memory peaks at the quantized leaf plus one layer in fp32)."""
    whole = tuple(slice(None) for _ in spec.shape)
    scale_shape = (*spec.shape[:-2], 1, spec.shape[-1])
    if spec.layers is None:
        q, s = quantize(reader.read(whole, np.float32), frozen_dtype)
    else:
        q = np.empty(spec.shape, np.dtype(jnp.dtype(frozen_dtype)))
        s = np.empty(scale_shape, np.float32)
        for layer in range(spec.shape[0]):
            q[layer], s[layer] = quantize(
                reader.read((slice(layer, layer + 1), *whole[1:]), np.float32)[0], frozen_dtype
            )
    return QuantizedArray(
        jax.make_array_from_callback(spec.shape, shard_fn(spec.path, spec.shape), lambda idx: q[idx]),
        jax.make_array_from_callback(scale_shape, shard_fn(spec.path, scale_shape), lambda idx: s[idx]),
        jnp.dtype(dtype),
    )


def load_hf_checkpoint(
    path: str,
    dtype: Any = jnp.bfloat16,
    sharding: ShardingFn | None = None,
    progress: bool = True,
    frozen_dtype: str | None = None,
    frozen_groups: tuple[str, ...] = DEFAULT_GROUPS,
) -> HFCheckpoint:
    """Load ``path`` into params of ``dtype``.

    ``sharding(path, shape)`` gives each leaf's placement (default: the first device); each device
    receives only its block, read from the files directly. ``frozen_dtype`` (``int8`` /
    ``float8_e4m3fn``) stores the frozen kernels (:func:`~rise_jax.models.quantized.is_quantizable`)
    in ``frozen_groups`` as :class:`~rise_jax.models.quantized.QuantizedArray` dequantising to ``dtype``.
    """
    if frozen_dtype is not None:
        check_backend(frozen_dtype)
    cfg, raw = read_hf_config(path)
    tensors = TensorIndex(path)
    np_dtype = np.dtype(jnp.dtype(dtype))
    used: set[str] = set()
    num_mtp = mtp_layers(raw)
    try:
        specs = leaf_specs(cfg)
        readers = [_LeafReader(s, tensors, cfg, used) for s in specs]
        skipped = _IGNORED + tuple(re.compile(p) for p in get_family(cfg.model_type).names.skipped)
        unexpected = [
            n
            for n in tensors.owner
            if n not in used
            and not any(p.match(n) for p in skipped)
            and not _mtp_tensor(n, cfg.num_layers, num_mtp)
            and not (n == "lm_head.weight" and cfg.tie_word_embeddings)
        ]
        if unexpected:
            shown = ", ".join(f"{n!r} in {tensors.where(n)}" for n in sorted(unexpected)[:5])
            more = f" and {len(unexpected) - 5} more" if len(unexpected) > 5 else ""
            raise CheckpointError(f"{path}: unexpected tensor(s) for {cfg.model_type}: {shown}{more}")
        params: dict[str, Any] = {}
        default = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        for spec, reader in tqdm(
            list(zip(specs, readers, strict=False)),
            desc=f"loading {os.path.basename(path.rstrip('/'))}",
            disable=not progress,
        ):
            shard_fn = sharding or (lambda *_: default)
            if frozen_dtype is not None and is_quantizable(spec.path, frozen_groups):
                arr = _quantized_leaf(spec, reader, frozen_dtype, dtype, shard_fn)
            else:
                shard = shard_fn(spec.path, spec.shape)
                leaf_dtype = np_dtype if spec.dtype is None else np.dtype(spec.dtype)
                arr = jax.make_array_from_callback(
                    spec.shape, shard, lambda idx, r=reader, dt=leaf_dtype: r.read(idx, dt)
                )
            node = params
            for key in spec.path[:-1]:
                node = node.setdefault(key, {})
            node[spec.path[-1]] = arr
    finally:
        tensors.close()
    return HFCheckpoint(cfg, params, raw, path)


def expert_reader(path: str, cfg: ModelConfig) -> Callable[[str, str, np.ndarray, np.ndarray], np.ndarray]:
    """``read(run, name, layers, experts)`` -> fp32 ``[K, ...]``: expert weights of leaf
    ``run/moe/experts/name`` at (stacked layer, expert) pairs, read from the checkpoint files (the
    full-precision originals of a model loaded with a quantized ``frozen_dtype``)."""
    specs = {s.path: s for s in leaf_specs(cfg)}

    def read(run: str, name: str, layers: np.ndarray, experts: np.ndarray) -> np.ndarray:
        spec = specs.get((run, "moe", "experts", name))
        if spec is None:
            raise CheckpointError(f"{path}: no expert leaf {run}/moe/experts/{name} for {cfg.model_type}")
        tensors = TensorIndex(path)
        try:
            reader = _LeafReader(spec, tensors, cfg, set())
            rest = tuple(slice(None) for _ in spec.shape[2:])
            blocks = [
                reader.read((slice(int(li), int(li) + 1), slice(int(e), int(e) + 1), *rest), np.float32)[0, 0]
                for li, e in zip(layers, experts, strict=True)
            ]
        finally:
            tensors.close()
        return np.stack(blocks) if blocks else np.zeros((0, *spec.shape[2:]), np.float32)

    return read
