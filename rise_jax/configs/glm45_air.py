"""GLM-4.5-Air (``glm4_moe``: 46 layers, layer 0 dense, 45 MoE layers x 128 routed experts, top-8,
one shared expert; sigmoid router with a selection-only correction bias, docs/ROUTING.md):
K = 128 (2.2 % of the 5760 routed experts, Qwen3-30B-A3B's paper budget), rho = (0.35, 0.25, 0.40).

python -m rise_jax.launch --config=configs/glm45_air.py[:target,method,K] \
    --config.model.checkpoint=/path/to/GLM-4.5-Air --workdir=/tmp/glm45air
106 B parameters: about 200 GiB in bf16, so it needs several 80 GB GPUs (``:gpus=4`` splits the
experts over 4 devices, see configs/paper.py) or int8 frozen weights
(``--config.model.frozen_dtype=int8``, about 100 GiB). The hub's multi-token-prediction layer
(``model.layers.46``) is skipped when loading. GLM-4.5 chats with a thinking mode: the reference
recipe replays raw text, so no chat template is involved. RISE's paper did not train GLM-4.5-Air.
"""

from rise_jax.configs.paper import paper_config

CHECKPOINT = "zai-org/GLM-4.5-Air"


def get_config(arg: str = ""):
    return paper_config(CHECKPOINT, arg, k=128, ratios=(0.35, 0.25, 0.40))
