"""Entry file for `--config=configs/phi35_moe.py[:arg]`: Phi-3.5-MoE-instruct (32 layers x 16 experts,
top-2, sparsemixer): K = 16, rho = (0.125, 0.6875, 0.1875).

The config is rise_jax/configs/phi35_moe.py (importable as `rise_jax.configs.phi35_moe`).
"""

from rise_jax.configs.phi35_moe import get_config  # noqa: F401
