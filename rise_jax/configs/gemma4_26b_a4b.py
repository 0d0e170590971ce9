"""Gemma-4-26B-A4B's text model (``gemma4_text``: 30 layers, every one with a dense MLP beside
128 routed experts, top-8; 25 sliding-window layers (1024) and 5 full-attention layers with their
own head width; the router's own norm, scale and per-expert scale, docs/ROUTING.md):
K = 84 (2.2 % of the 3840 routed experts, Qwen3-30B-A3B's paper budget), rho = (0.35, 0.25, 0.40).

python -m rise_jax.launch --config=configs/gemma4_26b_a4b.py[:target,method,K] \
    --workdir=/tmp/gemma4

25.2 B parameters: about 47 GiB in bf16 (one 80 GB GPU for replay; training with an int8 base,
``--config.model.frozen_dtype=int8``, bench/RESULTS.md). The hub repository holds the multimodal
``gemma4`` checkpoint (``Gemma4ForConditionalGeneration``): its language model (under
``model.language_model.``) is read, the vision and audio towers are left unread and carried over
unchanged by the export (:mod:`rise_jax.models.families.gemma4`); a text-only ``gemma4_text``
checkpoint (``Gemma4ForCausalLM``) works as well. Gemma-4 is instruction
tuned with a chat template of its own; the reference recipe replays raw text. RISE's paper did not
train Gemma-4.
"""

from rise_jax.configs.paper import paper_config

CHECKPOINT = "google/gemma-4-26B-A4B"


def get_config(arg: str = ""):
    return paper_config(CHECKPOINT, arg, k=84, ratios=(0.35, 0.25, 0.40))
