"""Sweeps file for ``python -m rise_jax.sweep --sweeps_file=configs/sweeps.py`` (the default).

The sweeps are defined in rise_jax/configs/sweeps.py (``rise_jax.configs.sweeps``).
"""

from rise_jax.configs.sweeps import SWEEPS, get_sweep  # noqa: F401
