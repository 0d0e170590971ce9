"""Readers of the multilingual multiple-choice benchmarks, each building its items' contexts and
choices exactly as lm-evaluation-harness 0.4.13 builds the requests of its task of the same name
(the task YAMLs and ``utils.py`` under ``lm_eval/tasks/``; ``tests/test_lm_eval_agreement.py``
runs lm-eval's own task configs on the same rows). Every reader returns our multiple-choice items
``{"id", "question", "choices", "answer", "subject", "description"}``: ``question`` is the whole
zero-shot context (lm-eval's description + ``doc_to_text``; may be empty), each choice is scored
as ``" " + choice`` after it (lm-eval's ``target_delimiter``), ``subject`` is what few-shot
exemplars are matched on and ``description`` the part of ``question`` a few-shot prompt puts
before its exemplars (:func:`fewshot_context`).

Both the files the dataset authors distribute and the HF dataset rows (JSONL / JSON / Parquet,
:func:`~rise_jax.evaluation.rows.read_rows`) are read; a file holding several languages is
filtered to the one asked for.

* **Global-MMLU** (``CohereForAI/Global-MMLU`` / ``-Lite``; rows ``question``, ``option_a..d``,
  ``answer`` letter, ``subject``, ``subject_category``, ``cultural_sensitivity_label`` CS/CA).
  Context ``<question.strip()>\\nA. <a>\\nB. <b>\\nC. <c>\\nD. <d>\\nAnswer:``, choices the
  letters (lm-eval ``global_mmlu_full_<lang>_<subject>``). ``subjects`` keeps subjects, subject
  categories (``STEM``, ``Medical``...) or the culturally-sensitive / -agnostic split (``CS`` /
  ``CA``).
* **INCLUDE** (``CohereForAI/include-base-44``; rows ``question``, ``option_a..d``, ``answer``
  0-3, ``domain``, ``language``). Context ``The following is multiple-choice question about
  <domain>.<question.strip()>\\nA. …\\nC. <c>\\n D. <d>\\nAnswer:`` — no break after the
  description and a space before ``D.``, as lm-eval's YAML folds it (``include_base_44_<lang>_
  <domain>``, zero-shot). ``subjects`` keeps domains.
* **Global-PIQA** (``mrlbenchmarks/global-piqa-nonparallel`` / ``-parallel``; rows ``prompt``,
  ``solution0..N``, ``label``). Context the prompt, choices the solutions (lm-eval
  ``global_piqa_*_cloze``; it also reports ``acc_bytes``).
* **XCOPA** (github.com/cambridgeltl/xcopa ``data/<lang>/test.<lang>.jsonl`` = the HF rows
  ``premise``, ``choice1``, ``choice2``, ``question`` cause/effect, ``label``). Context the
  premise without its final character and the language's connector (:data:`XCOPA_CONNECTORS`),
  choices with their first letter lower-cased (lm-eval ``xcopa_<lang>``).
* **XNLI** (``XNLI-1.0/xnli.{dev,test}.tsv``: ``language``, ``gold_label`` entailment / neutral /
  contradiction, ``sentence1``, ``sentence2``; or ``facebook/xnli`` rows ``premise``,
  ``hypothesis``, ``label`` 0-2). Empty context; choices ``<premise>, <right>? <label>,
  <hypothesis>`` for the three labels (:data:`XNLI_WORDS`, lm-eval ``xnli_<lang>``).
* **XStoryCloze** (``spring2016.val.<lang>.tsv.split_20_80_eval.tsv``: ``InputSentence1..4``,
  ``RandomFifthSentenceQuiz1/2``, ``AnswerRightEnding``; or ``juletxara/xstory_cloze`` rows
  ``input_sentence_1..4``, ``sentence_quiz1/2``, ``answer_right_ending``). Context the four
  sentences joined by spaces, choices the two endings (lm-eval ``xstorycloze_<lang>``).

The connector and label words are the prompts' own (XGLM's, as lm-eval writes them); a language
without them is an error that lists the languages there are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rise_jax.data.languages import get_language
from rise_jax.evaluation.rows import FormatError, convert_rows

LETTERS = ("A", "B", "C", "D")

# XCOPA: (cause, effect) connectors per language (lm-eval xcopa/utils.py).
XCOPA_CONNECTORS: dict[str, tuple[str, str]] = {
    "et": ("sest", "seetõttu"),
    "ht": ("poukisa", "donk sa"),
    "it": ("perché", "quindi"),
    "id": ("karena", "maka"),
    "qu": ("imataq", "chaymi"),
    "sw": ("kwa sababu", "kwa hiyo"),
    "zh": ("因为", "所以"),
    "ta": ("காரணமாக", "எனவே"),
    "th": ("เพราะ", "ดังนั้น"),
    "tr": ("çünkü", "bu yüzden"),
    "vi": ("bởi vì", "vì vậy"),
}

# XNLI: (question word, entailment, neutral, contradiction) per language (lm-eval xnli/utils.py).
XNLI_WORDS: dict[str, tuple[str, str, str, str]] = {
    "ar": ("صحيح", "نعم", "لذا", "رقم"),
    "bg": ("правилно", "да", "така", "не"),
    "de": ("richtig", "Ja", "Auch", "Nein"),
    "el": ("σωστός", "Ναί", "Έτσι", "όχι"),
    "en": ("right", "Yes", "Also", "No"),
    "es": ("correcto", "Sí", "Asi que", "No"),
    "fr": ("correct", "Oui", "Aussi", "Non"),
    "hi": ("सही", "हाँ", "इसलिए", "नहीं"),
    "ru": ("правильно", "Да", "Так", "Нет"),
    "sw": ("sahihi", "Ndiyo", "Hivyo", "Hapana"),
    "th": ("ถูกต้อง", "ใช่", "ดังนั้น", "ไม่"),
    "tr": ("doğru", "Evet", "Böylece", "Hayır"),
    "ur": ("صحیح", "جی ہاں", "اس لئے", "نہیں"),
    "vi": ("đúng", "Vâng", "Vì vậy", "Không"),
    "zh": ("正确", "是的", "所以", "不是的"),
}
XNLI_LABELS = ("entailment", "neutral", "contradiction")

# The languages each dataset publishes (ISO 639-1 where there is one); presets intersect them
# with a run's replay languages. Global-PIQA's 116 varieties are named by the files.
GLOBAL_MMLU_LANGUAGES = (
    "am,ar,bn,cs,de,el,en,es,fa,fil,fr,ha,he,hi,id,ig,it,ja,ko,ky,lt,mg,ms,ne,nl,ny,pl,pt,ro,ru,si,sn,so,sr,sv,sw,"
    "te,tr,uk,vi,yo,zh"
)
INCLUDE_LANGUAGES = (
    "sq,ar,hy,az,eu,be,bn,bg,zh,hr,nl,et,fi,fr,ka,de,el,he,hi,hu,id,it,ja,kk,ko,lt,ms,ml,ne,mk,fa,pl,pt,ru,sr,es,"
    "tl,ta,te,tr,uk,ur,uz,vi"
)
XCOPA_LANGUAGES = ",".join(XCOPA_CONNECTORS)
XNLI_LANGUAGES = ",".join(XNLI_WORDS)
XSTORYCLOZE_LANGUAGES = "ar,en,es,eu,hi,id,my,ru,sw,te,zh"


def _table(table: dict[str, Any], language: str, what: str) -> Any:
    code = get_language(language).code
    if code not in table:
        raise FormatError(f"{what} has no prompt words for language {language!r}; it has {', '.join(table)}")
    return table[code]


def _subset(items: list[dict[str, Any]], subjects: str, fields: tuple[str, ...], path: str) -> list[dict[str, Any]]:
    """The items whose metadata ``fields`` hold one of the comma-listed ``subjects`` (all when
    empty); a name no item has is an error naming it."""
    wanted = [s.strip() for s in subjects.split(",") if s.strip()]
    if not wanted:
        return items
    kept = [i for i in items if any(i["meta"].get(f) in wanted for f in fields)]
    found = {i["meta"].get(f) for i in kept for f in fields}
    missing = [w for w in wanted if w not in found]
    if missing:
        raise FormatError(f"{path}: no items with {' / '.join(fields)} {', '.join(missing)}")
    return kept


def _lettered(question: str, options: list[Any], d_sep: str = "\n") -> str:
    """``question.strip()`` then ``A. …`` to ``D. …`` and ``Answer:`` (Jinja renders None as
    ``None``); ``d_sep`` is what comes before ``D.`` (INCLUDE's YAML folds it to ``"\\n "``)."""
    a, b, c, d = (str(o) for o in options)
    return f"{question.strip()}\nA. {a}\nB. {b}\nC. {c}{d_sep}D. {d}\nAnswer:"


def _item(item_id: Any, context: str, choices: list[str], answer: int, **meta: Any) -> dict[str, Any]:
    if not 0 <= answer < len(choices):
        raise ValueError(f"answer {answer} outside the {len(choices)} choices")
    description = meta.pop("description", "")
    return {
        "id": str(item_id),
        "question": context,
        "choices": choices,
        "answer": answer,
        "subject": str(meta.get("subject", "")),
        "description": description,
        "meta": meta,
    }


def _language_rows(row: dict[str, Any], field: str, language: str) -> bool:
    """Whether a row of a multilingual file is ``language``'s (by the row's ``field``, any code or
    name the language registry knows)."""
    value = row.get(field)
    return value is None or get_language(str(value)).code == get_language(language).code


# --- readers --------------------------------------------------------------------------------------


def read_global_mmlu(path: str, language: str = "", subjects: str = "") -> list[dict[str, Any]]:
    """Global-MMLU (or -Lite) rows; see the module docstring."""

    def convert(row: dict[str, Any], i: int) -> dict[str, Any]:
        answer = str(row["answer"]).strip()
        if answer not in LETTERS:
            raise ValueError(f"answer {row['answer']!r} is not one of A-D")
        options = [row[f"option_{x}"] for x in "abcd"]
        return _item(
            row.get("sample_id", i),
            _lettered(str(row["question"]), options),
            list(LETTERS),
            LETTERS.index(answer),
            subject=row["subject"],
            subject_category=row.get("subject_category"),
            cultural_sensitivity_label=row.get("cultural_sensitivity_label"),
        )

    items = convert_rows(path, "a Global-MMLU item", convert)
    return _subset(items, subjects, ("subject", "subject_category", "cultural_sensitivity_label"), path)


def read_include(path: str, language: str = "", subjects: str = "") -> list[dict[str, Any]]:
    """INCLUDE (include-base-44) rows; see the module docstring."""

    def convert(row: dict[str, Any], i: int) -> dict[str, Any] | None:
        if language and not _language_rows(row, "language", language):
            return None
        description = f"The following is multiple-choice question about {row['domain']}."
        options = [row[f"option_{x}"] for x in "abcd"]
        return _item(
            i,
            description + _lettered(str(row["question"]), options, "\n "),
            list(LETTERS),
            int(row["answer"]),
            subject=row["domain"],
            description=description,
        )

    return _subset(convert_rows(path, "an INCLUDE item", convert), subjects, ("subject",), path)


def read_global_piqa(path: str, language: str = "", subjects: str = "") -> list[dict[str, Any]]:
    """Global-PIQA rows (non-parallel: two solutions; parallel: four); see the module docstring."""

    def convert(row: dict[str, Any], i: int) -> dict[str, Any]:
        count = 0
        while f"solution{count}" in row:
            count += 1
        if count < 2:
            raise KeyError("solution0 and solution1")
        solutions = [str(row[f"solution{k}"]) for k in range(count)]
        return _item(row.get("example_id", i), str(row["prompt"]), solutions, int(row["label"]))

    return convert_rows(path, "a Global-PIQA item", convert)


def read_xcopa(path: str, language: str, subjects: str = "") -> list[dict[str, Any]]:
    """XCOPA rows (the published JSONL = the HF rows); see the module docstring."""
    cause, effect = _table(XCOPA_CONNECTORS, language, "XCOPA")

    def convert(row: dict[str, Any], i: int) -> dict[str, Any]:
        connector = {"cause": cause, "effect": effect}[row["question"]]
        choices = [c[0].lower() + c[1:] for c in (str(row["choice1"]), str(row["choice2"]))]
        return _item(row.get("idx", i), str(row["premise"]).strip()[:-1] + f" {connector}", choices, int(row["label"]))

    return convert_rows(path, "an XCOPA item", convert)


def read_xnli(path: str, language: str, subjects: str = "") -> list[dict[str, Any]]:
    """XNLI: the published TSV (all languages in one file, kept by its ``language`` column) or
    ``facebook/xnli`` rows of one language; see the module docstring."""
    word, *labels = _table(XNLI_WORDS, language, "XNLI")

    def convert(row: dict[str, Any], i: int) -> dict[str, Any] | None:
        if "sentence1" in row:  # XNLI-1.0 TSV
            if not _language_rows(row, "language", language):
                return None
            premise, hypothesis = row["sentence1"], row["sentence2"]
            if row["gold_label"] not in XNLI_LABELS:
                raise ValueError(f"gold_label {row['gold_label']!r} is not one of {', '.join(XNLI_LABELS)}")
            label = XNLI_LABELS.index(row["gold_label"])
            item_id = row.get("pairID", i)
        else:
            premise, hypothesis, label, item_id = row["premise"], row["hypothesis"], int(row["label"]), i
        choices = [f"{premise}, {word}? {answer}, {hypothesis}" for answer in labels]
        return _item(item_id, "", choices, label)

    return convert_rows(path, f"an XNLI item of language {language}", convert)


def read_xstorycloze(path: str, language: str = "", subjects: str = "") -> list[dict[str, Any]]:
    """XStoryCloze: the published TSV/CSV or the HF rows; see the module docstring."""

    def convert(row: dict[str, Any], i: int) -> dict[str, Any]:
        if "InputSentence1" in row:  # as published
            story = [row[f"InputSentence{k}"] for k in range(1, 5)]
            endings = [row["RandomFifthSentenceQuiz1"], row["RandomFifthSentenceQuiz2"]]
            right, item_id = row["AnswerRightEnding"], row.get("InputStoryid", i)
        else:
            story = [row[f"input_sentence_{k}"] for k in range(1, 5)]
            endings = [row["sentence_quiz1"], row["sentence_quiz2"]]
            right, item_id = row["answer_right_ending"], row.get("story_id", i)
        return _item(item_id, " ".join(str(s) for s in story), [str(e) for e in endings], int(right) - 1)

    return convert_rows(path, "an XStoryCloze item", convert)


READERS: dict[str, Callable[[str, str, str], list[dict[str, Any]]]] = {
    "global_mmlu": read_global_mmlu,
    "include": read_include,
    "global_piqa": read_global_piqa,
    "xcopa": read_xcopa,
    "xnli": read_xnli,
    "xstorycloze": read_xstorycloze,
}
# Which formats ``subjects`` filters, and on what.
SUBSETS = {"global_mmlu": "subject, subject_category or CS / CA", "include": "domain"}


def fewshot_context(item: dict[str, Any], exemplars: list[dict[str, Any]], shots: int) -> str:
    """lm-eval's few-shot context with the ``first_n`` sampler: the description, then the first
    ``shots`` exemplars with the item's ``subject`` (all exemplars when items have none), each its
    context, ``" "`` and its answer, ending in ``"\\n\\n"``, then the item's own context."""
    if shots <= 0:
        return item["question"]
    same = [e for e in exemplars if e.get("subject", "") == item.get("subject", "")]
    if len(same) < shots:
        raise FormatError(
            f"item {item['id']}: {shots} few-shot exemplars asked, the few-shot file has {len(same)}"
            + (f" of subject {item['subject']!r}" if item.get("subject") else "")
        )
    description = item.get("description", "")
    shown = "".join(
        f"{e['question'][len(e.get('description', '')) :]} {e['choices'][e['answer']]}\n\n" for e in same[:shots]
    )
    return description + shown + item["question"][len(description) :]
