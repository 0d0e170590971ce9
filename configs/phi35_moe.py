"""Phi-3.5-MoE-instruct (32 layers x 16 experts, top-2, sparsemixer router).

python -m rise_jax.launch --config=configs/phi35_moe.py \
    --config.model.checkpoint=/path/to/Phi-3.5-MoE-instruct --workdir=/tmp/phi
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from base import get_base_config  # noqa: E402


def get_config(arg: str = ""):
    del arg
    c = get_base_config()
    c.model.checkpoint = "microsoft/Phi-3.5-MoE-instruct"
    c.model.dtype = "bfloat16"
    return c
