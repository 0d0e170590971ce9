"""Qwen3-Next-80B-A3B (``qwen3_next``: 48 layers, 36 Gated DeltaNet linear-attention + 12 gated
softmax-attention layers, every layer MoE with 512 routed experts, top-10, and a shared expert
behind a sigmoid gate, outside the routing statistics: docs/ROUTING.md): K = 512 (2.1 % of the
24,576 routed experts, about Qwen3-30B-A3B's paper budget share), rho = (0.35, 0.25, 0.40).

python -m rise_jax.launch --config=configs/qwen3_next_80b_a3b.py[:target,method,K] \
    --config.model.checkpoint=/path/to/Qwen3-Next-80B-A3B-Instruct --workdir=/tmp/qwen3next
80 B parameters: about 150 GiB in bf16, so it needs several 80 GB GPUs (``:gpus=4`` splits the
experts over 4 devices, see configs/paper.py) or int8 frozen weights
(``--config.model.frozen_dtype=int8``, about 80 GiB). The hub's multi-token-prediction head
(``mtp.*``) is skipped when loading and carried over unchanged by the export. RISE's paper did not
train Qwen3-Next.
"""

from rise_jax.configs.paper import paper_config

CHECKPOINT = "Qwen/Qwen3-Next-80B-A3B-Instruct"


def get_config(arg: str = ""):
    return paper_config(CHECKPOINT, arg, k=512, ratios=(0.35, 0.25, 0.40))
