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

from rise_jax.models.families import gemma4_text as text
from rise_jax.models.families.multimodal import text_model_family

MODEL_TYPE = "gemma4"
TOWERS = r"model\.(vision_tower|embed_vision|audio_tower|embed_audio)\."


FAMILY = text_model_family(
    text.FAMILY,
    MODEL_TYPE,
    "Gemma4ForConditionalGeneration",
    dataclasses.replace(text.FAMILY.names, text_prefix="model.language_model.", skipped=(TOWERS,)),
    "the vision / audio towers (vision_config, audio_config and the model.vision_tower.*, "
    "model.embed_vision.*, model.audio_tower.*, model.embed_audio.* tensors)",
)
