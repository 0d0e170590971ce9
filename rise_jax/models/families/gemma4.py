"""Gemma-4 as published (``gemma4``: ``Gemma4ForConditionalGeneration``, e.g.
``google/gemma-4-26B-A4B``): a vision (and, in some sizes, audio) tower and a language model in one
checkpoint. Only the language model is ours (:mod:`rise_jax.models.families.gemma4_text`: its
blocks, read from ``text_config`` and ``model.language_model.*``); images and audio are not
supported. The towers and their embedders (``model.vision_tower.*``, ``model.embed_vision.*``,
``model.audio_tower.*``, ``model.embed_audio.*``) are skipped when loading and carried over
unchanged when exporting from the source checkpoint, so the exported checkpoint is whole. A
config written from our :class:`ModelConfig` alone has no ``vision_config`` (transformers then
builds its default towers, with random weights), so an export without the source checkpoint is
refused (``Family.needs_source``); a ``gemma4_text`` model exports without one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from rise_jax.models.config import ConfigError, ModelConfig
from rise_jax.models.families import Family
from rise_jax.models.families import gemma4_text as text

MODEL_TYPE = "gemma4"
TOWERS = r"model\.(vision_tower|embed_vision|audio_tower|embed_audio)\."


def parse(d: Mapping[str, Any], source: str) -> ModelConfig:
    sub = d.get("text_config")
    if not isinstance(sub, Mapping):
        raise ConfigError(f"{source}: a gemma4 config needs a 'text_config' object, got {sub!r}")
    sub = {**sub, "model_type": MODEL_TYPE}
    if d.get("tie_word_embeddings") is not None:  # the outer config's wins, as transformers ties by it
        sub["tie_word_embeddings"] = d["tie_word_embeddings"]
    return text.parse(sub, f"{source} (text_config)")


def to_hf(cfg: ModelConfig, dtype: str) -> dict[str, Any]:
    sub = text.to_hf(dataclasses.replace(cfg, model_type=text.FAMILY.model_type), dtype)
    return {
        "model_type": MODEL_TYPE,
        "text_config": sub,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "dtype": dtype,
    }


FAMILY = Family(
    MODEL_TYPE,
    "Gemma4ForConditionalGeneration",
    parse,
    to_hf,
    dataclasses.replace(text.FAMILY.names, text_prefix="model.language_model.", skipped=(TOWERS,)),
    needs_source="the vision / audio towers (vision_config, audio_config and the model.vision_tower.*, "
    "model.embed_vision.*, model.audio_tower.*, model.embed_audio.* tensors)",
)
