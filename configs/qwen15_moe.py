"""Entry file for `--config=configs/qwen15_moe.py[:arg]`: Qwen1.5-MoE-A2.7B (``qwen2_moe``: 24 layers
x 60 experts, top-4, plus a gated shared expert; the RISE reference implementation's third model):
K = 48 (3 % of the 1440 routed experts), rho = (0.35, 0.25, 0.40).

The config is rise_jax/configs/qwen15_moe.py (importable as `rise_jax.configs.qwen15_moe`).
"""

from rise_jax.configs.qwen15_moe import get_config  # noqa: F401
