"""Write params back to an HF checkpoint directory (hub layout: one tensor per expert).

The directory holds ``config.json``, ``model-0000k-of-0000n.safetensors`` shards with
``model.safetensors.index.json`` (or a single ``model.safetensors``), and optionally the tokenizer
files copied from the source. transformers (and vLLM) load it as they load a hub checkpoint.
The directory is built under a temporary name and renamed into place, so an interrupted export
leaves nothing that looks complete.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
from collections.abc import Iterator
from typing import Any

import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from rise_jax.checkpoints.hf_layout import fused_groups, fused_key, leaf_specs
from rise_jax.checkpoints.safetensors_io import save_safetensors
from rise_jax.distributed import is_writer, to_host
from rise_jax.io_utils import publish_dir, temp_dir_beside
from rise_jax.models.config import ModelConfig
from rise_jax.models.families import config_to_hf_dict, get_family

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "generation_config.json",
)

_DTYPE_NAMES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def _leaf(params: dict[str, Any], path: tuple[str, ...]) -> Any:
    node = params
    for key in path:
        if key not in node:
            raise KeyError(f"params has no leaf {'/'.join(path)} (missing {key!r})")
        node = node[key]
    return node


def iter_hf_tensors(params: dict[str, Any], cfg: ModelConfig, dtype: Any = None) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(hf_name, array)`` in hub layout, one expert or layer slice at a time; experts of a
    family without a per-expert hub layout (GPT-OSS) as their fused per-layer tensors."""
    specs = leaf_specs(cfg)
    groups = fused_groups(specs)

    def host(a, transpose):
        a = to_host(a)  # gathered when spread over processes (rise_jax.distributed)
        if dtype is not None:
            a = a.astype(np.dtype(jnp.dtype(dtype)))
        return np.ascontiguousarray(np.swapaxes(a, -1, -2) if transpose else a)

    for spec in specs:
        leaf = _leaf(params, spec.path)
        if tuple(leaf.shape) != spec.shape:
            raise ValueError(f"params leaf {'/'.join(spec.path)} has shape {tuple(leaf.shape)}, expected {spec.shape}")
    for spec in specs:
        leaf = _leaf(params, spec.path)
        if spec.layers is None:
            yield spec.hf_name, host(leaf, spec.transpose)
        elif spec.per_expert and spec.hf_name is None:
            group = groups.get(fused_key(spec))
            if group is None or group[0] is not spec:
                continue  # written with the first leaf of its fused tensor
            for li, layer in enumerate(spec.layers):
                yield _fused_tensor(params, group, li, layer, host)
        else:
            for li, layer in enumerate(spec.layers):
                if spec.per_expert:
                    for e in range(spec.shape[1]):
                        name = spec.hf_name.replace("{l}", str(layer)).replace("{e}", str(e))
                        yield name, host(leaf[li, e], spec.transpose)
                else:
                    yield spec.hf_name.replace("{l}", str(layer)), host(leaf[li], spec.transpose)


def _fused_tensor(params, group, li: int, layer: int, host) -> tuple[str, np.ndarray]:
    """One layer's fused expert tensor ``[E, *shape]`` assembled from the leaves that share it."""
    fused = group[0].fused
    parts = [host(_leaf(params, spec.path)[li], spec.fused.transpose) for spec in group]
    out = np.empty((group[0].shape[1], *fused.shape), parts[0].dtype)
    for spec, part in zip(group, parts, strict=True):
        out[(slice(None), *spec.fused.index)] = part
    return fused.name.replace("{l}", str(layer)), out


def carried_tensors(cfg: ModelConfig, source_dir: str) -> Iterator[tuple[str, np.ndarray]]:
    """The tensors of ``source_dir`` that loading skipped as not part of the model (the family's
    ``HFNames.skipped``: a multi-token-prediction head, a vision tower), as stored: an export
    carries them over unchanged, so the checkpoint stays whole."""
    from rise_jax.checkpoints.hf_load import TensorIndex  # the reader's index, opened only when asked

    patterns = [re.compile(p) for p in get_family(cfg.model_type).names.skipped]
    if not patterns:
        return
    tensors = TensorIndex(source_dir)
    try:
        for name in sorted(tensors.owner):
            if any(p.match(name) for p in patterns):
                yield name, np.array(tensors.get(name), copy=True)  # the file is closed after
    finally:
        tensors.close()


def hf_tensor_count(cfg: ModelConfig) -> int:
    """How many tensors :func:`iter_hf_tensors` yields."""
    specs = leaf_specs(cfg)
    count = 0
    for s in specs:
        if s.layers is None:
            count += 1
        elif s.per_expert and s.hf_name is None:
            count += len(s.layers) if fused_groups(specs)[fused_key(s)][0] is s else 0
        else:
            count += len(s.layers) * (s.shape[1] if s.per_expert else 1)
    return count


def export_hf_checkpoint(
    params: dict[str, Any],
    cfg: ModelConfig,
    out_dir: str,
    *,
    hf_config: dict[str, Any] | None = None,
    dtype: Any = None,
    tokenizer_dir: str | None = None,
    source_dir: str | None = None,
    max_shard_bytes: int = 5 * 1024**3,
    overwrite: bool = False,
    progress: bool = True,
) -> str:
    """Write ``params`` as an HF checkpoint at ``out_dir``; returns ``out_dir``.

    ``hf_config``: the source ``config.json`` to write back (its ``dtype`` updated); default one
    generated from ``cfg``; either way ``architectures`` names the hub class (what vLLM looks up,
    see :class:`~rise_jax.models.families.Family`) and ``auto_map`` is dropped. ``dtype``: cast tensors (default:
    keep the params' dtype). ``source_dir``: the checkpoint the params came from; its tensors the
    model does not hold (:func:`carried_tensors`) are copied into the export unchanged. A family
    whose checkpoint class holds more than the model (``Family.needs_source``: a multimodal class's
    towers) is refused without ``source_dir``: the result would not be that class's checkpoint.
    """
    family = get_family(cfg.model_type)
    if source_dir is None and family.needs_source:
        raise ValueError(
            f"export of a {cfg.model_type!r} model ({family.hub_architecture}) without its source checkpoint: "
            f"it would lack {family.needs_source}, which rise_jax does not hold; pass "
            f"source_dir=<the checkpoint the model was loaded from> (rise_jax.export_model(..., source_dir=...); "
            f"the export stage does) so they are copied over unchanged"
        )
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and not overwrite:
        raise FileExistsError(f"{out_dir}: already exists (pass overwrite=True to replace it)")
    if not is_writer():  # a multi-process job: gathered in step with the writer, written by it alone
        for _ in iter_hf_tensors(params, cfg, dtype):
            pass
        return out_dir
    tmp = temp_dir_beside(out_dir)
    try:
        shards: list[dict[str, np.ndarray]] = [{}]
        size, total = 0, 0
        out_dtype = None
        # Stream tensors into shards; each shard is written as soon as it is full.
        written: list[tuple[str, list[str]]] = []

        def flush():
            nonlocal size
            if shards[-1]:
                name = f"shard-{len(written):05d}.safetensors"
                save_safetensors(shards[-1], os.path.join(tmp, name))
                written.append((name, list(shards[-1])))
                shards[-1] = {}
                size = 0

        n_tensors = hf_tensor_count(cfg)
        carried = carried_tensors(cfg, source_dir) if source_dir is not None else iter(())
        for name, arr in tqdm(
            itertools.chain(iter_hf_tensors(params, cfg, dtype), carried),
            total=n_tensors,
            desc="exporting",
            disable=not progress,
        ):
            out_dtype = out_dtype or arr.dtype
            if size and size + arr.nbytes > max_shard_bytes:
                flush()
            shards[-1][name] = arr
            size += arr.nbytes
            total += arr.nbytes
        flush()
        weight_map = {}
        if len(written) == 1:
            os.replace(os.path.join(tmp, written[0][0]), os.path.join(tmp, "model.safetensors"))
        else:
            for k, (name, keys) in enumerate(written):
                final = f"model-{k + 1:05d}-of-{len(written):05d}.safetensors"
                os.replace(os.path.join(tmp, name), os.path.join(tmp, final))
                weight_map.update({key: final for key in keys})
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            with open(os.path.join(tmp, "model.safetensors.index.json"), "w", encoding="utf-8") as fh:
                json.dump(index, fh, indent=2)
        config = dict(hf_config) if hf_config is not None else config_to_hf_dict(cfg)
        dtype_name = _DTYPE_NAMES.get(str(out_dtype), "float32")
        config["dtype"] = dtype_name
        config["architectures"] = [family.hub_architecture]
        # Experts are written dequantised (GPT-OSS's MXFP4 hub experts included), so the source's
        # quantization_config no longer describes the tensors.
        config.pop("quantization_config", None)
        # The hub's Phi-3.5-MoE config points ``auto_map`` at its own modeling code, which is not
        # copied (no checkpoint code is carried or run); the native classes load the export.
        config.pop("auto_map", None)
        config.pop("torch_dtype", None)
        with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as fh:
            json.dump(config, fh, indent=2, sort_keys=True)
        if tokenizer_dir:
            for f in TOKENIZER_FILES:
                src = os.path.join(tokenizer_dir, f)
                if os.path.isfile(src):
                    shutil.copy2(src, os.path.join(tmp, f))
        publish_dir(tmp, out_dir)  # readable by others as the umask allows (a serving account)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
