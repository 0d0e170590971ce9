"""Task metrics: SQuAD-style F1/EM (TyDiQA-GoldP, XQuAD), TriviaQA's EM/F1 and MGSM number matching.

SQuAD normalisation (the official v1.1 script): lower-case, drop punctuation, drop the English
articles *a/an/the*, collapse whitespace. Made language-aware here: punctuation is every Unicode
``P*`` character (so ``।``, ``、``, ``؟`` go too), articles are stripped only for English, and
for scripts written without spaces (zh, ja, th, lo, my, km) F1 counts characters instead of
whitespace tokens (MLQA's mixed segmentation without its word segmenter).
"""

from __future__ import annotations

import collections
import re
import string
import unicodedata
from collections.abc import Sequence

UNSPACED_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "km"})
_EN_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str, language: str = "en") -> str:
    """SQuAD normalisation, language-aware (see the module docstring)."""
    text = text.lower()
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    if language == "en":
        text = _EN_ARTICLES.sub(" ", text)
    return " ".join(text.split())


_TRIVIAQA_PUNCT = frozenset(string.punctuation + "\u2018\u2019\u00b4`")


def normalize_triviaqa(text: str) -> str:
    """TriviaQA's official normalisation (``triviaqa_evaluation.py``): underscores to spaces,
    lower-case, ASCII punctuation and the quotes ‘ ’ ´ ` to spaces, drop *a/an/the*, collapse
    whitespace. Unlike :func:`normalize_answer` it keeps non-ASCII punctuation and treats ASCII
    symbols (``$``, ``+``, ``=``) as punctuation."""
    text = text.replace("_", " ").lower()
    text = "".join(" " if ch in _TRIVIAQA_PUNCT else ch for ch in text)
    return " ".join(_EN_ARTICLES.sub(" ", text).split())


def triviaqa_scores(prediction: str, answers: Sequence[str]) -> tuple[float, float]:
    """(EM, F1) of a prediction against TriviaQA's answer and aliases: the best over them, after
    :func:`normalize_triviaqa`, F1 over whitespace tokens (the official script)."""
    if not answers:
        raise ValueError("a question needs at least one gold answer")
    pred = normalize_triviaqa(prediction)
    em = max(float(pred == normalize_triviaqa(a)) for a in answers)
    return em, max(_token_f1(pred.split(), normalize_triviaqa(a).split()) for a in answers)


def _tokens(text: str, language: str) -> list[str]:
    norm = normalize_answer(text, language)
    if language in UNSPACED_LANGUAGES:
        return [ch for ch in norm if not ch.isspace()]
    return norm.split()


def exact_match(prediction: str, gold: str, language: str = "en") -> float:
    return float(normalize_answer(prediction, language) == normalize_answer(gold, language))


def f1_score(prediction: str, gold: str, language: str = "en") -> float:
    """Token-overlap F1 of one prediction against one gold answer (SQuAD v1.1)."""
    return _token_f1(_tokens(prediction, language), _tokens(gold, language))


def _token_f1(pred: list[str], ref: list[str]) -> float:
    if not pred or not ref:
        return float(pred == ref)
    common = collections.Counter(pred) & collections.Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def best_over_golds(metric, prediction: str, golds: Sequence[str], language: str = "en") -> float:
    """The maximum of ``metric`` over the gold answers (SQuAD scores against the best match)."""
    if not golds:
        raise ValueError("a question needs at least one gold answer")
    return max(metric(prediction, g, language) for g in golds)


# Thousands separators between digit groups: , . (de/es write 1.000) ' and thin/no-break spaces,
# Arabic ٬, full-width ，. A separator is only dropped when exactly three digits follow.
_SEPARATORS = ",.\u066c\uff0c\u2009\u202f\u00a0'"


def to_ascii_digits(text: str) -> str:
    """Map every Unicode decimal digit (Bengali ০–৯, Thai ๐–๙, Devanagari, full-width ０–９ ...)
    to 0–9, and full-width ．／－ to ASCII."""
    out = []
    for ch in text:
        if ch.isdigit() and not ch.isascii():
            try:
                out.append(str(unicodedata.decimal(ch)))
                continue
            except ValueError:
                pass
        out.append({"\uff0e": ".", "\uff0d": "-", "\u2212": "-"}.get(ch, ch))
    return "".join(out)


_NUMBER = re.compile(r"-?\d+(?:[" + re.escape(_SEPARATORS) + r"]\d{3})*(?:\.\d+)?(?!\d)")


def extract_last_number(text: str) -> float | None:
    """The last number in ``text`` (any script, thousands separators removed), or None.

    ``1,234`` and ``1.234.567`` are thousands-grouped; ``3.5`` is a decimal (a separator followed
    by exactly three digits is read as grouping, as MGSM answers are integers).
    """
    matches = _NUMBER.findall(to_ascii_digits(text))
    if not matches:
        return None
    raw = matches[-1]
    negative = raw.startswith("-")
    body = raw.lstrip("-")
    decimal = ""
    m = re.search(r"\.(\d+)$", body)
    if m and len(m.group(1)) != 3:
        body, decimal = body[: m.start()], m.group(1)
    digits = re.sub(r"\D", "", body)
    value = float(f"{digits}.{decimal}" if decimal else digits)
    return -value if negative else value


def mgsm_correct(output: str, answer: str | float) -> bool:
    """MGSM scoring: the last number of the output equals the (integer) answer."""
    predicted = extract_last_number(output)
    gold = extract_last_number(str(answer)) if isinstance(answer, str) else float(answer)
    return predicted is not None and gold is not None and abs(predicted - gold) < 1e-6
