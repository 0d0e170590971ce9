"""Entry file for `--config=configs/multilingual.py[:study|broad]`: the evaluation presets over the
multilingual tasks, each task on the languages it shares with the replay set.

The config is rise_jax/configs/multilingual.py (importable as `rise_jax.configs.multilingual`).
"""

from rise_jax.configs.multilingual import get_config  # noqa: F401
