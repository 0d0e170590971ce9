"""Entry file for `--config=configs/esft.py[:arg]`; the config is rise_jax/configs/esft.py
(importable as `rise_jax.configs.esft`), whose docstring says what it runs."""

from rise_jax.configs.esft import get_config  # noqa: F401
