"""Llama-4's multimodal checkpoints (``llama4``, Llama4ForConditionalGeneration: the published
Llama-4-Scout / Maverick): the text model of :mod:`.llama4_text` read from ``text_config`` and
the ``language_model.`` tensors. The vision tower (``vision_model.``, ``multi_modal_projector.``)
is not read; an export from the source checkpoint copies it unchanged with the source
``config.json``, so the result is the same multimodal checkpoint with the text model's weights
replaced. A ``config.json`` generated without a source holds the ``text_config`` alone and the
export no vision tower: transformers' ``AutoModelForCausalLM`` loads it (as Llama4ForCausalLM),
the multimodal class would not find its vision weights.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from rise_jax.models.config import ConfigError, ModelConfig
from rise_jax.models.families import Family
from rise_jax.models.families.llama4_text import NAMES, parse_text, text_to_hf


def parse(d: Mapping[str, Any], source: str) -> ModelConfig:
    text = d.get("text_config")
    if not isinstance(text, Mapping):
        raise ConfigError(f"{source}: a llama4 config needs a text_config object, got {text!r}")
    return parse_text(text, f"{source} text_config", "llama4")


def to_hf(cfg: ModelConfig, dtype: str) -> dict[str, Any]:
    return {"text_config": text_to_hf(cfg, dtype), "model_type": "llama4", "dtype": dtype}


FAMILY = Family(
    "llama4",
    "Llama4ForConditionalGeneration",
    parse,
    to_hf,
    dataclasses.replace(NAMES, prefix="language_model.", skipped=(r"vision_model\.", r"multi_modal_projector\.")),
)
