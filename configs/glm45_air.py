"""Entry file for `--config=configs/glm45_air.py[:arg]`; the config is rise_jax/configs/glm45_air.py
(importable as `rise_jax.configs.glm45_air`), whose docstring says what it runs."""

from rise_jax.configs.glm45_air import get_config  # noqa: F401
