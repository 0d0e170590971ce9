"""The fields every config shares; see rise_jax/configs/base.py (``rise_jax.configs.base``)."""

from rise_jax.configs.base import data_source, get_base_config  # noqa: F401
