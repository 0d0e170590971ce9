"""Qwen3.5-MoE as published (``qwen3_5_moe``: ``Qwen3_5MoeForConditionalGeneration``, e.g.
Qwen3.5-35B-A3B): a vision tower and a language model in one checkpoint. Only the language model
is ours (:mod:`rise_jax.models.families.qwen3_5_moe_text`: its blocks, read from ``text_config``
and ``model.language_model.*``); images are not supported. The vision tower (``model.visual.*``)
and the multi-token-prediction head (``mtp.*``) are skipped when loading and carried over
unchanged when exporting from the source checkpoint, so the exported checkpoint is whole. A
config written from our :class:`ModelConfig` alone has no ``vision_config`` (transformers then
builds its default vision tower, with random weights), so an export without the source
checkpoint is refused (``Family.needs_source``); a ``qwen3_5_moe_text`` model exports without one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from rise_jax.models.config import ConfigError, ModelConfig
from rise_jax.models.families import Family
from rise_jax.models.families import qwen3_5_moe_text as text

MODEL_TYPE = "qwen3_5_moe"


def parse(d: Mapping[str, Any], source: str) -> ModelConfig:
    sub = d.get("text_config")
    if not isinstance(sub, Mapping):
        raise ConfigError(f"{source}: a qwen3_5_moe config needs a 'text_config' object, got {sub!r}")
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
    "Qwen3_5MoeForConditionalGeneration",
    parse,
    to_hf,
    dataclasses.replace(text.NAMES, text_prefix="model.language_model."),
    needs_source="the vision tower (vision_config and the model.visual.* tensors)",
)
