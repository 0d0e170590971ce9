"""DeepSeek-V2-Lite (``deepseek_v2``: 27 layers, layer 0 dense, 26 MoE layers x 64 routed experts,
top-6, 2 shared experts; Multi-head Latent Attention; ESFT's model): K = 48 (2.9 % of the 1664
routed experts), rho = (0.35, 0.25, 0.40).

python -m rise_jax.launch --config=configs/deepseek_v2_lite.py[:target,method,K] \
    --config.model.checkpoint=/path/to/DeepSeek-V2-Lite-Chat --workdir=/tmp/dsv2lite
The shared experts are frozen like every other non-selected weight (they process every token and
are not in the routing statistics, docs/ROUTING.md); train them too with
``--config.train.extra_trainable=moe/shared_expert``. ESFT's own setting: configs/esft.py.
RISE's paper did not train DeepSeek-V2-Lite; K and the zone ratios are this tool's defaults.
"""

from rise_jax.configs.paper import paper_config

CHECKPOINT = "deepseek-ai/DeepSeek-V2-Lite-Chat"


def get_config(arg: str = ""):
    return paper_config(CHECKPOINT, arg, k=48, ratios=(0.35, 0.25, 0.40))
