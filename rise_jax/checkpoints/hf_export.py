"""Write params back to an HF checkpoint directory (hub layout: one tensor per expert).

The directory holds ``config.json``, ``model-0000k-of-0000n.safetensors`` shards with
``model.safetensors.index.json`` (or a single ``model.safetensors``), and optionally the tokenizer
files copied from the source. transformers (and vLLM) load it as they load a hub checkpoint.
The directory is built under a temporary name and renamed into place, so an interrupted export
leaves nothing that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from rise_jax.checkpoints.hf_layout import leaf_specs
from rise_jax.checkpoints.safetensors_io import save_safetensors
from rise_jax.io_utils import publish_dir, temp_dir_beside
from rise_jax.models.config import HUB_ARCHITECTURES, ModelConfig, config_to_hf_dict

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
    """Yield ``(hf_name, array)`` in hub layout, one expert or layer slice at a time."""
    for spec in leaf_specs(cfg):
        leaf = _leaf(params, spec.path)
        if tuple(leaf.shape) != spec.shape:
            raise ValueError(f"params leaf {'/'.join(spec.path)} has shape {tuple(leaf.shape)}, expected {spec.shape}")

        def host(a, _spec=spec):
            a = np.asarray(jax.device_get(a))
            if dtype is not None:
                a = a.astype(np.dtype(jnp.dtype(dtype)))
            return np.ascontiguousarray(a.T if _spec.transpose else a)

        if spec.layers is None:
            yield spec.hf_name, host(leaf)
            continue
        for li, layer in enumerate(spec.layers):
            if spec.per_expert:
                for e in range(spec.shape[1]):
                    yield spec.hf_name.replace("{l}", str(layer)).replace("{e}", str(e)), host(leaf[li, e])
            else:
                yield spec.hf_name.replace("{l}", str(layer)), host(leaf[li])


def export_hf_checkpoint(
    params: dict[str, Any],
    cfg: ModelConfig,
    out_dir: str,
    *,
    hf_config: dict[str, Any] | None = None,
    dtype: Any = None,
    tokenizer_dir: str | None = None,
    max_shard_bytes: int = 5 * 1024**3,
    overwrite: bool = False,
    progress: bool = True,
) -> str:
    """Write ``params`` as an HF checkpoint at ``out_dir``; returns ``out_dir``.

    ``hf_config``: the source ``config.json`` to write back (its ``dtype`` updated); default one
    generated from ``cfg``; either way ``architectures`` names the hub class (what vLLM looks up,
    see :data:`HUB_ARCHITECTURES`) and ``auto_map`` is dropped. ``dtype``: cast tensors (default:
    keep the params' dtype).
    """
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and not overwrite:
        raise FileExistsError(f"{out_dir}: already exists (pass overwrite=True to replace it)")
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

        n_tensors = sum(
            (len(s.layers) * (s.shape[1] if s.per_expert else 1)) if s.layers else 1 for s in leaf_specs(cfg)
        )
        for name, arr in tqdm(
            iter_hf_tensors(params, cfg, dtype), total=n_tensors, desc="exporting", disable=not progress
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
        config["architectures"] = [HUB_ARCHITECTURES[cfg.model_type]]
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
