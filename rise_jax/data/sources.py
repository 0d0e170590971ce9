"""Per-language text sources.

Every loader returns ``list[Example]`` for one language; ``Example.id`` aligns parallel corpora
(FLoRes ``index_id``, NTREX line number) so the same sentence can be compared across languages.

Sources (``kind``):

Languages are found by the datasets themselves (:func:`rise_jax.data.languages.get_language`
resolves each dataset's own codes): a language a dataset lacks is an error naming the dataset,
the language and the languages it has.

* ``plain_text`` — ``<path>/<code>.txt`` for any code naming the language (``am.txt``,
  ``amh.txt``, ``amh_Ethi.txt``), one example a line; lines stripped, blank lines skipped,
  non-UTF-8 bytes an error naming the byte offset.
* ``mgsm`` — ``<path>/mgsm_<code>.tsv``: no header, ``question<TAB>answer``.
* ``squad`` — SQuAD-format JSON (TyDiQA-GoldP, XQuAD): ``path`` with ``{lang}`` (ISO) or
  ``{tydiqa}`` placeholders names one file per language; without one, a single multilingual file
  is filtered by the TyDiQA id prefix (``bengali-...``). Text = context, newline, question
  (``text_fields = "question,context"``: question first, as the RISE reference code replays it).
* ``flores`` — ``<path>/<lang>_<Script>/<split>.tsv`` with header ``index_id, category, text``:
  any FLoRes-200 directory present under the path.
* ``ntrex`` — ``<path>/newstest2019-ref.<code>.txt`` with NTREX-128's own file codes (English:
  ``newstest2019-src.eng.txt``).
* ``opencompass`` — an OpenCompass predictions JSON per language (``path`` with ``{lang}`` /
  ``{tydiqa}`` placeholders): prompt + prediction, or the prompt alone with ``prompt_only``.
* ``generations`` — this tool's own saved evaluation generations: ``path`` is one task's
  directory of them (``<workdir>/eval/generations/<variant>/<task>``) holding ``<lang>.jsonl``;
  text = the prompt exactly as the model was given it (already rendered: use ``template = raw``)
  followed by the model's output, which continued it; ``prompt_only``: the prompt alone. Examples skipped as too long are
  left out. Replays exactly what the model was evaluated on.
* ``hf`` — any Hugging Face dataset through ``datasets.load_dataset(hf_path, hf_name, split=split)``;
  ``hf_name`` / ``hf_data_files`` may hold ``{lang}``/``{flores}``/``{tydiqa}`` placeholders,
  ``text_fields`` lists the columns joined into the text, ``hf_filter`` = ``"column:prefix"``
  keeps rows whose column starts with the (templated) prefix; ``answer_field`` (dotted path such as
  ``answers.text.0``) makes prompt/answer examples (prompt = the text fields) for QA training.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import stat
from typing import Any

from absl import logging

from rise_jax.config_values import comma_list
from rise_jax.data.languages import Language, get_language
from rise_jax.errors import RiseError

SOURCE_KINDS = ("plain_text", "mgsm", "squad", "flores", "ntrex", "hf", "opencompass", "generations")


class SourceError(RiseError, ValueError):
    """A source that is missing, unreadable or empty; the message names the file."""


@dataclasses.dataclass(frozen=True)
class Example:
    """One text of one language. ``prompt``/``answer`` are set for prompt-answer data (MGSM,
    SQuAD-style QA) so training can score the completion only."""

    id: str
    text: str
    prompt: str | None = None
    answer: str | None = None
    answers: tuple[str, ...] = ()  # every gold answer (SQuAD-style QA scores against the best)
    context: str | None = None  # QA: the passage (``prompt`` is context + question)
    question: str | None = None


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    kind: str
    path: str = ""
    split: str = "dev"
    include_answer: bool = False  # squad/mgsm: append the answer to the text
    hf_path: str = ""
    hf_name: str = ""
    hf_data_files: str = ""
    text_fields: str = "text"
    hf_filter: str = ""
    answer_field: str = ""  # hf: dotted path of the answer, e.g. "answers.text.0" (prompt = text_fields)
    prompt_only: bool = False  # opencompass / generations: replay the prompts without the model's outputs

    def __post_init__(self):
        if self.kind not in SOURCE_KINDS:
            raise SourceError(f"unknown source kind {self.kind!r}; choose one of {', '.join(SOURCE_KINDS)}")

    @classmethod
    def from_config(cls, section: Any) -> SourceSpec:
        """From a data-source config section (``config.data``, ``config.train.data``: the fields
        :func:`rise_jax.configs.base.data_source` defines); fields it lacks keep their defaults."""
        fields = {f.name for f in dataclasses.fields(cls)} - {"kind"}
        return cls(kind=section.source, **{k: section[k] for k in fields if k in section})


def _fill(template: str, lang: Language) -> str:
    return template.format(lang=lang.code, code=lang.code, flores=lang.flores, tydiqa=lang.tydiqa, ntrex=lang.ntrex)


def _kind_of(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"


def _check_regular(path: str) -> None:
    """``path`` is a regular file (after symlinks); FIFOs, sockets and devices are refused without
    being opened (opening a FIFO blocks until something writes to it)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise SourceError(f"{path}: missing") from None
    except OSError as err:
        raise SourceError(f"{path}: unreadable: {err}") from err
    if not stat.S_ISREG(mode):
        raise SourceError(f"{path}: {_kind_of(mode)}, not a regular file; a data file must be a plain file")


def _listing(directory: str, dirs: bool = False) -> list[str]:
    """The names in ``directory`` that are regular files (``dirs``: directories); anything else
    (FIFOs, sockets, devices, dangling links) is skipped with a warning and never opened."""
    out = []
    for name in sorted(os.listdir(directory)):
        try:
            mode = os.stat(os.path.join(directory, name)).st_mode
        except OSError:
            mode = 0
        if stat.S_ISDIR(mode) if dirs else stat.S_ISREG(mode):
            out.append(name)
        elif not stat.S_ISDIR(mode) and not stat.S_ISREG(mode):
            logging.warning(f"{os.path.join(directory, name)}: skipped ({_kind_of(mode)}, not a regular file)")
    return out


def _read_lines(path: str) -> list[str]:
    _check_regular(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as err:
        raise SourceError(f"{path}: unreadable: {err}") from err
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SourceError(f"{path}: not UTF-8 text (byte {err.start}: {data[err.start : err.start + 4]!r})") from err
    return [line.rstrip("\r") for line in text.split("\n")]


def _same_language(names: list[str], lang: Language) -> list[str]:
    """The entries of ``names`` (dataset codes, file stems) that name ``lang``; unknown ones are skipped."""
    out = []
    for name in names:
        try:
            if get_language(name).code == lang.code:
                out.append(name)
        except KeyError:
            continue
    return out


def _find(
    dataset: str, where: str, lang: Language, preferred: list[str], available: list[str], expected: str = ""
) -> str:
    """The one entry of ``available`` (a dataset's own language codes) that is ``lang``: one of
    ``preferred`` when present, else the single entry resolving to the same language. The error
    names the dataset, the language and the languages it has."""
    for name in preferred:
        if name and name in available:
            return name
    found = _same_language(available, lang)
    if len(found) > 1:
        found = [n for n in found if n.split("_")[0] == lang.iso3] or found
    if len(found) == 1:
        return found[0]
    if found:
        raise SourceError(f"{dataset} at {where}: {', '.join(found)} are all {lang.code}; name one of them")
    if not available:
        raise SourceError(
            f"{where}: no {dataset} files in this directory (expected {_LAYOUTS[dataset]}); is it the right path?"
        )
    shown = ", ".join(sorted(available)[:40]) + (f" … ({len(available)} in all)" if len(available) > 40 else "")
    missing = f"{expected}: missing; " if expected else ""
    raise SourceError(f"{missing}{dataset} at {where} has no {lang.code} ({lang.name}); it has: {shown}")


_LAYOUTS = {
    "plain text": "<language>.txt files",
    "MGSM": "mgsm_<language>.tsv files",
    "FLoRes-200": "<lang>_<Script>/<split>.tsv directories",
    "NTREX-128": "newstest2019-ref.<code>.txt files",
    "saved generations": "<language>.jsonl files",
}


def _preferred(lang: Language, *names: str | None) -> list[str]:
    """The file names to try first for ``lang``; the bare ISO 639-3 code only for a language in its
    usual script (``zho.txt`` is Simplified Chinese, never ``zh-Hant``)."""
    return [n for n in names if n and (n != lang.iso3 or "-" not in lang.code)]


def _refuse_special(directory: str, names: list[str]) -> None:
    """Refuse (naming it) the first of ``names`` in ``directory`` that exists but is not a regular
    file: a FIFO named ``en.txt`` is the language's file, but never opened."""
    for name in names:
        path = os.path.join(directory, name)
        if os.path.lexists(path):
            _check_regular(path)


def _plain_text_path(spec: SourceSpec, lang: Language) -> str:
    """``<path>/<code>.txt`` for any code naming the language (``am.txt``, ``amh.txt``, ``amh_Ethi.txt``)."""
    expected = os.path.join(spec.path, f"{lang.code}.txt")
    if not os.path.isdir(spec.path):
        raise SourceError(f"{expected}: missing (there is no plain-text directory {spec.path})")
    preferred = _preferred(lang, lang.code, lang.iso3, lang.flores)
    _refuse_special(spec.path, [f"{n}.txt" for n in preferred])
    stems = [f[: -len(".txt")] for f in _listing(spec.path) if f.endswith(".txt")]
    return os.path.join(spec.path, f"{_find('plain text', spec.path, lang, preferred, stems, expected)}.txt")


def _plain_text_lines(spec: SourceSpec, lang: Language) -> list[str]:
    """The lines of the language's plain-text file, without the empty piece after a final newline."""
    lines = _read_lines(_plain_text_path(spec, lang))
    return lines[:-1] if lines and lines[-1] == "" else lines


def _plain_text(spec: SourceSpec, lang: Language) -> list[Example]:
    """One example a line; lines stripped, blank lines skipped (as the reference code reads text)."""
    lines = _plain_text_lines(spec, lang)
    return [Example(str(i), line.strip()) for i, line in enumerate(lines) if line.strip()]


def blank_lines_skipped(spec: SourceSpec, code: str) -> int | None:
    """How many blank lines a ``plain_text`` source skipped for language ``code`` (None for other
    kinds, whose records are not lines); the routing summary reports it."""
    if spec.kind != "plain_text":
        return None
    return sum(not line.strip() for line in _plain_text_lines(spec, get_language(code)))


def _mgsm_path(spec: SourceSpec, lang: Language) -> str:
    path = os.path.join(spec.path, f"mgsm_{lang.code}.tsv")
    if os.path.isdir(spec.path) and not os.path.lexists(path):
        have = [
            f[len("mgsm_") : -len(".tsv")] for f in _listing(spec.path) if f.startswith("mgsm_") and f.endswith(".tsv")
        ]
        path = os.path.join(spec.path, f"mgsm_{_find('MGSM', spec.path, lang, [], have, path)}.tsv")
    return path


def _mgsm(spec: SourceSpec, lang: Language) -> list[Example]:
    path = _mgsm_path(spec, lang)
    out = []
    for i, line in enumerate(_read_lines(path)):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise SourceError(f"{path}: line {i + 1} has {len(parts)} tab-separated fields, expected 2")
        q, a = parts
        text = f"{q}\n{a}" if spec.include_answer else q
        out.append(Example(str(i), text, prompt=q, answer=a.strip(), question=q))
    return out


def _load_json(path: str) -> Any:
    _check_regular(path)
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SourceError(f"{path}: unreadable: {err}") from err


def _template_values(template: str) -> list[str]:
    """The values the ``{...}`` placeholder of a per-language file template takes among the files
    present (``xquad.{lang}.json`` -> ``ar, de, ...``); empty when none or not listable."""
    directory, name = os.path.split(template)
    if "{" in directory or not os.path.isdir(directory or "."):
        return []
    pattern = re.compile("^" + re.sub(r"\\\{\w+\\\}", "(.+?)", re.escape(name)) + "$")
    return sorted({m.group(1) for f in _listing(directory or ".") if (m := pattern.match(f))})


def _squad_fields(spec: SourceSpec) -> list[str]:
    """The order of a SQuAD example's text: ``text_fields`` naming ``context`` and ``question``
    (``question,context`` is the RISE reference code's replay text); the default is context first."""
    fields = comma_list(spec.text_fields)
    if fields == ["text"]:
        return ["context", "question"]
    if not fields or any(f not in ("context", "question") for f in fields):
        raise SourceError(f"squad source: text_fields {spec.text_fields!r} must list context and/or question")
    return fields


def _squad_path(spec: SourceSpec, lang: Language) -> str:
    templated = "{" in spec.path
    if templated and "{tydiqa}" in spec.path and not lang.tydiqa:
        raise SourceError(f"{spec.path}: language {lang.code} has no TyDiQA name (TyDiQA has no {lang.name})")
    path = _fill(spec.path, lang) if templated else spec.path
    if templated and not os.path.lexists(path):
        have = _template_values(spec.path)
        raise SourceError(
            f"{path}: missing; the SQuAD-format files at {spec.path} have no {lang.code} ({lang.name})"
            + (f"; they have: {', '.join(have)}" if have else "")
        )
    return path


def _squad(spec: SourceSpec, lang: Language) -> list[Example]:
    templated = "{" in spec.path
    path = _squad_path(spec, lang)
    fields = _squad_fields(spec)
    doc = _load_json(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise SourceError(f"{path}: not SQuAD format (expected a top-level 'data' list)")
    out = []
    for article in doc["data"]:
        for para in article.get("paragraphs", []):
            for qa in para.get("qas", []):
                qid = str(qa.get("id", len(out)))
                if not templated and (lang.tydiqa is None or not qid.startswith(lang.tydiqa + "-")):
                    continue
                prompt = "\n".join(para["context"] if f == "context" else qa["question"] for f in fields)
                answers = [a["text"] for a in qa.get("answers", [])]
                answer = answers[0] if answers else None
                text = f"{prompt}\n{answer}" if spec.include_answer and answer else prompt
                out.append(
                    Example(
                        qid,
                        text,
                        prompt=prompt,
                        answer=answer,
                        answers=tuple(answers),
                        context=para["context"],
                        question=qa["question"],
                    )
                )
    if not out and not templated:
        prefixes = sorted(
            {
                str(qa.get("id", "")).split("-")[0]
                for a in doc["data"]
                for p in a.get("paragraphs", [])
                for qa in p.get("qas", [])
            }
        )
        want = f"id prefix '{lang.tydiqa}-'" if lang.tydiqa else "no TyDiQA id prefix"
        raise SourceError(
            f"TyDiQA-format file {path} has no {lang.code} ({lang.name}) questions ({want}); "
            f"it has: {', '.join(p for p in prefixes if p) or 'none'} (or give a per-language file with {{lang}})"
        )
    return out


def _flores_path(spec: SourceSpec, lang: Language) -> str:
    """``<path>/<lang>_<Script>/<split>.tsv``: any FLoRes-200 directory present under the path."""
    if not os.path.isdir(spec.path):
        expected = os.path.join(spec.path, lang.flores or f"<{lang.code}>", f"{spec.split}.tsv")
        raise SourceError(f"{expected}: missing (there is no FLoRes-200 directory {spec.path})")
    dirs = [d for d in _listing(spec.path, dirs=True) if re.fullmatch(r"[a-z]{3}_[A-Z][a-z]{3}", d)]
    name = _find("FLoRes-200", spec.path, lang, [lang.flores], dirs)
    path = os.path.join(spec.path, name, f"{spec.split}.tsv")
    _check_regular(path)
    return path


def _flores(spec: SourceSpec, lang: Language) -> list[Example]:
    path = _flores_path(spec, lang)
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise SourceError(f"{path}: unreadable: {err}") from err
    if rows and not {"index_id", "text"} <= set(rows[0]):
        raise SourceError(f"{path}: expected columns index_id and text, found {sorted(rows[0])}")
    return [Example(r["index_id"], r["text"]) for r in rows if r.get("text")]


def _ntrex_path(spec: SourceSpec, lang: Language) -> str:
    """``newstest2019-ref.<code>.txt`` (NTREX-128's own file codes; English is the source file)."""
    if lang.code == "en":
        return os.path.join(spec.path, "newstest2019-src.eng.txt")
    prefix, suffix = "newstest2019-ref.", ".txt"
    codes = (
        [f[len(prefix) : -len(suffix)] for f in _listing(spec.path) if f.startswith(prefix) and f.endswith(suffix)]
        if os.path.isdir(spec.path)
        else []
    )
    if not codes:
        raise SourceError(f"{spec.path}: no NTREX-128 files (newstest2019-ref.<code>.txt)")
    preferred = _preferred(lang, lang.ntrex, lang.iso3)
    _refuse_special(spec.path, [f"{prefix}{n}{suffix}" for n in preferred])
    return os.path.join(spec.path, f"{prefix}{_find('NTREX-128', spec.path, lang, preferred, codes)}{suffix}")


def _ntrex(spec: SourceSpec, lang: Language) -> list[Example]:
    lines = _read_lines(_ntrex_path(spec, lang))
    return [Example(str(i), line) for i, line in enumerate(lines) if line.strip()]


def _hf(spec: SourceSpec, lang: Language) -> list[Example]:
    import datasets

    kwargs: dict[str, Any] = {"split": spec.split}
    if spec.hf_name:
        kwargs["name"] = _fill(spec.hf_name, lang)
    if spec.hf_data_files:
        kwargs["data_files"] = _fill(spec.hf_data_files, lang)
    try:
        ds = datasets.load_dataset(spec.hf_path, **kwargs)
    except Exception as err:  # datasets raises many types (FileNotFound, ConnectionError, ValueError)
        raise SourceError(f"{spec.hf_path} ({kwargs}): cannot load dataset: {type(err).__name__}: {err}") from err
    fields = comma_list(spec.text_fields)
    missing = [f for f in fields if f not in ds.column_names]
    if missing:
        raise SourceError(f"{spec.hf_path}: column(s) {missing} not in dataset columns {ds.column_names}")
    col, prefix = (spec.hf_filter.split(":", 1) + [""])[:2] if spec.hf_filter else ("", "")
    prefix = _fill(prefix, lang) if prefix else ""
    out = []
    for i, row in enumerate(ds):
        if col and not str(row[col]).startswith(prefix):
            continue
        text = "\n".join(str(row[f]) for f in fields)
        if spec.answer_field:
            answer = _dotted(row, spec.answer_field, spec.hf_path)
            full = f"{text}\n{answer}" if spec.include_answer else text
            out.append(Example(str(row.get("id", i)), full, prompt=text, answer=str(answer)))
        else:
            out.append(Example(str(row.get("id", i)), text))
    return out


def _flatten_prompt(prompt: Any) -> str:
    """An OpenCompass ``origin_prompt``: a string, or chat turns ``[{"role", "prompt"}]`` joined by newlines."""
    if isinstance(prompt, list):
        parts = [turn.get("prompt", "") if isinstance(turn, dict) else str(turn) for turn in prompt]
        return "\n".join(p for p in parts if p)
    return "" if prompt is None else str(prompt)


def _opencompass_path(spec: SourceSpec, lang: Language) -> str:
    return _fill(spec.path, lang) if "{" in spec.path else spec.path


def _opencompass(spec: SourceSpec, lang: Language) -> list[Example]:
    """An OpenCompass predictions JSON, ``{index: {"origin_prompt": str | [{"role", "prompt"}],
    "prediction": str}}`` — how the RISE paper's routing statistics were made (its reference code
    replays them). Text = prompt, newline, prediction (``prompt_only``: the prompt alone), records
    in the order of their keys as strings (the reference's order, which ``max_samples`` cuts)."""
    path = _opencompass_path(spec, lang)
    doc = _load_json(path)
    if not isinstance(doc, dict):
        raise SourceError(f"{path}: not an OpenCompass predictions file (expected an object keyed by sample index)")
    out = []
    for key, record in sorted(doc.items(), key=lambda kv: str(kv[0])):
        if not isinstance(record, dict) or "origin_prompt" not in record:
            raise SourceError(f"{path}: record {key!r} has no origin_prompt")
        prompt = _flatten_prompt(record["origin_prompt"])
        prediction = str(record.get("prediction", "") or "")
        text = prompt if spec.prompt_only else f"{prompt}\n{prediction}".strip()
        if text.strip():
            out.append(Example(str(key), text, prompt=prompt, answer=prediction))
    return out


def _generations_path(spec: SourceSpec, lang: Language) -> str:
    expected = os.path.join(spec.path, f"{lang.code}.jsonl")
    if not os.path.isdir(spec.path):
        raise SourceError(f"{expected}: missing (there is no generations directory {spec.path})")
    _refuse_special(spec.path, [f"{lang.code}.jsonl"])
    stems = [f[: -len(".jsonl")] for f in _listing(spec.path) if f.endswith(".jsonl")]
    name = _find("saved generations", spec.path, lang, [lang.code], stems, expected)
    return os.path.join(spec.path, f"{name}.jsonl")


def _generations(spec: SourceSpec, lang: Language) -> list[Example]:
    """The eval stage's saved generations of one task (``<path>/<lang>.jsonl``, records ``{id,
    prompt, output, ...}``): prompt + output, or the prompt alone with ``prompt_only``."""
    path = _generations_path(spec, lang)
    out = []
    for n, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise SourceError(f"{path}:{n}: not JSON ({err.msg})") from err
        if not isinstance(record, dict) or "prompt" not in record or "output" not in record:
            raise SourceError(f"{path}:{n}: not a saved generation (needs prompt and output)")
        if record["prompt"] is None:  # skipped by the eval stage: the model never saw it
            continue
        prompt, output = str(record["prompt"]), str(record["output"] or "")
        text = prompt if spec.prompt_only else prompt + output  # the output continues the prompt
        out.append(Example(str(record.get("id", n)), text, prompt=prompt, answer=output))
    return out


def _dotted(row: Any, path: str, where: str) -> Any:
    """``row["answers"]["text"][0]`` for ``"answers.text.0"``; a clear error when absent."""
    value = row
    for part in path.split("."):
        try:
            value = value[int(part)] if isinstance(value, (list, tuple)) else value[part]
        except (KeyError, IndexError, ValueError, TypeError) as err:
            raise SourceError(f"{where}: answer_field {path!r} not found in a row ({part!r} missing)") from err
    return value


_LOADERS = {
    "plain_text": _plain_text,
    "mgsm": _mgsm,
    "squad": _squad,
    "flores": _flores,
    "ntrex": _ntrex,
    "hf": _hf,
    "opencompass": _opencompass,
    "generations": _generations,
}


def load_examples(spec: SourceSpec, code: str) -> list[Example]:
    """All examples of language ``code`` from ``spec``; an empty result is an error."""
    lang = get_language(code)
    examples = _LOADERS[spec.kind](spec, lang)
    if not examples:
        where = spec.path or spec.hf_path
        raise SourceError(f"{where}: no {spec.kind} examples for language {lang.code}")
    return examples


# Where each local kind reads a language's text (found by listing directories, nothing read).
_PATHS = {
    "plain_text": _plain_text_path,
    "mgsm": _mgsm_path,
    "squad": _squad_path,
    "flores": _flores_path,
    "ntrex": _ntrex_path,
    "opencompass": _opencompass_path,
    "generations": _generations_path,
}

# Kinds whose records are lines (``Example.id`` their line or row number): parallel text must
# have as many in every language. FLoRes rows follow one header line.
_LINE_KINDS = {"plain_text": 0, "ntrex": 0, "mgsm": 0, "generations": 0, "flores": 1}


def locate(spec: SourceSpec, code: str) -> str | None:
    """The file :func:`load_examples` reads for language ``code`` (None for ``hf`` sources, which
    the datasets library finds), found by listing directories only; a missing language, an empty
    or unrecognisable directory or a file that is not a regular file is a :class:`SourceError`
    naming it."""
    if spec.kind == "hf":
        return None
    path = _PATHS[spec.kind](spec, get_language(code))
    _check_regular(path)
    return path


def _line_count(path: str) -> int:
    """Lines in ``path`` as :func:`_read_lines` splits them, without the empty piece after a final newline."""
    count, last = 0, b"\n"
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


def check_source(
    spec: SourceSpec, codes: list[str], where: str, parallel: bool = False, pending: bool = False
) -> dict[str, str]:
    """Cheap checks of a source before any stage runs: every language of ``codes`` has its file
    (:func:`locate`); with ``parallel`` (line ``i`` is the same sentence in every language) the
    line-based files hold as many lines (rows) each. ``where`` names the config section in errors
    (``config.data``); ``pending``: a path that does not exist yet passes (the demo writes its
    corpus after validation). Returns ``{code: file}`` of the local files."""
    if spec.kind == "hf":
        if not spec.hf_path:
            raise SourceError(f"{where}.hf_path is empty: name the Hugging Face dataset (source = hf)")
        return {}
    if not spec.path:
        raise SourceError(f"{where}.path is empty: give the {spec.kind} data's directory or file")
    head = spec.path.split("{")[0]  # a templated path stands for the directory before its placeholder
    if pending and (not head or not os.path.exists(head)):
        return {}
    files = {code: locate(spec, code) for code in codes}
    if parallel and spec.kind in _LINE_KINDS and len(files) > 1:
        header = _LINE_KINDS[spec.kind]
        counts = {code: max(_line_count(path) - header, 0) for code, path in files.items()}
        if len(set(counts.values())) > 1:
            shown = ", ".join(f"{files[c]} {n}" for c, n in counts.items())
            raise SourceError(
                f"{where}.parallel: the {spec.kind} files are not line-aligned (line i must be the same sentence "
                f"in every language), their line counts differ: {shown}"
            )
    return {code: path for code, path in files.items() if path}
