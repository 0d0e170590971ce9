"""Entry file for `--config=configs/demo.py[:arg]`: The embedded demo: a small Qwen3-MoE pretrained here from scratch, then the whole pipeline.

The config is rise_jax/configs/demo.py (importable as `rise_jax.configs.demo`).
"""

from rise_jax.configs.demo import get_config  # noqa: F401
