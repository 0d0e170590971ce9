"""Entry file for `--config=configs/deepseek_v2_lite.py[:arg]`; the config is rise_jax/configs/deepseek_v2_lite.py
(importable as `rise_jax.configs.deepseek_v2_lite`), whose docstring says what it runs."""

from rise_jax.configs.deepseek_v2_lite import get_config  # noqa: F401
