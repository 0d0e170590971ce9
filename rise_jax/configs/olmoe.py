"""OLMoE-1B-7B (16 layers x 64 experts, top-8; the companion study's model): K = 32 (3 % of the
1024 experts), rho = (0.35, 0.25, 0.40).

python -m rise_jax.launch --config=configs/olmoe.py[:target,method,K] \
    --config.model.checkpoint=/path/to/OLMoE-1B-7B-0924 --workdir=/tmp/olmoe
OLMoE-1B-7B has no chat template (a base model): replay and training use the raw text.
RISE's paper did not train OLMoE; K and the zone ratios are this tool's defaults. No steering
preset: the companion study's steering results are for its three other models.
"""

from rise_jax.configs.paper import paper_config


def get_config(arg: str = ""):
    c = paper_config("allenai/OLMoE-1B-7B-0924", arg, k=32, ratios=(0.35, 0.25, 0.40))
    c.data.template = c.train.data.template = "raw"
    c.eval.tasks.mgsm.template = c.eval.tasks.tydiqa.template = "raw"
    return c
