"""Entry file for `--config=configs/qwen3_30b_a3b.py[:arg]`: Qwen3-30B-A3B (48 layers x 128 experts,
top-8): RISE with K = 128, rho = (0.35, 0.25, 0.40).

The config is rise_jax/configs/qwen3_30b_a3b.py (importable as `rise_jax.configs.qwen3_30b_a3b`).
"""

from rise_jax.configs.qwen3_30b_a3b import get_config  # noqa: F401
