"""Entry file for `--config=configs/gpt_oss_20b.py[:arg]`: GPT-OSS-20B (24 layers x 32 experts, top-4;
the companion study's model): K = 24 (3 % of the 768 experts, about the share the paper's K gives
Qwen3-30B-A3B), rho = (0.35, 0.25, 0.40).

The config is rise_jax/configs/gpt_oss_20b.py (importable as `rise_jax.configs.gpt_oss_20b`).
"""

from rise_jax.configs.gpt_oss_20b import get_config  # noqa: F401
