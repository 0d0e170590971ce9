"""Entry file for `--config=configs/testbed.py[:arg]`: The controlled testbed: a small MoE pretrained here on cipher languages of one base corpus.

The config is rise_jax/configs/testbed.py (importable as `rise_jax.configs.testbed`).
"""

from rise_jax.configs.testbed import get_config  # noqa: F401
