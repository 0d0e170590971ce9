"""rise_jax: routing analysis and RISE expert-subnetwork fine-tuning for MoE LLMs in JAX/Flax.

Importing it silences transformers' advisory warnings ("PyTorch was not found ...": torch is never
needed here) unless ``TRANSFORMERS_NO_ADVISORY_WARNINGS`` is already set (rise_jax.messages).
"""

from rise_jax.messages import quiet_library_warnings

quiet_library_warnings()  # before anything below imports transformers

# ruff: noqa: E402
from rise_jax.api import export_model, forward, load_model
from rise_jax.models.config import ModelConfig
from rise_jax.models.families import config_from_hf_dict
from rise_jax.models.routers import RoutingInfo
from rise_jax.models.transformer import ModelOutput, MoEModel, RuntimeOptions
from rise_jax.tokenizer import load_tokenizer
from rise_jax.zones import zone_boundaries

__version__ = "0.1.0"

__all__ = [
    "ModelConfig",
    "ModelOutput",
    "MoEModel",
    "RoutingInfo",
    "RuntimeOptions",
    "config_from_hf_dict",
    "export_model",
    "forward",
    "load_model",
    "load_tokenizer",
    "zone_boundaries",
]
