"""Entry file for `--config=configs/olmoe.py[:arg]`: OLMoE-1B-7B (16 layers x 64 experts, top-8; the
companion study's model): K = 32 (3 % of the 1024 experts), rho = (0.35, 0.25, 0.40).

The config is rise_jax/configs/olmoe.py (importable as `rise_jax.configs.olmoe`).
"""

from rise_jax.configs.olmoe import get_config  # noqa: F401
