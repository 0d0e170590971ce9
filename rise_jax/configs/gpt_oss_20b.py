"""GPT-OSS-20B (24 layers x 32 experts, top-4; the companion study's model): K = 24 (3 % of the
768 experts, about the share the paper's K gives Qwen3-30B-A3B), rho = (0.35, 0.25, 0.40).

python -m rise_jax.launch --config=configs/gpt_oss_20b.py[:target,method,K] \
    --config.model.checkpoint=/path/to/gpt-oss-20b --workdir=/tmp/gptoss
The hub checkpoint's MXFP4 experts are dequantised to the run's dtype while loading (bf16:
about 42 GB of weights); exports write the dequantised experts.

Steering preset: the companion study steers GPT-OSS-20B's middle layers 4-19. Layer numbers here
are 0-indexed decoder layers; every GPT-OSS layer is an MoE layer, so they are also MoE-layer
indices (``eval.steer.layers``). Run it with ``--config.eval.variants=base,steered``.
RISE's paper did not train GPT-OSS; K and the zone ratios are this tool's defaults, not a
published setting.
"""

from rise_jax.configs.paper import paper_config

STEER_LAYERS = "4-19"


def get_config(arg: str = ""):
    c = paper_config("openai/gpt-oss-20b", arg, k=24, ratios=(0.35, 0.25, 0.40))
    c.eval.steer.layers = STEER_LAYERS
    return c
