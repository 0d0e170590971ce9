"""Llama-4-Scout-17B-16E-Instruct (``llama4``, the multimodal checkpoint; its text model is read:
48 MoE layers x 16 routed experts, top-1 with a sigmoid weight on the expert's *input*, one
shared expert per layer; chunked attention in 36 layers, 12 NoPE layers; docs/ROUTING.md):
K = 16 (2.1 % of the 768 routed experts, Qwen3-30B-A3B's paper share), rho = (0.35, 0.25, 0.40)
-> 5 / 4 / 7.

python -m rise_jax.launch --config=configs/llama4_scout.py[:target,method,K] \
    --config.model.checkpoint=/path/to/Llama-4-Scout-17B-16E-Instruct --workdir=/tmp/scout
The text model has 107.8 B parameters (bench/frozen_memory.py): about 201 GiB in bf16, so it needs
several 80 GB GPUs (``:gpus=4`` splits the experts over 4 devices, see configs/paper.py) or int8
frozen weights (``--config.model.frozen_dtype=int8``). The vision tower is not loaded; the export
copies it from the source unchanged. RISE's paper did not train Llama-4.
"""

from rise_jax.configs.paper import paper_config

CHECKPOINT = "meta-llama/Llama-4-Scout-17B-16E-Instruct"


def get_config(arg: str = ""):
    return paper_config(CHECKPOINT, arg, k=16, ratios=(0.35, 0.25, 0.40))
