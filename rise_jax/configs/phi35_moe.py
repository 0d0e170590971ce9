"""Phi-3.5-MoE-instruct (32 layers x 16 experts, top-2, sparsemixer): K = 16, rho = (0.125, 0.6875, 0.1875).

python -m rise_jax.launch --config=configs/phi35_moe.py[:target,method,K] \
    --config.model.checkpoint=/path/to/Phi-3.5-MoE-instruct --workdir=/tmp/phi
Training routes deterministically by default (eval-mode sparsemixer, so the selected experts are
exactly the ones trained through); `--config.train.router_mode=sparsemixer_train` uses PhiMoE's
stochastic training router, which can send tokens through unselected (frozen) experts.
"""

from rise_jax.configs.paper import paper_config


def get_config(arg: str = ""):
    return paper_config("microsoft/Phi-3.5-MoE-instruct", arg, k=16, ratios=(0.125, 0.6875, 0.1875))
