"""Which languages an eval task's dataset publishes, and the languages a task is run on when its
config says ``languages = "replay"``: those of the replay set (``config.data.languages``) the
dataset has, in the replay set's order — so every scored language is also a point of the
performance ↔ routing-alignment correlation, and narrowing the replay set narrows the eval.

The tables are the datasets' own (:mod:`~rise_jax.evaluation.multilingual_mc`,
:mod:`~rise_jax.evaluation.polymath`, :mod:`~rise_jax.evaluation.mmlu_prox`) and the language
registry's (MGSM). Tasks whose data exist for any language — Belebele and FLORES (the 200
FLoRes languages), Global-PIQA (100+ varieties, named by its files), perplexity, our own
JSONL, SQuAD-format QA — take every replayed language; translation leaves out English, the pivot
of both directions. English-only published benchmarks (MMLU, ARC, HellaSwag, TriviaQA) take
English.
"""

from __future__ import annotations

from typing import Any

from rise_jax.config_values import comma_list
from rise_jax.data.languages import get_language, mgsm_languages
from rise_jax.evaluation import mmlu_prox, multilingual_mc, polymath

REPLAY = "replay"  # the languages value that asks for this module's resolution
ANY = None  # a dataset with data for any language
_ENGLISH_ONLY = ("mmlu", "arc", "hellaswag", "triviaqa")


def _codes(names) -> tuple[str, ...]:
    return tuple(dict.fromkeys(get_language(n).code for n in names))


def published_languages(task: Any) -> tuple[str, ...] | None:
    """The canonical codes of the languages ``task``'s dataset has (by its kind and format), or
    :data:`ANY`."""
    kind, fmt = task.kind, task.get("format", "")
    if kind == "mgsm":
        return _codes(mgsm_languages())
    if kind == "polymath":
        return _codes(polymath.LANGUAGES)
    if kind == "mmlu_prox":
        return _codes(mmlu_prox.LANGUAGES)
    if fmt in _ENGLISH_ONLY:
        return ("en",)
    tables = {
        "global_mmlu": comma_list(multilingual_mc.GLOBAL_MMLU_LANGUAGES),
        "include": comma_list(multilingual_mc.INCLUDE_LANGUAGES),
        "xcopa": multilingual_mc.XCOPA_CONNECTORS,
        "xnli": multilingual_mc.XNLI_WORDS,
        "xstorycloze": comma_list(multilingual_mc.XSTORYCLOZE_LANGUAGES),
    }
    return _codes(tables[fmt]) if kind == "multiple_choice" and fmt in tables else ANY


def shared_languages(task: Any, replay: list[str]) -> list[str]:
    """The replayed languages ``task`` can be scored on, in the replay set's order."""
    published = published_languages(task)
    kept = [lang for lang in replay if published is ANY or lang in published]
    return [lang for lang in kept if lang != "en"] if task.kind == "translation" else kept
