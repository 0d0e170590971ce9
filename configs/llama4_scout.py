"""Entry file for `--config=configs/llama4_scout.py[:arg]`; the config is rise_jax/configs/llama4_scout.py
(importable as `rise_jax.configs.llama4_scout`), whose docstring says what it runs."""

from rise_jax.configs.llama4_scout import get_config  # noqa: F401
