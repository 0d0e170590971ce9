"""Qwen3-30B-A3B (48 layers x 128 experts, top-8).

python -m rise_jax.launch --config=configs/qwen3_30b_a3b.py \
    --config.model.checkpoint=/path/to/Qwen3-30B-A3B --workdir=/tmp/qwen3
(a hub id such as Qwen/Qwen3-30B-A3B is downloaded once when the machine has network access).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from base import get_base_config  # noqa: E402


def get_config(arg: str = ""):
    del arg
    c = get_base_config()
    c.model.checkpoint = "Qwen/Qwen3-30B-A3B"
    c.model.dtype = "bfloat16"
    return c
