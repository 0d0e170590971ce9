"""A small random Qwen3-MoE HF checkpoint written with rise_jax itself (no torch needed).

Used by ``configs/demo.py`` so the pipeline runs end to end on a fresh machine in seconds.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rise_jax.checkpoints import export_hf_checkpoint
from rise_jax.models.config import config_from_hf_dict
from rise_jax.models.transformer import MoEModel, RuntimeOptions

DEMO_HF_CONFIG: dict[str, Any] = {
    "model_type": "qwen3_moe",
    "architectures": ["Qwen3MoeForCausalLM"],
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "moe_intermediate_size": 32,
    "num_hidden_layers": 8,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "num_experts": 16,
    "num_experts_per_tok": 4,
    "norm_topk_prob": True,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,
    "mlp_only_layers": [],
    "decoder_sparse_step": 1,
    "bos_token_id": None,
    "eos_token_id": 1,
    "pad_token_id": 0,
}


def build_random_checkpoint(out_dir: str, hf_config: dict[str, Any] | None = None, seed: int = 0) -> str:
    """Initialise a model from ``hf_config`` (default :data:`DEMO_HF_CONFIG`) and export it."""
    if os.path.isfile(os.path.join(out_dir, "config.json")):
        return out_dir
    hf_config = dict(hf_config or DEMO_HF_CONFIG)
    cfg = config_from_hf_dict(hf_config, source="demo config")
    model = MoEModel(cfg, RuntimeOptions())
    params = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 1), jnp.int32))["params"]
    params = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), params)
    return export_hf_checkpoint(params, cfg, out_dir, hf_config=hf_config, progress=False)
