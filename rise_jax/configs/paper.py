"""Settings shared by the model configs (qwen3_30b_a3b.py, phi35_moe.py, qwen15_moe.py, olmoe.py,
gpt_oss_20b.py): the paper recipe and its `:arg` variants.

``get_config(arg)`` of those files accepts ``:arg`` variants, e.g.
``--config=configs/qwen3_30b_a3b.py:bn,topk,64`` or ``:target=sw,method=esft_gate,k=32``:
positional fields are target language, selection method and K, in that order; ``gpus=N`` picks the
multi-GPU preset (mesh: experts split over N devices, expert-parallel dispatch; see the README's
GPU table), ``data=D`` splits those N into D (batch) x N/D (experts); ``recipe=reference``
(default: the paper's reference implementation, every value commented with its source) or
``recipe=qa`` (nine TyDiQA languages through the chat template, completion-only training on the
answers); ``lora=R`` trains rank-R adapters inside the selected experts instead of the experts
themselves (RISE+LoRA, paper App. H; ``train.method=rise_lora``, alpha = R as PEFT's default
ratio); ``train=lora`` runs the paper's LoRA baseline instead (adapters on the attention q/k/v/o,
rank ``lora`` or 8). To follow the paper's statistics exactly, replay its OpenCompass predictions:
``--config.data.source=opencompass --config.data.path=<predictions>/tydiqa-{tydiqa}.json`` (the
reference's ``PREDICTIONS``).
"""

from rise_jax.config_values import comma_list
from rise_jax.configs.base import get_base_config
from rise_jax.selection.methods import METHODS

TYDIQA_LANGUAGES = "ar,bn,en,fi,id,ko,ru,sw,te"
MGSM_LANGUAGES = "bn,de,en,es,fr,ja,ru,sw,th,zh"


RECIPES = ("reference", "qa")


def parse_arg(arg: str, defaults: dict) -> dict:
    """``"bn,topk,64"`` / ``"target=bn,k=64,recipe=qa,lora=8"`` -> {target, method, k, gpus, recipe,
    lora} over ``defaults``."""
    out = {"lora": 0, "train": "", "data": 1, **defaults}
    keys = ("target", "method", "k", "gpus", "recipe", "lora", "train", "data")
    for i, part in enumerate(comma_list(arg)):
        key, value = part.split("=", 1) if "=" in part else (keys[i] if i < len(keys) else "?", part)
        if key not in keys:
            raise ValueError(f"config arg {arg!r}: unknown field {key!r}; use {', '.join(keys)}")
        out[key] = int(value) if key in ("k", "gpus", "lora", "data") else value
    if out["method"] not in METHODS:
        raise ValueError(f"config arg {arg!r}: method {out['method']!r} not one of {', '.join(METHODS)}")
    if out["train"] not in ("", "experts", "rise_lora", "lora"):
        raise ValueError(f"config arg {arg!r}: train {out['train']!r} not one of experts, rise_lora, lora")
    if out["data"] < 1 or out["gpus"] % out["data"]:
        raise ValueError(f"config arg {arg!r}: data={out['data']} must divide gpus={out['gpus']}")
    if out["lora"] < 0:
        raise ValueError(f"config arg {arg!r}: lora rank {out['lora']} must be >= 1 (0: no LoRA)")
    if out["recipe"] not in RECIPES:
        raise ValueError(f"config arg {arg!r}: recipe {out['recipe']!r} not one of {', '.join(RECIPES)}")
    return out


TYDIQA_HUB = dict(
    source="hf",
    hf_path="google-research-datasets/tydiqa",
    hf_name="secondary_task",
    split="train",
    hf_filter="id:{tydiqa}-",
)


def _reference_recipe(c, target: str) -> None:
    """The RISE reference implementation's recipe (init-neok/rise ``run_rise.sh`` defaults and
    ``configs/*.env``, ``rise/data.py``): replay the target language and English only
    (``REFERENCE_LANGS=en``), TyDiQA-GoldP train as raw ``question\ncontext`` text, 500 per
    language (``MAX_SAMPLES``), replay batch 4, max length 512; train with the full causal-LM loss
    on up to 1000 such target-language texts (``TRAIN_MAX_SAMPLES``)."""
    for section in (c.data, c.train.data):
        section.update(TYDIQA_HUB)
        section.text_fields = "question,context"  # rise/data.py: f"{question}\n{context}"
        section.template = "raw"  # no chat template
        section.max_length = 512  # MAX_LENGTH
    c.data.languages = f"{target},en"  # TARGET_LANG + REFERENCE_LANGS=en: ā is the mean over these two
    c.data.max_samples = 500  # MAX_SAMPLES
    c.stats.batch_size = 4  # REPLAY_BATCH_SIZE
    c.train.data.max_samples = 1000  # TRAIN_MAX_SAMPLES
    c.train.completion_only = False  # full causal-LM loss on the text (no answers)


def _qa_recipe(c) -> None:
    """The QA recipe (``:recipe=qa``): nine TyDiQA languages replayed through the chat template as
    ``context\nquestion``, 1000 per language; training completion-only on the answers. Not what the
    paper's numbers were made with: a comparison with a chat-formatted, answer-only recipe."""
    for section in (c.data, c.train.data):
        section.update(TYDIQA_HUB)
        section.text_fields = "context,question"
        section.template = "chat"
    c.data.languages = TYDIQA_LANGUAGES
    c.data.max_samples = 1000
    c.train.data.answer_field = "answers.text.0"
    c.train.completion_only = True


def paper_config(checkpoint: str, arg: str, k: int, ratios: tuple):
    """Paper settings (``recipe``: ``reference`` by default, see :func:`_reference_recipe`; ``qa``),
    TyDiQA-GoldP train (HF hub) for replay and training, MGSM + TyDiQA eval."""
    v = parse_arg(arg, {"target": "bn", "method": "rise", "k": k, "gpus": 1, "recipe": "reference"})
    c = get_base_config()
    c.model.checkpoint = checkpoint
    c.model.dtype = "bfloat16"  # PRECISION=bf16
    # Multi-GPU preset: experts split whole over `model` and computed where they live (expert
    # parallel); the batch replicated over them, or split over `data` groups with data=D.
    c.mesh.model = v["gpus"] // v["data"]
    c.mesh.data = v["data"]

    if v["recipe"] == "reference":
        _reference_recipe(c, v["target"])
    else:
        _qa_recipe(c)

    c.select.target = v["target"]
    c.select.method = v["method"]
    c.select.k = v["k"]  # NUM_EXPERTS (paper: K = 128 Qwen3, 16 Phi)
    train = v["train"] or ("rise_lora" if v["lora"] else "experts")
    if train != "experts":  # RISE+LoRA (App. H) or the LoRA baseline (Table 6); rank/alpha are ours
        c.train.method = train
        c.train.lora_rank = v["lora"] or 8
        c.train.lora_alpha = float(c.train.lora_rank)
    c.select.ratios = ratios  # SHALLOW_BUDGET / MIDDLE_BUDGET (paper Table 10)
    c.select.zone_ratios = (0.375, 0.25)  # SHALLOW_RATIO / MIDDLE_RATIO
    c.select.alpha = 10.0  # ALPHA

    # Training (run_rise.sh): NUM_EPOCHS=3, TRAIN_BATCH_SIZE=2 x GRAD_ACCUM=8, LEARNING_RATE=2e-5;
    # warmup 0.05 of the steps (the paper's statement; rise/trainer.py).
    c.train.epochs = 3
    c.train.batch_size = 2
    c.train.grad_accum = 8
    c.train.lr = 2e-5
    c.train.warmup_ratio = 0.05
    c.train.compute_dtype = "bfloat16"

    c.eval.run = "mgsm,tydiqa"
    c.eval.languages = v["target"] + ",en"
    c.eval.tasks.mgsm.languages = MGSM_LANGUAGES
    c.eval.tasks.mgsm.path = "data/mgsm"  # mgsm_<lang>.tsv + mgsm_exemplars.json (google-research/url-nlp)
    if v["recipe"] == "reference":
        # evaluation/opencompass/eval_rise_mgsm.py: the first 200 problems, up to 1024 new tokens.
        c.eval.tasks.mgsm.max_samples = 200
        c.eval.tasks.mgsm.max_new_tokens = 1024
    c.eval.tasks.tydiqa.languages = TYDIQA_LANGUAGES
    c.eval.tasks.tydiqa.path = "data/tydiqa-goldp-v1.1-dev.json"  # the official GoldP dev JSON (SQuAD format)
    # Table 4 (general ability, English): add them to eval.run when the published files are there.
    c.eval.general = "triviaqa,mmlu,arc_challenge,hellaswag"
    c.eval.tasks.triviaqa.path = "data/triviaqa/qa/verified-web-dev.json"  # triviaqa-rc (mandarjoshi)
    c.eval.tasks.mmlu.path = "data/mmlu/test"  # hendrycks/test data.tar: <subject>_test.csv
    c.eval.tasks.arc_challenge.path = "data/ARC-V1-Feb2018/ARC-Challenge/ARC-Challenge-Test.jsonl"
    c.eval.tasks.hellaswag.path = "data/hellaswag/hellaswag_val.jsonl"  # rowanz/hellaswag
    return c
