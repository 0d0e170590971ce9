"""The embedded demo: a small Qwen3-MoE-architecture model, built on the fly, through the pipeline.

python -m rise_jax.launch --config=configs/demo.py --workdir=/tmp/rise_demo
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from base import get_base_config  # noqa: E402


def get_config(arg: str = ""):
    del arg
    c = get_base_config()
    c.model.demo = True
    c.model.dtype = "float32"
    return c
