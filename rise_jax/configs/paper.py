"""Settings shared by the paper-replication configs (qwen3_30b_a3b.py, phi35_moe.py).

``get_config(arg)`` of those files accepts ``:arg`` variants, e.g.
``--config=configs/qwen3_30b_a3b.py:bn,topk,64`` or ``:target=sw,method=esft_gate,k=32``:
positional fields are target language, selection method and K, in that order; ``gpus=N`` picks
the multi-GPU preset (mesh: experts split over N devices; see the README's GPU table).
"""

from rise_jax.config_values import comma_list
from rise_jax.configs.base import get_base_config
from rise_jax.selection.algorithms import METHODS

TYDIQA_LANGUAGES = "ar,bn,en,fi,id,ko,ru,sw,te"
MGSM_LANGUAGES = "bn,de,en,es,fr,ja,ru,sw,th,zh"


def parse_arg(arg: str, defaults: dict) -> dict:
    """``"bn,topk,64"`` / ``"target=bn,k=64"`` -> {target, method, k} over ``defaults``."""
    out = dict(defaults)
    keys = ("target", "method", "k", "gpus")
    for i, part in enumerate(comma_list(arg)):
        key, value = part.split("=", 1) if "=" in part else (keys[i] if i < len(keys) else "?", part)
        if key not in keys:
            raise ValueError(f"config arg {arg!r}: unknown field {key!r}; use target, method, k, gpus")
        out[key] = int(value) if key in ("k", "gpus") else value
    if out["method"] not in METHODS:
        raise ValueError(f"config arg {arg!r}: method {out['method']!r} not one of {', '.join(METHODS)}")
    return out


def paper_config(checkpoint: str, arg: str, k: int, ratios: tuple):
    """Paper settings: TyDiQA-GoldP train (HF hub) for replay and training, MGSM + TyDiQA eval."""
    v = parse_arg(arg, {"target": "bn", "method": "rise", "k": k, "gpus": 1})
    c = get_base_config()
    c.model.checkpoint = checkpoint
    c.model.dtype = "bfloat16"
    # Multi-GPU preset: one `model` axis over all GPUs (experts split whole), batch replicated.
    c.mesh.model = v["gpus"]
    c.mesh.data = 1

    tydiqa = dict(
        source="hf",
        hf_path="google-research-datasets/tydiqa",
        hf_name="secondary_task",
        split="train",
        text_fields="context,question",
        hf_filter="id:{tydiqa}-",
    )
    for key, value in tydiqa.items():
        setattr(c.data, key, value)
        setattr(c.train.data, key, value)
    c.data.languages = TYDIQA_LANGUAGES
    c.data.max_samples = 1000
    c.data.template = "chat"
    c.train.data.answer_field = "answers.text.0"
    c.train.data.template = "chat"
    c.train.completion_only = True

    c.select.target = v["target"]
    c.select.method = v["method"]
    c.select.k = v["k"]
    c.select.ratios = ratios

    # Paper training defaults are in base.py (lr 2e-5, AdamW, warmup 0.05, clip 1, 3 epochs, 2 x 8).
    c.train.compute_dtype = "bfloat16"

    c.eval.run = "mgsm,tydiqa"
    c.eval.languages = v["target"] + ",en"
    c.eval.tasks.mgsm.languages = MGSM_LANGUAGES
    c.eval.tasks.mgsm.path = "data/mgsm"  # mgsm_<lang>.tsv + mgsm_exemplars.json (google-research/url-nlp)
    c.eval.tasks.tydiqa.languages = TYDIQA_LANGUAGES
    c.eval.tasks.tydiqa.path = "data/tydiqa-goldp-v1.1-dev.json"  # the official GoldP dev JSON (SQuAD format)
    return c
