"""ESFT's own setting (Wang et al. 2024, ``deepseek-ai/ESFT``) on its model, DeepSeek-V2-Lite:
per MoE layer, the experts whose cumulative token (or gate) score reaches ``top_p`` = 0.2 of the
target language's routing, trained with ESFT's ``configs/base.yaml`` optimiser settings
(AdamW lr 1e-5, betas (0.9, 0.95), weight decay 0.1, no warmup, clip 1.0, 500 steps of
8 x 16 sequences), shared experts and non-expert modules frozen unless its flags say otherwise.

python -m rise_jax.launch --config=configs/esft.py[:score,shared,non_expert] \
    --config.model.checkpoint=/path/to/DeepSeek-V2-Lite-Chat --workdir=/tmp/esft
``:arg`` fields: ``score`` = ``token`` (default, ESFT's script) or ``gate``; ``shared`` = 1 trains
the shared experts (ESFT's ``--train_shared_experts``); ``non_expert`` = 1 trains every
non-expert module (``--train_non_expert_modules``); ``target`` = the language (default ``bn``),
e.g. ``:gate,1,0,target=sw``; ``json`` = the path of an expert-config JSON ESFT wrote (e.g. its
released ``results/expert_configs/intent.json``): its experts are trained (``select.method =
esft_json``) and its two flags replace ``shared`` / ``non_expert``. The flags become ``train.extra_trainable`` rules exactly as
``rise_jax.selection.esft_config.ExpertConfig.extra_trainable`` writes them; that module also
reads and writes ESFT's expert-config JSON (decoder-layer keys) for handing a selection to ESFT's
trainer or comparing with a config ESFT released. ESFT trains on task data with 4096-token
sequences; the data here is the paper recipe's target-language text (configs/paper.py), 512 tokens.
"""

import json

from rise_jax.config_values import comma_list
from rise_jax.configs.deepseek_v2_lite import CHECKPOINT
from rise_jax.configs.paper import paper_config
from rise_jax.selection.esft_config import ExpertConfig

TOP_P = 0.2  # scripts/generate_expert_config.sh: --top_p=0.2


def parse_esft_arg(arg: str) -> dict:
    """``"gate,1,0,target=sw"`` -> {score, shared, non_expert, target}."""
    out = {"score": "token", "shared": "0", "non_expert": "0", "target": "bn", "json": ""}
    keys = ("score", "shared", "non_expert", "target", "json")
    for i, part in enumerate(comma_list(arg)):
        key, value = part.split("=", 1) if "=" in part else (keys[i] if i < len(keys) else "?", part)
        if key not in keys:
            raise ValueError(f"config arg {arg!r}: unknown field {key!r}; use {', '.join(keys)}")
        out[key] = value
    if out["score"] not in ("token", "gate"):
        raise ValueError(f"config arg {arg!r}: score {out['score']!r} not one of token, gate")
    for key in ("shared", "non_expert"):
        if out[key] not in ("0", "1"):
            raise ValueError(f"config arg {arg!r}: {key} = {out[key]!r} must be 0 or 1")
    return out


def get_config(arg: str = ""):
    v = parse_esft_arg(arg)
    c = paper_config(CHECKPOINT, f"target={v['target']},method=esft_{v['score']}", k=48, ratios=(0.35, 0.25, 0.40))
    c.select.p_token = c.select.p_gate = TOP_P
    flags = ExpertConfig((), shared_experts=v["shared"] == "1", non_expert_modules=v["non_expert"] == "1")
    if v["json"]:  # a config ESFT wrote: its experts and its flags
        c.select.method, c.select.esft_config = "esft_json", v["json"]
        with open(v["json"], encoding="utf-8") as fh:
            released = json.load(fh)
        flags = ExpertConfig((), bool(released.get("shared_experts")), bool(released.get("non_expert_modules")))
    c.train.extra_trainable = flags.extra_trainable()
    # ESFT configs/base.yaml: adamw, lr 1e-5, weight_decay 0.1, adam_beta2 0.95, warmup_steps 0,
    # max_grad_norm 1.0, steps 500 of per_device_batch_size 1 x n_device 8 x accumulation 16.
    c.train.lr = 1e-5
    c.train.weight_decay = 0.1
    c.train.b1, c.train.b2 = 0.9, 0.95
    c.train.warmup_ratio = 0.0
    c.train.clip_norm = 1.0
    c.train.batch_size = 8
    c.train.grad_accum = 16
    c.train.max_steps = 500 * 16  # micro-steps
    c.train.seed = 5934875
    return c
