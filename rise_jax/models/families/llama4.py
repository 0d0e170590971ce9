"""Llama-4's multimodal checkpoints (``llama4``, Llama4ForConditionalGeneration: the published
Llama-4-Scout / Maverick): the text model of :mod:`.llama4_text` read from ``text_config`` and
the ``language_model.`` tensors. The vision tower (``vision_model.``, ``multi_modal_projector.``)
is not read; an export from the source checkpoint copies it unchanged with the source
``config.json``, so the result is the same multimodal checkpoint with the text model's weights
replaced. Without the source an export is refused (``Family.needs_source``): the
Llama4ForConditionalGeneration checkpoint it names would have no ``vision_config`` (transformers
would build its default tower with random weights) and no ``vision_model.*`` /
``multi_modal_projector.*`` tensors, so it would not be the published class's checkpoint, and
vLLM would dispatch on that class. A text-only model (``llama4_text``, Llama4ForCausalLM) exports
without a source.
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
    """The text part of the multimodal ``config.json``: ``model_type`` ``llama4`` and the text
    model as ``text_config``, no ``vision_config`` (what the text model's config says; an export
    writes the source's whole config instead and refuses without one)."""
    return {"text_config": text_to_hf(cfg, dtype), "model_type": "llama4", "dtype": dtype}


FAMILY = Family(
    "llama4",
    "Llama4ForConditionalGeneration",
    parse,
    to_hf,
    dataclasses.replace(NAMES, prefix="language_model.", skipped=(r"vision_model\.", r"multi_modal_projector\.")),
    needs_source="the vision tower (vision_config, vision_model.* and multi_modal_projector.* tensors)",
)
