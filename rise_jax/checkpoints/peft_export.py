"""The LoRA baseline's adapters as a PEFT adapter directory (``adapter_config.json`` +
``adapter_model.safetensors``) that ``peft.PeftModel.from_pretrained`` loads onto the HF model.

PEFT keys: ``base_model.model.<module>.lora_A.weight`` ``[r, in]`` and ``...lora_B.weight``
``[out, r]``, ``<module>`` the HF module of the adapted kernel (e.g.
``model.layers.3.self_attn.q_proj``); our adapters are stored in exactly that layout per layer
(``lora_a [n, r, in]``, ``lora_b [n, out, r]`` for a scanned run of ``n`` layers), so export only
unstacks them and names them.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import numpy as np

from rise_jax.checkpoints.hf_layout import leaf_specs
from rise_jax.checkpoints.safetensors_io import save_safetensors
from rise_jax.io_utils import publish_dir
from rise_jax.models.config import ModelConfig
from rise_jax.models.expert_weights import LORA_A, LORA_B


def _adapted(tree: dict[str, Any], prefix: tuple[str, ...] = ()):
    """(params path, {lora_a, lora_b}) of every adapted kernel in an adapter subtree."""
    if LORA_A in tree:
        yield prefix, tree
        return
    for key, sub in tree.items():
        yield from _adapted(sub, (*prefix, key))


def peft_tensors(adapters: dict[str, Any], cfg: ModelConfig) -> tuple[dict[str, np.ndarray], list[str]]:
    """(PEFT state dict, target module names) of the dense adapters (``trainable.weights[LORA_DENSE]``)."""
    specs = {s.path: s for s in leaf_specs(cfg)}
    tensors: dict[str, np.ndarray] = {}
    targets: set[str] = set()
    for path, ad in _adapted(adapters):
        spec = specs.get(path)
        if spec is None or not spec.hf_name.endswith(".weight"):
            raise ValueError(f"no HF module for adapted parameter {'/'.join(path)} of {cfg.model_type}")
        a, b = np.asarray(ad[LORA_A], np.float32), np.asarray(ad[LORA_B], np.float32)
        layers = spec.layers if spec.layers is not None else (None,)
        if spec.layers is None:
            a, b = a[None], b[None]
        for i, layer in enumerate(layers):
            module = spec.hf_name[: -len(".weight")].replace("{l}", str(layer))
            tensors[f"base_model.model.{module}.lora_A.weight"] = np.ascontiguousarray(a[i])
            tensors[f"base_model.model.{module}.lora_B.weight"] = np.ascontiguousarray(b[i])
            targets.add(module.rsplit(".", 1)[-1])
    return tensors, sorted(targets)


def export_peft_adapter(
    adapters: dict[str, Any],
    cfg: ModelConfig,
    out_dir: str,
    rank: int,
    alpha: float,
    base_model: str = "",
    dropout: float = 0.0,
) -> str:
    """Write ``out_dir`` (atomically: a temp directory renamed into place); ``dropout`` is the
    ``lora_dropout`` the adapters trained with (PEFT applies it only when training further)."""
    tensors, targets = peft_tensors(adapters, cfg)
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": int(rank),
        "lora_alpha": float(alpha),
        "lora_dropout": float(dropout),
        "target_modules": targets,
        "bias": "none",
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "use_rslora": False,
        "use_dora": False,
        "modules_to_save": None,
    }
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".peft-", dir=parent)
    save_safetensors(tensors, os.path.join(tmp, "adapter_model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(tmp, "adapter_config.json"), "w", encoding="utf-8") as fh:
        json.dump(config, fh, indent=2)
    return publish_dir(tmp, out_dir)
