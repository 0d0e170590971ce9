"""Qwen3-30B-A3B (48 layers x 128 experts, top-8): RISE with K = 128, rho = (0.35, 0.25, 0.40).

python -m rise_jax.launch --config=configs/qwen3_30b_a3b.py[:target,method,K] \
    --config.model.checkpoint=/path/to/Qwen3-30B-A3B --workdir=/tmp/qwen3
(the hub id Qwen/Qwen3-30B-A3B is downloaded once when the machine has network access).
Variants: `:sw`, `:bn,topk`, `:target=te,method=esft_token,k=64` (see configs/paper.py).
"""

from rise_jax.configs.paper import paper_config


def get_config(arg: str = ""):
    return paper_config("Qwen/Qwen3-30B-A3B", arg, k=128, ratios=(0.35, 0.25, 0.40))
