"""The companion study (Bandarkar et al., "Multilingual Routing in Mixture-of-Experts",
arXiv 2510.04694) as one pipeline run, for one of its four models.

python -m rise_jax.launch --config=configs/bandarkar.py:qwen3 --workdir=/tmp/study \
    --config.data.path=/data/flores200 --config.task_experts.data.path=/data/mgsm \
    --config.eval.tasks.mgsm.path=/data/mgsm --config.eval.tasks.belebele.path=/data/belebele
(`:qwen3` | `:phi` | `:gpt_oss` | `:olmoe`; `--config.model.checkpoint` overrides the hub id.)

Stages: ``stats`` (FLoRes-200 dev, parallel) -> ``analyze`` (entropy-normalised divergence from
English, routing entropy, inter-token consistency) -> ``task_experts`` (English MGSM questions
vs English FLoRes, τ swept) -> ``eval`` (MGSM with the ``steered`` variant, Belebele, against
``base``) -> ``correlate`` (Belebele accuracy vs mean middle-layer divergence) -> ``report``.

Steering presets (the study's §6): MoE layers are 0-indexed; every layer of these models is an
MoE layer, so they are also decoder-layer indices. Qwen3-30B-A3B 8-35, soft, λ = 0.5, τ = 0.4;
Phi-3.5-MoE 8-17, soft, τ = 0.3 (λ not stated there: 0.5 here); GPT-OSS-20B 4-19, hard, τ = 0.3.
The study does not steer OLMoE: its preset is this tool's choice (the middle zone, 6-9, soft,
λ = 0.5, τ = 0.3). Ablations: ``--config.eval.steer.source=multilingual|random``,
``--config.eval.steer.mode=deactivate``, or layers outside the middle
(``--config.eval.steer.layers=0-7``). Nothing is downloaded: every data path is a config field,
and a missing one is an error naming it.
"""

from rise_jax.configs.base import get_base_config
from rise_jax.configs.multilingual import apply_preset

MGSM_LANGUAGES = "en,bn,de,es,fr,ja,ru,sw,te,th,zh"  # MGSM's languages; all are in FLoRes and Belebele

STUDY_MODELS = {
    "qwen3": dict(checkpoint="Qwen/Qwen3-30B-A3B", layers="8-35", mode="soft", strength=0.5, tau=0.4),
    "phi": dict(checkpoint="microsoft/Phi-3.5-MoE-instruct", layers="8-17", mode="soft", strength=0.5, tau=0.3),
    "gpt_oss": dict(checkpoint="openai/gpt-oss-20b", layers="4-19", mode="hard", strength=1.0, tau=0.3),
    "olmoe": dict(checkpoint="allenai/OLMoE-1B-7B-0924", layers="6-9", mode="soft", strength=0.5, tau=0.3),
}


def get_config(arg: str = "qwen3"):
    name = arg or "qwen3"
    if name not in STUDY_MODELS:
        raise ValueError(f"configs/bandarkar.py:{arg}: choose one of {', '.join(STUDY_MODELS)}")
    preset = STUDY_MODELS[name]
    c = get_base_config()
    c.stages = "stats,analyze,task_experts,eval,correlate,report"
    c.model.checkpoint = preset["checkpoint"]
    c.model.dtype = "bfloat16"

    c.data.source = "flores"
    c.data.path = "data/flores200"  # FLoRes-200: <path>/<lang>_<Script>/dev.<...> (parallel by index_id)
    c.data.split = "dev"
    c.data.languages = MGSM_LANGUAGES
    c.stats.divergence = True

    c.task_experts.data.source = "mgsm"
    c.task_experts.data.path = "data/mgsm"  # mgsm_<lang>.tsv (google-research/url-nlp)
    c.task_experts.language = "en"
    c.task_experts.taus = "0.1,0.2,0.3,0.4,0.5"

    apply_preset(c, "study")  # MGSM and Belebele on the replayed languages each has; correlate Belebele
    c.eval.variants = "base,steered"
    c.eval.tasks.mgsm.path = "data/mgsm"
    c.eval.tasks.belebele.path = "data/belebele"  # facebook/belebele: <flores>.jsonl per language
    # The study's other steering benchmark (MMLU-Medical; add it to eval.run with the files).
    c.eval.tasks.mmlu_medical.path = "data/mmlu/test"  # hendrycks/test: <subject>_test.csv
    c.eval.steer.source = "task_experts"
    c.eval.steer.layers = preset["layers"]
    c.eval.steer.mode = preset["mode"]
    c.eval.steer.strength = preset["strength"]
    c.eval.steer.tau = preset["tau"]

    c.correlate.variant = "base"
    c.correlate.layers = preset["layers"]
    return c
