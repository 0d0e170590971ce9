"""Qwen1.5-MoE-A2.7B (``qwen2_moe``: 24 layers x 60 experts, top-4, plus a gated shared expert;
the RISE reference implementation's third model): K = 48 (3 % of the 1440 routed experts),
rho = (0.35, 0.25, 0.40).

python -m rise_jax.launch --config=configs/qwen15_moe.py[:target,method,K] \
    --config.model.checkpoint=/path/to/Qwen1.5-MoE-A2.7B-Chat --workdir=/tmp/qwen15
The shared expert is frozen like every other non-selected weight; train it too with
``--config.train.extra_trainable=moe/shared_expert``.
"""

from rise_jax.configs.paper import paper_config


def get_config(arg: str = ""):
    return paper_config("Qwen/Qwen1.5-MoE-A2.7B-Chat", arg, k=48, ratios=(0.35, 0.25, 0.40))
