"""Entry file for `--config=configs/bandarkar.py[:qwen3|phi|gpt_oss|olmoe]`: the companion study
(Bandarkar et al., arXiv 2510.04694) as one pipeline run.

The config is rise_jax/configs/bandarkar.py (importable as `rise_jax.configs.bandarkar`).
"""

from rise_jax.configs.bandarkar import get_config  # noqa: F401
