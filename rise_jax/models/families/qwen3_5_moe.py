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

from rise_jax.models.families import qwen3_5_moe_text as text
from rise_jax.models.families.multimodal import text_model_family

MODEL_TYPE = "qwen3_5_moe"


FAMILY = text_model_family(
    text.FAMILY,
    MODEL_TYPE,
    "Qwen3_5MoeForConditionalGeneration",
    dataclasses.replace(text.NAMES, text_prefix="model.language_model."),
    "the vision tower (vision_config and the model.visual.* tensors)",
)
