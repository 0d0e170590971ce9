"""Entry file for `--config=configs/gemma4_26b_a4b.py[:arg]`; the config is
rise_jax/configs/gemma4_26b_a4b.py (importable as `rise_jax.configs.gemma4_26b_a4b`), whose
docstring says what it runs."""

from rise_jax.configs.gemma4_26b_a4b import get_config  # noqa: F401
