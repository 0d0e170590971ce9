"""The family registry: one module per HF ``model_type``, holding everything specific to it.

A family module defines ``FAMILY`` (:class:`Family`): how its ``config.json`` is parsed into a
:class:`~rise_jax.models.config.ModelConfig` (with the key variants the hub's checkpoints use and
the block variants the model needs), how a config is written back, the ``architectures`` name
the hub (and vLLM) use, and the HF tensor names (:class:`HFNames`). The model, the checkpoint
reader/writer, training and the stages only ever look at the ``ModelConfig`` and ``HFNames``, so
adding a family is a new module here (plus its tests and a config file): :data:`FAMILIES` finds
every module's ``FAMILY`` by itself. See README "Adding a model family".
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Mapping
from typing import Any

from rise_jax.models.config import ConfigError, ModelConfig


@dataclasses.dataclass(frozen=True)
class HFNames:
    """HF tensor names inside ``model.layers.{l}.`` (weights; biases derive from them).

    ``experts``: our projection -> the hub's per-expert name under ``{moe_prefix}.experts.{e}.``,
    or None when the hub stores only fused tensors. ``fused``: the in-memory fused layout
    (``mlp.experts.gate_up_proj`` / ``down_proj``): ``split`` = ``[E, 2I, H]`` gate rows then up
    rows (Qwen, Mixtral, PhiMoE, OLMoE, Gemma-4), ``interleaved`` = ``[E, H, 2I]`` with gate in the
    even and up in the odd columns, and ``[E, I, H]`` down (GPT-OSS), ``halves`` = ``[E, H, 2I]``
    gate columns then up columns, ``[E, I, H]`` down (Llama-4); ``fused_prefix``: where the fused
    tensors live (``mlp.experts``; Gemma-4: ``experts``, Llama-4: ``feed_forward.experts``).
    ``router``: the hub's name, ``router_alt``: the in-memory name transformers saves when it
    differs; ``router_scale`` / ``router_expert_scale``: Gemma-4's router input scale ``[H]`` and
    per-expert scale ``[E]``. ``dense_mlp``: the dense layers' MLP (``mlp``; Llama-4: ``feed_forward``).

    Where the text model's tensors live in a multimodal checkpoint: ``text_prefix`` replaces the
    decoder's ``model.`` (embeddings, layers, final norm; Qwen3.5: ``model.language_model.``) and
    ``prefix`` goes before every name, the LM head's included (Llama-4: ``language_model.``).
    ``skipped``: regular expressions of hub tensors that are not part of the model (a vision
    tower, a multi-token-prediction head): loading leaves them unread and an export that names its
    source checkpoint copies them over unchanged, so the checkpoint stays whole.
    """

    moe_prefix: str = "mlp"
    router: str = "mlp.gate.weight"
    router_alt: str | None = None
    experts: Mapping[str, str] | None = dataclasses.field(
        default_factory=lambda: {"gate_proj": "gate_proj", "up_proj": "up_proj", "down_proj": "down_proj"}
    )
    fused: str = "split"
    fused_prefix: str = "mlp.experts"
    router_scale: str | None = None
    router_expert_scale: str | None = None
    dense_mlp: str = "mlp"
    prefix: str = ""
    shared_expert: str | None = None  # e.g. "mlp.shared_expert" (+ "_gate")
    router_selection_bias: str | None = None  # e.g. "mlp.gate.e_score_correction_bias"
    text_prefix: str = "model."
    skipped: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Family:
    """What one HF ``model_type`` contributes (see the module docstring).

    ``needs_source``: for a checkpoint class that holds more than the text model (a multimodal
    one), what an export written from the :class:`ModelConfig` alone would lack (the towers'
    tensors and their config); non-empty makes such an export refuse and ask for the source
    checkpoint, whose config and skipped tensors it then copies (``export_model(source_dir=...)``).
    """

    model_type: str
    hub_architecture: str  # ``architectures[0]`` of its hub checkpoints (what vLLM dispatches on)
    parse: Callable[[Mapping[str, Any], str], ModelConfig]
    to_hf: Callable[[ModelConfig, str], dict[str, Any]]
    names: HFNames = HFNames()
    needs_source: str = ""


def _registry() -> dict[str, Family]:
    """Every ``FAMILY`` defined by a module of this package, by ``model_type`` (sorted by module)."""
    found: dict[str, Family] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        family = getattr(importlib.import_module(f"{__name__}.{info.name}"), "FAMILY", None)
        if isinstance(family, Family):
            if family.model_type in found:
                raise RuntimeError(f"model_type {family.model_type!r} is defined by two family modules")
            found[family.model_type] = family
    return found


FAMILIES: dict[str, Family] = _registry()
SUPPORTED_MODEL_TYPES = tuple(FAMILIES)


def get_family(model_type: Any, source: str = "config.json") -> Family:
    if model_type not in FAMILIES:
        raise ConfigError(
            f"{source}: model_type {model_type!r} is not supported (supported: {', '.join(SUPPORTED_MODEL_TYPES)})"
        )
    return FAMILIES[model_type]


def config_from_hf_dict(d: Mapping[str, Any], source: str = "config.json") -> ModelConfig:
    """Parse an HF config dict (as in ``config.json``) into a :class:`ModelConfig`.

    Raises :class:`ConfigError` naming ``source`` and the offending key.
    """
    return get_family(d.get("model_type"), source).parse(d, source)


def config_to_hf_dict(cfg: ModelConfig, dtype: str = "float32") -> dict[str, Any]:
    """An HF ``config.json`` dict (transformers 5.x keys) that describes ``cfg``."""
    family = get_family(cfg.model_type)
    return {**family.to_hf(cfg, dtype), "architectures": [family.hub_architecture]}
