"""Qwen3.5-35B-A3B (``qwen3_5_moe``: a vision tower and a 40-layer language model, 30 Gated
DeltaNet + 10 gated softmax-attention layers, every layer MoE with 256 routed experts, top-8, and
a gated shared expert outside the routing statistics: docs/ROUTING.md). Only the language model
is loaded (text only); the vision tower and the multi-token-prediction head are skipped and
carried over unchanged by the export. K = 224 (2.2 % of the 10,240 routed experts, Qwen3-30B-A3B's
paper budget share), rho = (0.35, 0.25, 0.40).

python -m rise_jax.launch --config=configs/qwen35_35b_a3b.py[:target,method,K] \
    --config.model.checkpoint=/path/to/Qwen3.5-35B-A3B --workdir=/tmp/qwen35
About 35 B parameters: about 65 GiB in bf16 (one 80 GB GPU, tight) or about 35 GiB with int8 frozen
weights (``--config.model.frozen_dtype=int8``). RISE's paper did not train Qwen3.5.
"""

from rise_jax.configs.paper import paper_config

CHECKPOINT = "Qwen/Qwen3.5-35B-A3B"


def get_config(arg: str = ""):
    return paper_config(CHECKPOINT, arg, k=224, ratios=(0.35, 0.25, 0.40))
