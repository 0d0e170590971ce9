"""Readers of the general-ability benchmarks' published file formats (RISE paper Table 4), each
returning the items of our task formats:

* multiple choice ``{"id", "question", "choices": [str], "answer": int}`` — ``question`` is the
  context the choices are scored after, as lm-evaluation-harness builds it:

  - **MMLU** (hendrycks/test): the original per-subject CSVs (``<subject>_test.csv``, no header:
    question, A, B, C, D, answer letter) or ``cais/mmlu`` rows (``question``, ``subject``,
    ``choices``, ``answer`` index) as JSONL/Parquet. Context: "The following are multiple choice
    questions (with answers) about <subject>.\\n\\n<question>\\nA. …\\nD. …\\nAnswer:", choices
    the letters A-D (lm-eval ``mmlu``, zero-shot).
  - **ARC** (allenai): the ARC-V1-Feb2018 JSONL (``question: {stem, choices: [{text, label}]}``,
    ``answerKey``) or ``allenai/ai2_arc`` rows (``question``, ``choices: {text, label}``).
    Context "Question: <q>\\nAnswer:", choices the answer texts (lm-eval ``arc_challenge``).
  - **HellaSwag** (rowanz): ``hellaswag_val.jsonl`` / ``Rowan/hellaswag`` rows (``activity_label``,
    ``ctx_a``, ``ctx_b``, ``endings``, ``label``). Context "<activity>: <ctx_a> <Ctx_b>", choices
    the endings, both cleaned of WikiHow's ``[title]``/``[step]`` markers (lm-eval ``hellaswag``).

* open QA ``{"id", "question", "answers": [str]}``:

  - **TriviaQA** (mandarjoshi): the official ``qa/*.json`` (``{"Data": [{"Question", "QuestionId",
    "Answer": {"Value", "Aliases", ...}}]}``) or ``trivia_qa`` rows (``question``, ``question_id``,
    ``answer: {value, aliases}``) as JSONL/Parquet; the answers are the value and its aliases.

The multilingual multiple-choice benchmarks (Global-MMLU, INCLUDE, Global-PIQA, XCOPA, XNLI,
XStoryCloze) are read by :mod:`rise_jax.evaluation.multilingual_mc` and registered here too; they
need the language (``--language``). So are the two generation benchmarks with a task kind of
their own: PolyMath (:mod:`rise_jax.evaluation.polymath`, a language's directory of level files)
and MMLU-ProX (:mod:`rise_jax.evaluation.mmlu_prox`, needs the language). ``jsonl`` is our own format, read as is. :data:`MMLU_MEDICAL` is the medical subset the
companion study evaluates (the six clinical MMLU subjects of MultiMedQA).

``python -m rise_jax.evaluation.formats --format=arc --input=ARC-Challenge-Test.jsonl
--output=arc.jsonl`` writes the converted items (e.g. for another evaluator); ``--format=xnli
--language=sw --input=xnli.test.tsv`` one language of a multilingual file.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable
from typing import Any

from rise_jax.evaluation import mmlu_prox, multilingual_mc, polymath
from rise_jax.evaluation.rows import FormatError, convert_rows

MMLU_MEDICAL = (
    "anatomy",
    "clinical_knowledge",
    "college_biology",
    "college_medicine",
    "medical_genetics",
    "professional_medicine",
)
LETTERS = ("A", "B", "C", "D")


# --- MMLU -----------------------------------------------------------------------------------------


def mmlu_prompt(subject: str, question: str, options: list[str]) -> str:
    """lm-eval's zero-shot MMLU context (description, question, lettered options, ``Answer:``)."""
    lines = [f"{letter}. {text}" for letter, text in zip(LETTERS, options, strict=True)]
    topic = subject.replace("_", " ")
    return f"The following are multiple choice questions (with answers) about {topic}.\n\n" + "\n".join(
        [question.strip(), *lines, "Answer:"]
    )


def _mmlu_item(item_id: str, subject: str, question: str, options: list[str], answer: int) -> dict[str, Any]:
    if len(options) != 4 or not 0 <= answer < 4:
        raise ValueError(f"needs 4 options and an answer in 0-3, got {len(options)} options and {answer}")
    return {
        "id": item_id,
        "subject": subject,
        "question": mmlu_prompt(subject, question, options),
        "choices": list(LETTERS),
        "answer": answer,
    }


def _mmlu_csv(path: str, subject: str) -> list[dict[str, Any]]:
    items = []
    with open(path, encoding="utf-8", newline="") as fh:
        for n, row in enumerate(csv.reader(fh), 1):
            if len(row) != 6 or row[5].strip() not in LETTERS:
                raise FormatError(f"{path}: line {n}: not an MMLU row (question, A, B, C, D, answer letter A-D)")
            items.append(_mmlu_item(f"{subject}-{n - 1}", subject, row[0], row[1:5], LETTERS.index(row[5].strip())))
    return items


_SPLIT_SUFFIX = re.compile(r"_(test|dev|val)\.csv$")


def read_mmlu(path: str, subjects: str | tuple[str, ...] = "") -> list[dict[str, Any]]:
    """MMLU items from a directory of ``<subject>_<split>.csv``, one such CSV, or ``cais/mmlu``
    rows; ``subjects`` keeps only those (comma list, or ``medical`` for :data:`MMLU_MEDICAL`)."""
    if isinstance(subjects, str):
        wanted = MMLU_MEDICAL if subjects == "medical" else tuple(s for s in subjects.split(",") if s.strip())
    else:
        wanted = tuple(subjects)
    wanted = tuple(s.strip() for s in wanted)
    if os.path.isdir(path) or path.endswith(".csv"):
        files = (
            sorted(os.path.join(path, f) for f in os.listdir(path) if _SPLIT_SUFFIX.search(f))
            if os.path.isdir(path)
            else [path]
        )
        if not files:
            raise FormatError(f"{path}: no MMLU <subject>_test.csv files")
        items = []
        for file in files:
            subject = _SPLIT_SUFFIX.sub("", os.path.basename(file))
            if not wanted or subject in wanted:
                items.extend(_mmlu_csv(file, subject))
    else:

        def convert(row: dict[str, Any], i: int) -> dict[str, Any]:
            return _mmlu_item(
                f"{row['subject']}-{i}", row["subject"], row["question"], list(row["choices"]), int(row["answer"])
            )

        items = [x for x in convert_rows(path, "an MMLU item", convert) if not wanted or x["subject"] in wanted]
    found = {x["subject"] for x in items}
    missing = [s for s in wanted if s not in found]
    if missing or not items:
        raise FormatError(f"{path}: no MMLU items for subject(s) {', '.join(missing) or ', '.join(wanted)}")
    return items


# --- ARC ------------------------------------------------------------------------------------------


def read_arc(path: str) -> list[dict[str, Any]]:
    """ARC items (published ``question.stem`` layout or ``allenai/ai2_arc`` rows)."""

    def convert(row: dict[str, Any], i: int) -> dict[str, Any]:
        q = row["question"]
        if isinstance(q, dict):  # ARC-V1-Feb2018: {"stem", "choices": [{"text", "label"}]}
            stem, texts, labels = q["stem"], [c["text"] for c in q["choices"]], [c["label"] for c in q["choices"]]
        else:  # ai2_arc: "choices": {"text": [...], "label": [...]}
            stem, texts, labels = q, list(row["choices"]["text"]), list(row["choices"]["label"])
        key = str(row["answerKey"])
        if key not in labels:
            raise ValueError(f"answerKey {key!r} is not one of the labels {labels}")
        return {
            "id": str(row.get("id", i)),
            "question": f"Question: {stem}\nAnswer:",
            "choices": texts,
            "answer": labels.index(key),
        }

    return convert_rows(path, "an ARC item", convert)


# --- HellaSwag ------------------------------------------------------------------------------------


def _hellaswag_clean(text: str) -> str:
    """lm-eval's HellaSwag preprocessing: ``[title]`` ends a sentence, other bracketed markers go."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def read_hellaswag(path: str) -> list[dict[str, Any]]:
    """HellaSwag items: context "<activity_label>: <ctx_a> <ctx_b capitalised>", the 4 endings."""

    def convert(row: dict[str, Any], i: int) -> dict[str, Any]:
        ctx = row["ctx_a"] + " " + row["ctx_b"].capitalize()
        endings = [_hellaswag_clean(e) for e in row["endings"]]
        answer = int(row["label"])
        if not 0 <= answer < len(endings):
            raise ValueError(f"label {answer} outside the {len(endings)} endings")
        return {
            "id": str(row.get("ind", i)),
            "question": _hellaswag_clean(row["activity_label"] + ": " + ctx),
            "choices": endings,
            "answer": answer,
        }

    return convert_rows(path, "a HellaSwag item", convert)


# --- TriviaQA -------------------------------------------------------------------------------------


def read_triviaqa(path: str) -> list[dict[str, Any]]:
    """TriviaQA open-QA items; ``answers`` = the answer's value then its aliases (deduplicated)."""

    def convert(row: dict[str, Any], i: int) -> dict[str, Any]:
        if "Question" in row:  # official JSON
            question, qid, ans = row["Question"], row.get("QuestionId", i), row["Answer"]
            value, aliases = ans.get("Value"), ans.get("Aliases", [])
        else:  # HF trivia_qa rows
            question, qid, ans = row["question"], row.get("question_id", i), row["answer"]
            value, aliases = ans.get("value"), ans.get("aliases", [])
        answers = list(dict.fromkeys(a for a in [value, *aliases] if a))
        if not answers:
            raise ValueError("no answer value or aliases")
        return {"id": str(qid), "question": question, "answers": answers}

    return convert_rows(path, "a TriviaQA item", convert)


# --- our own formats and the registry ------------------------------------------------------------


def read_jsonl_mc(path: str) -> list[dict[str, Any]]:
    """Our multiple-choice JSONL, checked."""

    def convert(row: dict[str, Any], i: int) -> dict[str, Any]:
        if not (isinstance(row["choices"], list) and 0 <= int(row["answer"]) < len(row["choices"])):
            raise ValueError("answer index outside the choices")
        return {**row, "id": str(row.get("id", i)), "question": str(row["question"]), "answer": int(row["answer"])}

    return convert_rows(path, "a multiple-choice item", convert)


def read_jsonl_qa(path: str) -> list[dict[str, Any]]:
    """Our open-QA JSONL (``question`` and a non-empty list of ``answers``), checked."""

    def convert(row: dict[str, Any], i: int) -> dict[str, Any]:
        answers = row["answers"]
        if not (isinstance(answers, list) and answers and all(isinstance(a, str) for a in answers)):
            raise ValueError("answers must be a non-empty list of strings")
        return {"id": str(row.get("id", i)), "question": str(row["question"]), "answers": answers}

    return convert_rows(path, "an open-QA item", convert)


MC_FORMATS: dict[str, Callable[..., list[dict[str, Any]]]] = {
    "jsonl": read_jsonl_mc,
    "mmlu": read_mmlu,
    "arc": read_arc,
    "hellaswag": read_hellaswag,
    **multilingual_mc.READERS,
}
QA_FORMATS: dict[str, Callable[..., list[dict[str, Any]]]] = {"jsonl": read_jsonl_qa, "triviaqa": read_triviaqa}
# The generation tasks with a format of their own: task kind -> {format: reader(path, language, subjects)}.
KIND_FORMATS: dict[str, dict[str, Callable[..., list[dict[str, Any]]]]] = {
    "multiple_choice": MC_FORMATS,
    "open_qa": QA_FORMATS,
    "polymath": {"polymath": polymath.read_polymath},
    "mmlu_prox": {"mmlu_prox": mmlu_prox.read_mmlu_prox},
}
# The readers that need the file's language (prompt words, or a file of several languages).
NEEDS_LANGUAGE = (*multilingual_mc.READERS, "mmlu_prox")
# What ``subjects`` filters in the formats that have subsets.
SUBSETS = {
    "mmlu": "subject (or 'medical')",
    **multilingual_mc.SUBSETS,
    "polymath": "difficulty level (low, medium, high, top)",
    "mmlu_prox": "category (biology, ..., computer_science, ...)",
}


def read_items(kind: str, fmt: str, path: str, subjects: str = "", language: str = "") -> list[dict[str, Any]]:
    """Items of a task of ``kind`` (:data:`KIND_FORMATS`: ``multiple_choice``, ``open_qa``,
    ``polymath``, ``mmlu_prox``) read from ``path`` in format ``fmt``; ``language`` is the
    language asked for (the multilingual formats' prompt words, and the rows of a file that holds
    several languages); ``subjects`` keeps a format's subsets (:data:`SUBSETS`)."""
    if kind not in KIND_FORMATS:
        raise FormatError(f"task kind {kind!r} reads no published format; those that do: {', '.join(KIND_FORMATS)}")
    table = KIND_FORMATS[kind]
    if fmt not in table:
        raise FormatError(f"unknown {kind} format {fmt!r}; choose one of {', '.join(table)}")
    if subjects and fmt not in SUBSETS:
        raise FormatError(f"subjects={subjects!r} applies only to formats {', '.join(SUBSETS)}, not {fmt!r}")
    if fmt in NEEDS_LANGUAGE and not language:
        raise FormatError(f"format {fmt!r} needs the language of {path}")
    if fmt in multilingual_mc.READERS or kind in ("polymath", "mmlu_prox"):
        return table[fmt](path, language, subjects)
    return read_mmlu(path, subjects) if fmt == "mmlu" else table[fmt](path)


def main(argv: list[str] | None = None) -> None:
    """Convert one published file to our JSONL task format."""
    import argparse

    from rise_jax.io_utils import write_jsonl_atomic

    parser = argparse.ArgumentParser(description=main.__doc__)
    kinds = {fmt: kind for kind, table in KIND_FORMATS.items() for fmt in table if fmt != "jsonl"}
    parser.add_argument("--format", required=True, choices=sorted(kinds))
    parser.add_argument("--input", required=True, help="the published file (or MMLU's directory of CSVs)")
    parser.add_argument("--output", required=True, help="JSONL to write")
    parser.add_argument(
        "--subjects", default="", help="the subsets to keep: " + "; ".join(f"{k}: {v}" for k, v in SUBSETS.items())
    )
    parser.add_argument(
        "--language", default="", help="the file's language (needed by " + ", ".join(NEEDS_LANGUAGE) + ")"
    )
    args = parser.parse_args(argv)
    kind = kinds[args.format]
    items = read_items(kind, args.format, args.input, args.subjects, args.language)
    write_jsonl_atomic(args.output, items)
    print(f"{args.output}: {len(items)} {kind} items")


if __name__ == "__main__":
    main()
