"""Machine translation as the field scores it: prompts from a template stated in the config, and
corpus chrF++ and BLEU from ``sacrebleu`` with their signatures (which tokenizer, smoothing,
character/word orders, version), so a reported number says how it was made.

* chrF++ = ``sacrebleu.CHRF(word_order=2)`` (chrF with word bigrams; Popović 2017), the metric
  FLORES-200 / NLLB report next to spBLEU;
* BLEU = ``sacrebleu.BLEU`` with the tokenizer ``bleu_tokenize`` names, or sacrebleu's default
  for the target language (``zh`` for Chinese, ``ja-mecab`` for Japanese, ``ko-mecab`` for
  Korean, ``13a`` otherwise; ``flores200`` is spBLEU, its SentencePiece model fetched by
  sacrebleu on first use).
"""

from __future__ import annotations

from typing import Any

import sacrebleu

from rise_jax.errors import RiseError

DEFAULT_TEMPLATE = "Translate the following sentence from {source_language} to {target_language}.\n{source_language}: {source}\n{target_language}:"
DIRECTIONS = ("en-xx", "xx-en")


class TranslationError(RiseError, ValueError):
    """A translation task set up wrong (direction, template, tokenizer); the message names the field."""


def translation_prompt(
    template: str, source: str, source_language: str, target_language: str, shots: list[tuple[str, str]] = ()
) -> str:
    """The prompt of one sentence: ``template`` filled with the sentence and the two languages'
    English names; each few-shot pair (source, reference) comes first as the template filled and
    answered (``" " + reference``), separated by blank lines."""

    def fill(text: str) -> str:
        try:
            return template.format(source=text, source_language=source_language, target_language=target_language)
        except (KeyError, IndexError) as err:
            raise TranslationError(
                f"prompt_template: unknown placeholder {err} (use {{source}}, {{source_language}}, {{target_language}})"
            ) from None

    parts = [f"{fill(s)} {t}" for s, t in shots]
    return "\n\n".join([*parts, fill(source)])


def first_line(output: str) -> str:
    """The translation in a model's output: its first non-empty line, stripped (a base model goes
    on with the next sentence of the pattern)."""
    for line in output.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def corpus_scores(hypotheses: list[str], references: list[str], target: str, bleu_tokenize: str = "") -> dict[str, Any]:
    """``{chrf, bleu, chrf_signature, bleu_signature}``: corpus chrF++ and BLEU of the hypotheses
    against one reference each (``target``: the target language code, for BLEU's default
    tokenizer)."""
    chrf = sacrebleu.CHRF(word_order=2)
    try:
        bleu = sacrebleu.BLEU(tokenize=bleu_tokenize or None, trg_lang=target)
    except Exception as err:  # sacrebleu raises plain errors for a tokenizer it cannot build
        raise TranslationError(
            f"bleu_tokenize = {bleu_tokenize!r} for target {target!r}: sacrebleu cannot tokenize ({err}); "
            "set bleu_tokenize (e.g. 13a, char, flores200)"
        ) from err
    return {
        "chrf": chrf.corpus_score(hypotheses, [references]).score,
        "bleu": bleu.corpus_score(hypotheses, [references]).score,
        "chrf_signature": str(chrf.get_signature()),
        "bleu_signature": str(bleu.get_signature()),
    }


def sentence_chrf(hypothesis: str, reference: str) -> float:
    """chrF++ of one sentence (the saved generation's score)."""
    return sacrebleu.CHRF(word_order=2).sentence_score(hypothesis, [reference]).score
