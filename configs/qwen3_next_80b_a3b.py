"""Entry file for `--config=configs/qwen3_next_80b_a3b.py[:arg]`; the config is rise_jax/configs/qwen3_next_80b_a3b.py
(importable as `rise_jax.configs.qwen3_next_80b_a3b`), whose docstring says what it runs."""

from rise_jax.configs.qwen3_next_80b_a3b import get_config  # noqa: F401
