"""PolyMath (Wang et al. 2025, arXiv 2504.18428; ``Qwen/PolyMath``): multilingual maths at four
difficulty levels, scored as its authors score it.

**Format.** The HF dataset has one config per language and one split per level, each a Parquet
file ``<lang>/<level>.parquet`` (levels ``low``, ``medium``, ``high``, ``top``; 125 problems per
language and level); the GitHub repository (QwenLM/PolyMath) distributes the same rows as
``data/<lang>/<level>.jsonl``. A row is ``{"id": "top-de-0", "question": ..., "answer": ...}``
(the answer a LaTeX string such as ``"$\\frac{1}{2}$"`` or ``"18"``). :func:`read_polymath` reads
a language's directory of the four files, or one file; a row's level is its file's name, else the
prefix of its ``id``, else its ``level`` field. ``subjects`` keeps levels.

**Prompt.** The problem, a blank line, then the language's instruction to put the answer in
``\\boxed{}`` (:data:`INSTRUCTIONS`: the authors' ``instruction.py`` ``query_dic``, the text its
Python literals make — ``$\\boxed\\{\\}$`` with the backslashed braces; the paper appends it after
the problem, the blank line is OpenCompass's PolyMath adapter's join, the repository does not give
one). ``prompt_template`` in the config overrides the join (``{question}``, ``{instruction}``).

**Scoring** (the authors' ``eval/run_eval.py``): spaces are removed from the output and the
content of its *first* ``\\boxed{...}`` (balanced braces) is the prediction (none: wrong); it is
compared with the answer by :func:`answers_equal`, our implementation of the tests of their
``math_equal`` that decide ordinary answers — normalised strings equal (case-insensitive), numbers
within a relative 1e-4 (the answer, /100 or x100 as a percentage), tuples / intervals / sets
element by element, ``a = b`` forms, and symbolic equality with ``sympy`` on LaTeX turned into
expressions (``\\frac``, ``\\sqrt``, ``^``, ``\\cdot``, ``\\pi``, implicit products). Their second
pass (the bundled latex2sympy grammar and ``symeval``) is not reproduced: an answer only that
grammar parses can score lower here.

**Difficulty-weighted accuracy** (the benchmark score, ``benchmark_weighted_acc`` in
``run_eval.py``): ``DW-ACC = Σ_l w_l · acc_l / Σ_l w_l`` with ``w`` = 1, 2, 4, 8 for low, medium,
high, top (Σ = 15), each ``acc_l`` the accuracy in percent on that level. The authors round each
level's accuracy to one decimal first and compute it only when all four levels are scored; we
keep full precision and, when ``subjects`` keeps fewer levels, normalise over the levels scored.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any

from rise_jax.data.languages import get_language
from rise_jax.evaluation.rows import FormatError, convert_rows

LEVELS = ("low", "medium", "high", "top")
LEVEL_WEIGHTS = {"low": 1, "medium": 2, "high": 4, "top": 8}
DEFAULT_TEMPLATE = "{question}\n\n{instruction}"

# The answer instruction per language (QwenLM/PolyMath instruction.py, query_dic).
_BOX = r"$\boxed\{\}$"
INSTRUCTIONS: dict[str, str] = {
    "en": f"Note: Please put the final answer in the {_BOX}.",
    "zh": f"注意：请将最终答案放在 {_BOX} 中。",
    "ar": f"ملاحظة: يُرجى وضع الإجابة النهائية في {_BOX}.",
    "bn": f"বিঃদ্রঃ: অনুগ্রহ করে চূড়ান্ত উত্তরটি {_BOX} এর মধ্যে রাখুন।",
    "de": f"Hinweis: Bitte setzen Sie die endgültige Antwort in {_BOX}.",
    "es": f"Nota: Por favor, coloque la respuesta final en el {_BOX}.",
    "fr": f"Remarque : Veuillez mettre la réponse finale dans le {_BOX}.",
    "id": f"Catatan: Silakan letakkan jawaban akhir di dalam {_BOX}.",
    "it": f"Nota: Per favore, metti la risposta finale nel {_BOX}.",
    "ja": f"注意：最終的な答えを {_BOX} に入れてください。",
    "ko": f"참고: 최종 답안을 {_BOX} 안에 넣어 주세요.",
    "ms": f"Nota: Sila letakkan jawapan akhir dalam {_BOX}.",
    "pt": f"Nota: Por favor, coloque a resposta final no {_BOX}.",
    "ru": f"Примечание: Пожалуйста, поместите окончательный ответ в {_BOX}.",
    "sw": f"Kumbuka: Tafadhali weka jibu la mwisho katika {_BOX}.",
    "te": f"గమనిక: దయచేసి తుది జవాబును {_BOX} లో ఉంచండి.",
    "th": f"หมายเหตุ: กรุณาใส่คำตอบสุดท้ายใน {_BOX}.",
    "vi": f"Lưu ý: Vui lòng đặt câu trả lời cuối cùng trong {_BOX}.",
}
LANGUAGES = tuple(INSTRUCTIONS)
_FILE_EXTENSIONS = (".parquet", ".jsonl", ".json")


# --- reading --------------------------------------------------------------------------------------


def _level_files(path: str) -> list[tuple[str | None, str]]:
    """``(level or None, file)`` of a language directory (``<level>.parquet`` / ``.jsonl``) or one file."""
    if not os.path.isdir(path):
        stem = os.path.basename(path).split(".")[0]
        return [(stem if stem in LEVELS else None, path)]
    found = []
    for level in LEVELS:
        files = [os.path.join(path, level + ext) for ext in _FILE_EXTENSIONS]
        files = [f for f in files if os.path.isfile(f)]
        if files:
            found.append((level, files[0]))
    if not found:
        raise FormatError(f"{path}: no PolyMath level files ({', '.join(f'{lv}.parquet' for lv in LEVELS)})")
    return found


def read_polymath(path: str, language: str = "", subjects: str = "") -> list[dict[str, Any]]:
    """PolyMath items ``{id, question, answer, level}`` of one language; see the module docstring."""
    wanted = [s.strip() for s in subjects.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in LEVELS]
    if unknown:
        raise FormatError(f"PolyMath levels {', '.join(unknown)} unknown; choose from {', '.join(LEVELS)}")
    items: list[dict[str, Any]] = []
    for file_level, file in _level_files(path):
        if file_level is not None and wanted and file_level not in wanted:
            continue

        def convert(row: dict[str, Any], i: int, file_level=file_level) -> dict[str, Any] | None:
            item_id = str(row.get("id", i))
            level = file_level or row.get("level") or item_id.split("-")[0]
            if level not in LEVELS:
                raise ValueError(f"level {level!r} (from the file name, 'level' or the id) is not one of {LEVELS}")
            question, answer = str(row["question"]), row["answer"]
            if answer is None or not str(answer).strip():
                raise ValueError("empty answer")
            if wanted and level not in wanted:
                return None
            return {"id": item_id, "question": question, "answer": str(answer), "level": level}

        items.extend(convert_rows(file, "a PolyMath row", convert))
    if not items:
        raise FormatError(f"{path}: no PolyMath items of level(s) {', '.join(wanted)}")
    return items


def instruction(language: str) -> str:
    """The language's answer instruction; a language PolyMath lacks is an error listing its 18."""
    code = get_language(language).code
    if code not in INSTRUCTIONS:
        raise FormatError(f"PolyMath has no instruction for language {language!r}; it has {', '.join(LANGUAGES)}")
    return INSTRUCTIONS[code]


def polymath_prompt(question: str, language: str, template: str = DEFAULT_TEMPLATE) -> str:
    """The problem and the language's instruction joined by ``template``."""
    try:
        return template.format(question=question, instruction=instruction(language))
    except (KeyError, IndexError) as err:
        raise FormatError(f"prompt_template: unknown placeholder {err} (use {{question}}, {{instruction}})") from None


# --- answer extraction ----------------------------------------------------------------------------


def extract_boxed(output: str) -> str | None:
    """The content of the first ``boxed{...}`` with balanced braces in ``output`` with its spaces
    removed (the authors' ``extract_boxed_content``, first match), or None."""
    text = output.replace(" ", "")
    for match in re.finditer(r"boxed\{", text):
        depth, i = 1, match.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            return text[match.end() : i - 1]
    return None


_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")


def normalise(answer: str) -> str:
    """A LaTeX answer in a canonical surface form: no ``$``, spaces, ``\\left`` / ``\\right``,
    ``\\!``, ``\\displaystyle``, degree or percent signs, trailing period; ``\\dfrac`` /
    ``\\tfrac`` -> ``\\frac``; ``\\text{...}`` -> its text; ``\\{`` -> ``{``; a short
    ``x =`` prefix dropped."""
    s = str(answer).strip().replace("\n", "")
    for old, new in (
        ("\\left", ""),
        ("\\right", ""),
        ("\\!", ""),
        ("\\displaystyle", ""),
        ("\\dfrac", "\\frac"),
        ("\\tfrac", "\\frac"),
        ("^{\\circ}", ""),
        ("^\\circ", ""),
        ("\\%", ""),
        ("%", ""),
        ("\\$", ""),
        ("$", ""),
        ("\\{", "{"),
        ("\\}", "}"),
        ("\\(", ""),
        ("\\)", ""),
        ("\\,", ""),
        ("\\;", ""),
        ("~", ""),
    ):
        s = s.replace(old, new)
    s = _TEXT.sub(r"\1", s).replace(" ", "").rstrip(".")
    lhs, eq, rhs = s.partition("=")
    if eq and "=" not in rhs and len(lhs) <= 2 and rhs:
        s = rhs
    return s


def _number(s: str) -> float | None:
    """``s`` as a number: plain (thousands commas allowed), ``a/b`` or ``\\frac{a}{b}``."""
    s = re.sub(r"^(-?\d{1,3}(?:,\d{3})+)(\.\d+)?$", lambda m: m.group(0).replace(",", ""), s)
    m = re.fullmatch(r"(-?)\\frac\{(-?[\d.]+)\}\{(-?[\d.]+)\}", s) or re.fullmatch(r"(-?)(-?[\d.]+)/(-?[\d.]+)", s)
    try:
        if m:
            value = float(m.group(2)) / float(m.group(3))
            return -value if m.group(1) else value
        return float(s)
    except (ValueError, ZeroDivisionError):
        return None


def _split_top(s: str) -> list[str]:
    """``s`` split at the commas outside any bracket."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    return [*parts, s[start:]]


def _latex_to_expression(s: str) -> str:
    """A sympy-parsable form of simple LaTeX: fractions, roots, powers, products, pi, infinity."""
    for _ in range(8):  # nested fractions and roots, innermost first
        new = re.sub(r"\\frac\{([^{}]*)\}\{([^{}]*)\}", r"((\1)/(\2))", s)
        new = re.sub(r"\\sqrt\[([^\[\]]*)\]\{([^{}]*)\}", r"((\2)**(1/(\1)))", new)
        new = re.sub(r"\\sqrt\{([^{}]*)\}", r"sqrt(\1)", new)
        if new == s:
            break
        s = new
    for old, new in (("\\cdot", "*"), ("\\times", "*"), ("\\pi", "pi"), ("\\infty", "oo"), ("^", "**")):
        s = s.replace(old, new)
    s = re.sub(r"\\ln", "log", s)
    s = re.sub(r"\\(sin|cos|tan|log|exp)", r"\1", s)
    if "\\" in s:
        raise ValueError(f"LaTeX command left in {s!r}")
    return s.replace("{", "(").replace("}", ")")


def _symbolic_equal(a: str, b: str) -> bool:
    """Whether sympy finds ``a - b`` simplifies to zero (False when either does not parse)."""
    if max(len(a), len(b)) > 200:  # sympy's simplify can run for minutes on long inputs
        return False
    from sympy import simplify
    from sympy.parsing.sympy_parser import (
        convert_xor,
        implicit_multiplication_application,
        parse_expr,
        standard_transformations,
    )

    transformations = (*standard_transformations, implicit_multiplication_application, convert_xor)
    try:
        x, y = (parse_expr(_latex_to_expression(v), transformations=transformations) for v in (a, b))
        return bool(simplify(x - y) == 0)
    except Exception:  # sympy raises many kinds of errors on what it cannot parse or compare
        return False


def answers_equal(prediction: str | None, reference: str) -> bool:
    """Whether a extracted prediction is the reference answer; see the module docstring."""
    if prediction is None:
        return False
    p, r = normalise(prediction), normalise(reference)
    if not p:
        return False
    if p.lower() == r.lower():
        return True
    pn, rn = _number(p), _number(r)
    if pn is not None and rn is not None:
        return any(math.isclose(pn, ref, rel_tol=1e-4) for ref in (rn, rn / 100, rn * 100))
    bracketed = p[0] in "([{" and p[-1] in ")]}" and (p[0], p[-1]) == (r[0], r[-1])
    if bracketed:  # tuples, intervals, sets: the same brackets, element by element
        pp, rp = _split_top(p[1:-1]), _split_top(r[1:-1])
        if len(pp) > 1 and len(pp) == len(rp):
            return all(answers_equal(x, y) for x, y in zip(pp, rp, strict=True))
    pp, rp = _split_top(p), _split_top(r)
    if len(pp) > 1 and len(pp) == len(rp):  # "1,2" against "1, 2": an unbracketed list
        return all(answers_equal(x, y) for x, y in zip(pp, rp, strict=True))
    if p.count("=") == 1 and r.count("=") == 1:  # equations: the same up to sign
        (pl, pr), (rl, rr) = p.split("="), r.split("=")
        return _symbolic_equal(f"({pl})-({pr})", f"({rl})-({rr})") or _symbolic_equal(
            f"({pr})-({pl})", f"({rl})-({rr})"
        )
    return _symbolic_equal(p, r)


def level_scores(levels: list[str], correct: list[bool]) -> dict[str, float]:
    """``accuracy_<level>`` of each level scored, ``accuracy`` over all items and the
    difficulty-weighted ``dw_accuracy`` (percent); see the module docstring."""
    scores: dict[str, float] = {}
    for level in LEVELS:
        hits = [c for lv, c in zip(levels, correct, strict=True) if lv == level]
        if hits:
            scores[f"accuracy_{level}"] = 100.0 * sum(hits) / len(hits)
    present = [lv for lv in LEVELS if f"accuracy_{lv}" in scores]
    total = sum(LEVEL_WEIGHTS[lv] for lv in present)
    scores["dw_accuracy"] = sum(LEVEL_WEIGHTS[lv] * scores[f"accuracy_{lv}"] for lv in present) / total
    scores["accuracy"] = 100.0 * sum(correct) / len(correct)
    return scores
