"""HF safetensors checkpoints <-> rise_jax params pytrees."""

from rise_jax.checkpoints.hf_export import export_hf_checkpoint, iter_hf_tensors
from rise_jax.checkpoints.hf_load import CheckpointError, HFCheckpoint, load_hf_checkpoint, read_hf_config

__all__ = [
    "CheckpointError",
    "HFCheckpoint",
    "export_hf_checkpoint",
    "iter_hf_tensors",
    "load_hf_checkpoint",
    "read_hf_config",
]
