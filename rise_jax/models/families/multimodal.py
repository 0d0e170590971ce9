"""A published multimodal checkpoint class read as its language model: the one way the
``gemma4`` and ``qwen3_5_moe`` families wrap their text family (``text_config`` in ``config.json``,
the towers' tensors skipped and carried over by an export from the source, see
:class:`~rise_jax.models.families.HFNames`). No ``FAMILY`` here: the registry skips this module."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from rise_jax.models.config import ConfigError, ModelConfig
from rise_jax.models.families import Family, HFNames


def text_model_family(
    text: Family, model_type: str, hub_architecture: str, names: HFNames, needs_source: str
) -> Family:
    """``model_type``'s family: ``text``'s blocks parsed from ``text_config`` (the outer
    ``tie_word_embeddings`` wins, as transformers ties by it) and written back as one."""

    def parse(d: Mapping[str, Any], source: str) -> ModelConfig:
        sub = d.get("text_config")
        if not isinstance(sub, Mapping):
            raise ConfigError(f"{source}: a {model_type} config needs a 'text_config' object, got {sub!r}")
        sub = {**sub, "model_type": model_type}
        if d.get("tie_word_embeddings") is not None:
            sub["tie_word_embeddings"] = d["tie_word_embeddings"]
        return text.parse(sub, f"{source} (text_config)")

    def to_hf(cfg: ModelConfig, dtype: str) -> dict[str, Any]:
        sub = text.to_hf(dataclasses.replace(cfg, model_type=text.model_type), dtype)
        return {
            "model_type": model_type,
            "text_config": sub,
            "tie_word_embeddings": cfg.tie_word_embeddings,
            "dtype": dtype,
        }

    return Family(model_type, hub_architecture, parse, to_hf, names, needs_source=needs_source)
