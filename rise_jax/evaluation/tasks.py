"""Per-language evaluation tasks: MGSM, SQuAD-format QA (TyDiQA-GoldP, XQuAD), open QA
(TriviaQA), perplexity, multiple-choice log-likelihood (ours, MMLU, ARC, HellaSwag, the
multilingual Global-MMLU, INCLUDE, Global-PIQA, XCOPA, XNLI, XStoryCloze), Belebele,
translation (FLORES-200 both ways, chrF++ / BLEU), PolyMath (difficulty-weighted accuracy) and
MMLU-ProX (lm-eval's chain-of-thought generation task). Each returns a :class:`TaskResult`: the
scores ``{metric: value, n, skipped, truncated}`` of one language and, for the generative tasks
(MGSM, QA, open QA, translation, PolyMath, MMLU-ProX), one record per example — what the model
was given, what it wrote, the reference and the score (the eval stage saves them as
``eval/generations/<variant>/<task>/<lang>.jsonl``).

Task configs (``ml_collections`` or dicts) carry ``kind`` plus the fields read below; the eval
stage documents them with the defaults in ``configs/base.py``. :data:`TASK_KINDS` registers each
kind (a :class:`TaskKind`: its function, primary metric and config checks); a new kind is its
function and one entry there.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from rise_jax.data.batching import bucketed_batches, render, tokenize_examples
from rise_jax.data.languages import get_language
from rise_jax.data.sources import Example, SourceError, SourceSpec, load_examples
from rise_jax.distributed import is_writer, put_batch, to_host
from rise_jax.errors import RiseError
from rise_jax.evaluation import mmlu_prox as mp
from rise_jax.evaluation import polymath as pm
from rise_jax.evaluation import routing_alignment as ra
from rise_jax.evaluation import translation as tr
from rise_jax.evaluation.continuous import generate_text_continuous
from rise_jax.evaluation.formats import FormatError, convert_rows, read_items
from rise_jax.evaluation.loglikelihood_requests import encode, pair_sequence, prefix_token, rolling_windows
from rise_jax.evaluation.metrics import (
    best_over_golds,
    exact_match,
    extract_last_number,
    f1_score,
    mgsm_correct,
    triviaqa_scores,
)
from rise_jax.evaluation.multilingual_mc import fewshot_context
from rise_jax.models.lm_loss import token_log_probs
from rise_jax.models.routers import RouterEdit
from rise_jax.models.transformer import MoEModel

LONG_PROMPT_POLICIES = ("skip", "truncate")
PERPLEXITY_WINDOWS = ("truncate", "rolling")
DEFAULT_OPEN_QA_TEMPLATE = "Question: {question}\nAnswer:"  # lm-eval's triviaqa prompt
DEFAULT_QA_TEMPLATE = (
    "Answer the question using a short span copied from the passage.\n\nPassage: {context}\n\nQuestion: {question}"
)


class EvalError(RiseError, ValueError):
    """Unknown task, a language the task has no data for, an empty dataset (message names which)."""


@dataclasses.dataclass(frozen=True)
class TaskResult:
    """One task on one language. ``scores``: the metrics (``results.json``). ``generations``:
    generative tasks only, per example ``{id, prompt, output, prediction, reference, score}``
    (``prompt`` null for a prompt skipped as too long; ``prediction`` is what was scored: MGSM's
    last number, QA's first line)."""

    scores: dict[str, Any]
    generations: tuple[dict[str, Any], ...] = ()


@dataclasses.dataclass
class Evaluator:
    """What every task needs: the model and params, the tokenizer and an optional router edit.
    ``batch_size``: sequences per log-likelihood batch; ``decode_slots``: generation's
    continuous-batching slots (None: as many as a bounded KV-cache budget holds,
    :func:`~rise_jax.evaluation.continuous.default_slots`)."""

    model: MoEModel
    params: dict[str, Any]
    tokenizer: Any
    stop_ids: Sequence[int]
    router_edit: RouterEdit | None = None
    batch_size: int = 8
    progress: bool = True
    decode_slots: int | None = None

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def render(self, prompt: str, template: str) -> str:
        """``raw`` prompt text, or the chat template's user turn + assistant header (Qwen3 with
        thinking disabled, as the paper evaluates)."""
        return render(Example("", prompt, prompt=prompt), self.tokenizer, template)

    def generate(self, prompts: list[str], max_new_tokens: int, desc: str) -> list[str]:
        """Greedy continuations of rendered prompts, decoded with continuous batching (a finished
        row's slot takes the next prompt; the same tokens as static batches, less waiting)."""
        bar = tqdm(total=len(prompts), desc=desc, disable=not (self.progress and is_writer()), leave=False)
        with bar:
            return generate_text_continuous(
                self.model,
                self.params,
                self.tokenizer,
                prompts,
                max_new_tokens=max_new_tokens,
                stop_ids=self.stop_ids,
                slots=self.decode_slots,
                router_edit=self.router_edit,
                progress=bar,
            )

    def sequence_logprobs(self, sequences: list[np.ndarray], targets: list[np.ndarray]) -> np.ndarray:
        """Sum of ``log p(token)`` over each sequence's target positions (``targets`` bool masks)."""
        out = np.zeros(len(sequences), np.float64)
        for ids, mask, index in bucketed_batches(sequences, self.batch_size, 32, self.pad_id):
            tmask = np.zeros_like(mask)
            for row, i in enumerate(index):
                if i >= 0:
                    tmask[row, : len(targets[i])] = targets[i]
            lp = to_host(
                _logprob_sums(self.model, self.params, *put_batch(self.params, ids, mask, tmask), self.router_edit)
            )
            out[index[index >= 0]] = lp[index >= 0]
        return out


@functools.partial(jax.jit, static_argnames=("model",))
def _logprob_sums(model, params, ids, mask, target_mask, router_edit) -> jax.Array:
    """Per-row sum of ``log p(ids[t] | ids[<t])`` over positions where ``target_mask`` is 1."""
    logits = model.apply({"params": params}, ids, mask, router_edit=router_edit, inference=True).logits
    return jnp.sum(token_log_probs(logits, ids) * target_mask[:, 1:], axis=-1)


def _limit(examples: list[Example], max_samples: int) -> list[Example]:
    return examples[:max_samples] if max_samples else examples


def _load(spec: SourceSpec, language: str, task: str) -> list[Example]:
    try:
        return load_examples(spec, language)
    except SourceError as err:
        raise EvalError(f"task {task}: no data for language {language}: {err}") from err


def _fit_prompt(ev: Evaluator, build, context: str, max_len: int, policy: str) -> tuple[str | None, bool]:
    """The rendered prompt within ``max_len`` tokens: as is, with its context cut (``truncate``)
    or None (``skip``). Returns (prompt, truncated)."""
    prompt = build(context)
    n = len(ev.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    if max_len <= 0 or n <= max_len:
        return prompt, False
    if policy == "skip":
        return None, False
    ctx_ids = ev.tokenizer(context, add_special_tokens=False)["input_ids"]
    keep = max(0, len(ctx_ids) - (n - max_len))
    while True:  # decoding/re-encoding can shift a few tokens; shrink until it fits
        prompt = build(ev.tokenizer.decode(ctx_ids[:keep]))
        if keep == 0 or len(ev.tokenizer(prompt, add_special_tokens=False)["input_ids"]) <= max_len:
            return prompt, True
        keep = max(0, keep - 8)


# --- MGSM ---------------------------------------------------------------------------------------


def mgsm_exemplars(path: str, language: str) -> list[dict[str, str]]:
    """The 8 chain-of-thought exemplars of ``language`` from ``mgsm_exemplars.json`` (q/a pairs)."""
    file = os.path.join(path, "mgsm_exemplars.json")
    if not os.path.isfile(file):
        raise EvalError(f"{file}: missing (needed for MGSM prompts)")
    with open(file, encoding="utf-8") as fh:
        table = json.load(fh).get("MGSM_EXEMPLARS", {})
    if language not in table:
        raise EvalError(f"{file}: no exemplars for language {language}; has {sorted(table)}")
    return [table[language][k] for k in sorted(table[language], key=int)]


def _prefix(text: str) -> str:
    """``Question:`` / ``প্রশ্ন:`` / ``问题：``: the exemplar's label up to its colon."""
    cut = min((i for i in (text.find(":"), text.find("：")) if i >= 0), default=-1)
    return text[: cut + 1] if 0 <= cut < 40 else ""


def mgsm_prompt(question: str, exemplars: list[dict[str, str]], shots: int) -> str:
    """Native-language prompt: ``shots`` exemplars (question + step-by-step answer), then the
    question with the language's own ``Question:`` label and the answer label to continue from."""
    q_label, a_label = _prefix(exemplars[0]["q"]), _prefix(exemplars[0]["a"])
    parts = [f"{ex['q']}\n{ex['a']}" for ex in exemplars[:shots]]
    parts.append(f"{q_label} {question}\n{a_label}".strip())
    return "\n\n".join(parts)


def eval_mgsm(ev: Evaluator, task: Any, language: str, max_samples: int) -> TaskResult:
    examples = _limit(_load(SourceSpec("mgsm", task.path), language, "mgsm"), max_samples)
    exemplars = mgsm_exemplars(task.path, language)
    prompts = [ev.render(mgsm_prompt(e.question, exemplars, task.shots), task.template) for e in examples]
    outputs = ev.generate(prompts, task.max_new_tokens, f"mgsm/{language}")
    correct = [mgsm_correct(o, e.answer) for o, e in zip(outputs, examples, strict=True)]
    records = tuple(
        {
            "id": e.id,
            "prompt": p,
            "output": o,
            "prediction": _number_text(extract_last_number(o)),
            "reference": e.answer,
            "score": {"correct": bool(c)},
        }
        for e, p, o, c in zip(examples, prompts, outputs, correct, strict=True)
    )
    scores = {"accuracy": 100.0 * float(np.mean(correct)), "n": len(examples), "skipped": 0, "truncated": 0}
    return TaskResult(scores, records)


def _number_text(value: float | None) -> str | None:
    """MGSM's scored number as written in a saved generation (``18``, ``2.5``; null when none)."""
    if value is None:
        return None
    return str(int(value)) if float(value).is_integer() else str(value)


# --- SQuAD-format QA ------------------------------------------------------------------------------


def eval_qa(ev: Evaluator, task: Any, language: str, max_samples: int) -> TaskResult:
    if task.long_prompts not in LONG_PROMPT_POLICIES:
        raise EvalError(f"long_prompts must be one of {LONG_PROMPT_POLICIES}, got {task.long_prompts!r}")
    examples = _limit(_load(SourceSpec("squad", task.path), language, "qa"), max_samples)
    template = task.get("prompt_template") or DEFAULT_QA_TEMPLATE
    prompts, kept, truncated = [], [], 0
    for e in examples:

        def build(ctx: str, e=e) -> str:
            return ev.render(template.format(context=ctx, question=e.question), task.template)

        prompt, cut = _fit_prompt(ev, build, e.context, task.max_prompt_length, task.long_prompts)
        truncated += cut
        if prompt is not None:
            prompts.append(prompt)
            kept.append(e)
    outputs = ev.generate(prompts, task.max_new_tokens, f"qa/{language}") if prompts else []
    given = {e.id: (p, o) for e, p, o in zip(kept, prompts, outputs, strict=True)}
    f1s, ems, records = [], [], []
    for e in examples:  # skipped prompts score as an empty answer
        prompt, output = given.get(e.id, (None, ""))
        pred = output.strip().split("\n")[0]
        f1s.append(best_over_golds(f1_score, pred, e.answers, language))
        ems.append(best_over_golds(exact_match, pred, e.answers, language))
        score = {"f1": 100.0 * f1s[-1], "exact_match": 100.0 * ems[-1]}
        records.append(
            {
                "id": e.id,
                "prompt": prompt,
                "output": output,
                "prediction": pred,
                "reference": list(e.answers),
                "score": score,
            }
        )
    scores = {
        "f1": 100.0 * float(np.mean(f1s)),
        "exact_match": 100.0 * float(np.mean(ems)),
        "n": len(examples),
        "skipped": len(examples) - len(kept),
        "truncated": truncated,
    }
    return TaskResult(scores, tuple(records))


# --- open QA (TriviaQA) ---------------------------------------------------------------------------


def eval_open_qa(ev: Evaluator, task: Any, language: str, max_samples: int) -> TaskResult:
    """Closed-book QA: the question alone, the first line of the output scored by TriviaQA's EM /
    F1 against the answer and its aliases (:func:`~rise_jax.evaluation.metrics.triviaqa_scores`)."""
    items = task_items(task, language)
    items = items[:max_samples] if max_samples else items
    template = task.get("prompt_template") or DEFAULT_OPEN_QA_TEMPLATE
    prompts = [ev.render(template.format(question=i["question"]), task.template) for i in items]
    outputs = ev.generate(prompts, task.max_new_tokens, f"open_qa/{language}")
    records, ems, f1s = [], [], []
    for item, prompt, output in zip(items, prompts, outputs, strict=True):
        pred = output.strip().split("\n")[0].strip()
        em, f1 = triviaqa_scores(pred, item["answers"])
        ems.append(em)
        f1s.append(f1)
        records.append(
            {
                "id": item["id"],
                "prompt": prompt,
                "output": output,
                "prediction": pred,
                "reference": item["answers"],
                "score": {"exact_match": 100.0 * em, "f1": 100.0 * f1},
            }
        )
    scores = {
        "exact_match": 100.0 * float(np.mean(ems)),
        "f1": 100.0 * float(np.mean(f1s)),
        "n": len(items),
        "skipped": 0,
        "truncated": 0,
    }
    return TaskResult(scores, tuple(records))


# --- perplexity -----------------------------------------------------------------------------------


def rolling_loglikelihoods(ev: Evaluator, texts: list[str], max_length: int) -> np.ndarray:
    """Each document's total log-likelihood, every token scored once in rolling windows of
    ``max_length`` (lm-eval ``loglikelihood_rolling``, :func:`~.loglikelihood_requests.rolling_windows`)."""
    prefix = prefix_token(ev.tokenizer)
    windows, owner = [], []
    for i, text in enumerate(texts):
        for window in rolling_windows(encode(ev.tokenizer, text), prefix, max_length):
            windows.append(window)
            owner.append(i)
    scores = ev.sequence_logprobs([w[0] for w in windows], [w[1] for w in windows]) if windows else np.zeros(0)
    return np.bincount(np.asarray(owner, np.int64), weights=scores, minlength=len(texts))


def eval_perplexity(ev: Evaluator, task: Any, language: str, max_samples: int) -> TaskResult:
    """Perplexity of a language's text. ``window="truncate"``: each document cut at ``max_length``
    tokens (counted), its first token the context, ``perplexity`` = exp(mean NLL per predicted
    token). ``window="rolling"``: lm-eval's rolling log-likelihood, every token scored (the first
    after BOS/EOS) and nothing cut; adds lm-eval's ``word_perplexity`` = exp(−ΣLL / Σ words),
    ``byte_perplexity`` = exp(−ΣLL / Σ UTF-8 bytes) and ``bits_per_byte`` = −ΣLL / (Σ bytes · ln 2)."""
    spec = SourceSpec(task.source, task.path, split=task.split)
    examples = _load(spec, language, "perplexity")
    if task.get("window", "truncate") == "rolling":
        texts = [e.text for e in _limit(examples, max_samples) if e.text]
        if not texts:
            raise EvalError(f"task perplexity: no text for language {language}")
        total = float(-rolling_loglikelihoods(ev, texts, task.max_length).sum())
        count = sum(len(encode(ev.tokenizer, t)) for t in texts)
        n_bytes = sum(len(t.encode("utf-8")) for t in texts)
        words = sum(len(re.split(r"\s+", t)) for t in texts)
        extra = {
            "word_perplexity": math.exp(total / words),
            "byte_perplexity": math.exp(total / n_bytes),
            "bits_per_byte": total / n_bytes / math.log(2),
        }
        n, truncated = len(texts), 0
    else:
        corpus = tokenize_examples(language, examples, ev.tokenizer, task.max_length, max_samples or None)
        seqs = [s for s in corpus.sequences if len(s) >= 2]
        if not seqs:
            raise EvalError(f"task perplexity: no sequence of 2+ tokens for language {language}")
        targets = [np.ones(len(s), bool) for s in seqs]
        total = float(-ev.sequence_logprobs(seqs, targets).sum())
        count = sum(len(s) - 1 for s in seqs)
        extra, n, truncated = {}, len(seqs), corpus.truncated
    return TaskResult(
        {
            "perplexity": math.exp(total / count),
            "nll_per_token": total / count,
            "tokens": count,
            **extra,
            "n": n,
            "skipped": 0,
            "truncated": truncated,
        }
    )


# --- multiple choice ------------------------------------------------------------------------------


def task_path(path: str, language: str) -> str:
    """A task's data path for ``language``: ``{lang}`` (our code, ISO 639-1 where there is one),
    ``{flores}`` (FLoRes-200 code) and ``{name}`` (English name, INCLUDE's subset names) filled."""
    lang = get_language(language)
    try:
        return path.format(lang=lang.code, flores=lang.flores or lang.code, name=lang.name)
    except (KeyError, IndexError) as err:
        raise EvalError(f"{path}: unknown placeholder {err} (use {{lang}}, {{flores}} or {{name}})") from None


def read_task_file(task: Any, language: str, path_spec: str, what: str) -> list[dict[str, Any]]:
    """The items of the file ``path_spec`` names for ``language`` (:func:`task_path`), read in
    ``task.format`` with ``task.subjects``; a missing file or a bad row is an :class:`EvalError`
    naming the task and the file."""
    path = task_path(path_spec, language)
    if not os.path.exists(path):
        raise EvalError(f"task {task.kind}: no {what} for language {language}: {path} missing")
    try:
        return read_items(task.kind, task.get("format", "jsonl"), path, task.get("subjects", ""), language)
    except FormatError as err:
        raise EvalError(f"task {task.kind}: {err}") from err


def task_items(task: Any, language: str) -> list[dict[str, Any]]:
    """The items of a ``multiple_choice`` / ``open_qa`` task for ``language``: ``task.path``
    (:func:`task_path`) read in ``task.format`` (ours, ``jsonl``, or a published one: MMLU, ARC,
    HellaSwag, TriviaQA, Global-MMLU, INCLUDE, Global-PIQA, XCOPA, XNLI, XStoryCloze —
    :mod:`rise_jax.evaluation.formats`); ``task.subjects`` keeps a format's subsets. With
    ``task.shots`` > 0 each context gets that many exemplars from ``task.fewshot_path`` (same
    format, same subject) as lm-eval's ``first_n`` sampler puts them
    (:func:`~rise_jax.evaluation.multilingual_mc.fewshot_context`)."""
    items = read_task_file(task, language, task.path, "data")
    shots = int(task.get("shots", 0) or 0)
    if shots > 0:
        exemplars = read_task_file(task, language, task.get("fewshot_path", ""), "few-shot file (fewshot_path)")
        try:
            items = [{**i, "question": fewshot_context(i, exemplars, shots)} for i in items]
        except FormatError as err:
            raise EvalError(f"task {task.kind}: {err}") from err
    return items


def choice_loglikelihoods(ev: Evaluator, contexts: list[str], choices: list[list[str]]) -> list[np.ndarray]:
    """``log p(" " + choice | context)`` of every choice of every item (lm-eval's target
    delimiter and its tokenisation of the pair, :func:`~.loglikelihood_requests.encode_pair`)."""
    pairs = [
        pair_sequence(ev.tokenizer, c, " " + str(o))
        for c, options in zip(contexts, choices, strict=True)
        for o in options
    ]
    scores = ev.sequence_logprobs([p[0] for p in pairs], [p[1] for p in pairs])
    bounds = np.cumsum([0, *(len(o) for o in choices)])
    return [scores[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _choice_accuracy(ev: Evaluator, contexts: list[str], choices: list[list[str]], answers: list[int]) -> dict:
    """Pick the choice with the highest log-likelihood after its context (``accuracy``, lm-eval
    ``acc``), after dividing by the choice's length in characters (``accuracy_norm``,
    ``acc_norm``) and in UTF-8 bytes (``accuracy_bytes``, ``acc_bytes``)."""
    correct = correct_norm = correct_bytes = 0
    for scores, options, answer in zip(choice_loglikelihoods(ev, contexts, choices), choices, answers, strict=True):
        lengths = np.asarray([float(len(str(o))) for o in options])
        n_bytes = np.asarray([float(len(str(o).encode("utf-8"))) for o in options])
        correct += int(np.argmax(scores)) == int(answer)
        correct_norm += int(np.argmax(scores / lengths)) == int(answer)
        correct_bytes += int(np.argmax(scores / n_bytes)) == int(answer)
    return {
        "accuracy": 100.0 * correct / len(answers),
        "accuracy_norm": 100.0 * correct_norm / len(answers),
        "accuracy_bytes": 100.0 * correct_bytes / len(answers),
        "n": len(answers),
        "skipped": 0,
        "truncated": 0,
    }


def eval_multiple_choice(ev: Evaluator, task: Any, language: str, max_samples: int) -> TaskResult:
    """Log-likelihood of each choice after the question (see :func:`_choice_accuracy`)."""
    items = task_items(task, language)
    items = items[:max_samples] if max_samples else items
    contexts, choices = [i["question"] for i in items], [i["choices"] for i in items]
    return TaskResult(_choice_accuracy(ev, contexts, choices, [int(i["answer"]) for i in items]))


# --- Belebele ---------------------------------------------------------------------------------------

BELEBELE_FIELDS = ("flores_passage", "question", "mc_answer1", "mc_answer2", "mc_answer3", "mc_answer4")
BELEBELE_LETTERS = ("A", "B", "C", "D")


def belebele_file(path: str, language: str) -> str:
    """The Belebele JSONL of ``language``: ``path`` is the dataset directory (files named by FLoRes
    code, ``<flores>.jsonl``, as published) or a file template with ``{flores}`` / ``{lang}``.
    A missing language names the file and the languages the directory does have."""
    lang = get_language(language)
    if "{" in path:
        file = path.format(flores=lang.flores, lang=lang.code)
        directory = os.path.dirname(file) or "."
    else:
        file, directory = os.path.join(path, f"{lang.flores}.jsonl"), path
    if not os.path.isfile(file):
        have = (
            sorted(f[: -len(".jsonl")] for f in os.listdir(directory) if f.endswith(".jsonl"))
            if os.path.isdir(directory)
            else []
        )
        raise EvalError(
            f"task belebele: no data for language {language} ({lang.flores}): {file} missing"
            + (f"; the dataset has {', '.join(have)}" if have else "")
        )
    return file


def load_belebele(path: str, language: str) -> list[dict[str, Any]]:
    """Items ``{passage, question, choices [4], answer (0-based)}`` from Belebele's published
    per-language JSONL (``flores_passage``, ``question``, ``mc_answer1..4``, ``correct_answer_num``
    1-4, as a number or a string)."""
    file = belebele_file(path, language)

    def parse(row: dict[str, Any], _: int) -> dict[str, Any]:
        missing = [k for k in (*BELEBELE_FIELDS, "correct_answer_num") if k not in row]
        if missing:
            raise KeyError(f"missing {', '.join(missing)}")
        answer = int(row["correct_answer_num"]) - 1
        if not 0 <= answer < 4:
            raise ValueError(f"correct_answer_num {row['correct_answer_num']!r} is not 1-4")
        choices = [row[f"mc_answer{i}"] for i in range(1, 5)]
        return {"passage": row["flores_passage"], "question": row["question"], "choices": choices, "answer": answer}

    try:
        return convert_rows(file, "a Belebele item", parse)
    except FormatError as err:
        raise EvalError(str(err)) from err


def belebele_prompt(item: dict[str, Any]) -> str:
    """The Belebele paper's zero-shot instruction prompt (passage, query, four lettered choices);
    the model's answer is the letter it finds most likely."""
    choices = "\n".join(f"({letter}) {text}" for letter, text in zip(BELEBELE_LETTERS, item["choices"], strict=True))
    return (
        "Given the following passage, query, and answer choices, output the letter corresponding to the correct "
        f"answer.\n###\nPassage:\n{item['passage']}\n###\nQuery:\n{item['question']}\n###\nChoices:\n"
        f"{choices}\n###\nAnswer:"
    )


def eval_belebele(ev: Evaluator, task: Any, language: str, max_samples: int) -> TaskResult:
    """Belebele accuracy: zero-shot prompt, the answer letter scored by log-likelihood."""
    items = load_belebele(task.path, language)
    items = items[:max_samples] if max_samples else items
    letters = [list(BELEBELE_LETTERS)] * len(items)
    return TaskResult(_choice_accuracy(ev, [belebele_prompt(i) for i in items], letters, [i["answer"] for i in items]))


# --- translation ----------------------------------------------------------------------------------


def eval_translation(ev: Evaluator, task: Any, language: str, max_samples: int) -> TaskResult:
    """Translation between English and ``language`` (``task.direction``: ``en-xx`` or ``xx-en``)
    over a parallel source (``task.source``, default ``flores``: sentences paired by id; split
    ``task.split``): each source sentence put in ``task.prompt_template`` (placeholders
    ``{source}``, ``{source_language}``, ``{target_language}``; the languages' English names),
    after ``task.shots`` pairs of ``task.fewshot_split``; the first line of the greedy output is
    the translation, scored by corpus chrF++ and BLEU with their sacrebleu signatures
    (:mod:`~rise_jax.evaluation.translation`); each saved generation has its sentence chrF++."""
    direction = task.get("direction", "en-xx")
    if direction not in tr.DIRECTIONS:
        raise EvalError(f"task translation: direction {direction!r}; choose one of {', '.join(tr.DIRECTIONS)}")
    if language == "en":
        raise EvalError("task translation: English is the pivot of both directions; evaluate another language")
    source_lang, target_lang = ("en", language) if direction == "en-xx" else (language, "en")

    def pairs(split: str) -> list[tuple[str, str, str]]:
        spec = SourceSpec(task.get("source", "flores"), task.path, split=split)
        source = {e.id: e.text for e in _load(spec, source_lang, "translation")}
        out = [(e.id, source[e.id], e.text) for e in _load(spec, target_lang, "translation") if e.id in source]
        if not out:
            raise EvalError(
                f"task translation: no sentence ids shared by {source_lang} and {target_lang} in {spec.path}"
            )
        return out

    items = pairs(task.get("split", "test"))
    items = items[:max_samples] if max_samples else items
    shots = int(task.get("shots", 0) or 0)
    exemplars = [(s, t) for _, s, t in pairs(task.fewshot_split)[:shots]] if shots else []
    names = get_language(source_lang).name, get_language(target_lang).name
    template = task.get("prompt_template") or tr.DEFAULT_TEMPLATE
    try:
        prompts = [ev.render(tr.translation_prompt(template, s, *names, exemplars), task.template) for _, s, _ in items]
    except tr.TranslationError as err:
        raise EvalError(f"task translation: {err}") from err
    outputs = ev.generate(prompts, task.max_new_tokens, f"translation/{direction}/{language}")
    predictions = [tr.first_line(o) for o in outputs]
    references = [t for _, _, t in items]
    try:
        scores = tr.corpus_scores(predictions, references, target_lang, task.get("bleu_tokenize", ""))
    except tr.TranslationError as err:
        raise EvalError(f"task translation: {err}") from err
    records = tuple(
        {
            "id": i,
            "prompt": p,
            "output": o,
            "prediction": h,
            "reference": r,
            "score": {"chrf": tr.sentence_chrf(h, r)},
        }
        for (i, _, r), p, o, h in zip(items, prompts, outputs, predictions, strict=True)
    )
    return TaskResult({**scores, "n": len(items), "skipped": 0, "truncated": 0}, records)


# --- PolyMath -------------------------------------------------------------------------------------


def _answer_records(
    items: list[dict[str, Any]],
    prompts: list[str],
    outputs: list[str],
    predictions: list[Any],
    correct: list[bool],
    detail: str,
) -> tuple[dict[str, Any], ...]:
    """The saved generations of a task scored against one ``answer`` per item: each record's score
    is whether it was right and the item's ``detail`` field (PolyMath's level, MMLU-ProX's subject)."""
    return tuple(
        {
            "id": i["id"],
            "prompt": p,
            "output": o,
            "prediction": pred,
            "reference": i["answer"],
            "score": {"correct": c, detail: i[detail]},
        }
        for i, p, o, pred, c in zip(items, prompts, outputs, predictions, correct, strict=True)
    )


def eval_polymath(ev: Evaluator, task: Any, language: str, max_samples: int) -> TaskResult:
    """PolyMath (:mod:`~rise_jax.evaluation.polymath`): each problem with the language's answer
    instruction (``task.prompt_template``, default ``{question}\\n\\n{instruction}``), greedy
    output, the first ``\\boxed{}`` compared with the answer; per-level accuracy, overall
    accuracy and the difficulty-weighted ``dw_accuracy``. ``max_samples`` counts per level."""
    items = read_task_file(task, language, task.path, "data")
    if max_samples:  # the first max_samples of every level
        rank: dict[str, int] = {}
        kept = []
        for item in items:
            rank[item["level"]] = rank.get(item["level"], 0) + 1
            if rank[item["level"]] <= max_samples:
                kept.append(item)
        items = kept
    template = task.get("prompt_template") or pm.DEFAULT_TEMPLATE
    try:
        prompts = [ev.render(pm.polymath_prompt(i["question"], language, template), task.template) for i in items]
    except FormatError as err:
        raise EvalError(f"task polymath: {err}") from err
    outputs = ev.generate(prompts, task.max_new_tokens, f"polymath/{language}")
    predictions = [pm.extract_boxed(o) for o in outputs]
    correct = [pm.answers_equal(p, i["answer"]) for p, i in zip(predictions, items, strict=True)]
    records = _answer_records(items, prompts, outputs, predictions, correct, "level")
    scores = pm.level_scores([i["level"] for i in items], correct)
    return TaskResult({**scores, "n": len(items), "skipped": 0, "truncated": 0}, records)


# --- MMLU-ProX ------------------------------------------------------------------------------------


def eval_mmlu_prox(ev: Evaluator, task: Any, language: str, max_samples: int) -> TaskResult:
    """MMLU-ProX as lm-eval's ``mmlu_prox`` (:mod:`~rise_jax.evaluation.mmlu_prox`): the
    description, ``task.shots`` chain-of-thought exemplars of the item's category from
    ``task.fewshot_path`` (the validation split) and the item; greedy output cut at the stop
    strings, the answer letter by the language's regex, ``exact_match`` in percent."""
    items = read_task_file(task, language, task.path, "data")
    items = items[:max_samples] if max_samples else items
    shots = int(task.get("shots", mp.DEFAULT_SHOTS) or 0)
    exemplars = read_task_file(task, language, task.fewshot_path, "few-shot file (fewshot_path)") if shots else []
    try:
        prompts = [ev.render(mp.prompt(i, exemplars, shots), task.template) for i in items]
    except FormatError as err:
        raise EvalError(f"task mmlu_prox: {err}") from err
    outputs = [mp.cut_at_stops(o, language) for o in ev.generate(prompts, task.max_new_tokens, f"mmlu_prox/{language}")]
    predictions = [mp.extract_answer(o, language) for o in outputs]
    correct = [mp.exact_match(p, i["answer"]) for p, i in zip(predictions, items, strict=True)]
    records = _answer_records(items, prompts, outputs, predictions, correct, "subject")
    scores = {"exact_match": 100.0 * sum(correct) / len(items), "n": len(items), "skipped": 0, "truncated": 0}
    return TaskResult(scores, records)


def eval_routing_divergence(ev: Evaluator, task: Any, language: str, max_samples: int) -> TaskResult:
    """Middle-layer routing divergence from English on parallel text (:mod:`.routing_alignment`)."""
    return TaskResult(ra.divergence_scores(ev, task, language, max_samples))


@dataclasses.dataclass(frozen=True)
class TaskKind:
    """One task kind (``eval.tasks.<name>.kind``). ``run(ev, task, language, max_samples)`` scores
    one language; ``primary``: the metric tables, logs and correlations use; ``general``: the
    columns of the general-ability table (default: ``primary``); ``details``: further metrics
    ``eval/table.md`` shows per language, a table each, under the primary one; ``validate(task,
    where)``: cheap checks of its own config fields (``where`` = ``eval.tasks.<name>``), before
    any stage runs."""

    name: str
    run: Callable[[Evaluator, Any, str, int], TaskResult]
    primary: str
    general: tuple[str, ...] = ()
    validate: Callable[[Any, str], None] | None = None
    details: tuple[str, ...] = ()

    @property
    def general_metrics(self) -> tuple[str, ...]:
        return self.general or (self.primary,)


def _check_perplexity(task: Any, where: str) -> None:
    window = task.get("window", "truncate")
    if window not in PERPLEXITY_WINDOWS:
        raise EvalError(f"{where}.window = {window!r}; choose one of {', '.join(PERPLEXITY_WINDOWS)}")


def _check_translation(task: Any, where: str) -> None:
    direction = task.get("direction", "en-xx")
    if direction not in tr.DIRECTIONS:
        raise EvalError(f"{where}.direction = {direction!r}; choose one of {', '.join(tr.DIRECTIONS)}")


TASK_KINDS: dict[str, TaskKind] = {
    k.name: k
    for k in (
        TaskKind("mgsm", eval_mgsm, "accuracy"),
        TaskKind("qa", eval_qa, "f1"),
        TaskKind("open_qa", eval_open_qa, "exact_match", general=("exact_match", "f1")),
        TaskKind("perplexity", eval_perplexity, "perplexity", validate=_check_perplexity),
        TaskKind("multiple_choice", eval_multiple_choice, "accuracy", general=("accuracy", "accuracy_norm")),
        TaskKind("belebele", eval_belebele, "accuracy"),
        TaskKind(
            "translation",
            eval_translation,
            "chrf",
            general=("chrf", "bleu"),
            validate=_check_translation,
            details=("bleu",),
        ),
        TaskKind(
            "polymath",
            eval_polymath,
            "dw_accuracy",
            general=("dw_accuracy", "accuracy"),
            details=tuple(f"accuracy_{level}" for level in pm.LEVELS),
        ),
        TaskKind("mmlu_prox", eval_mmlu_prox, "exact_match"),
        TaskKind("routing_divergence", eval_routing_divergence, "divergence", validate=ra.check_task),
    )
}


def get_task_kind(kind: Any, where: str = "task") -> TaskKind:
    """The registered kind ``kind``; the error lists the registered ones."""
    if kind not in TASK_KINDS:
        raise EvalError(f"{where}.kind = {kind!r}; choose one of {', '.join(TASK_KINDS)}")
    return TASK_KINDS[kind]


def run_task(ev: Evaluator, task: Any, language: str, max_samples: int = 0) -> TaskResult:
    """One task on one language; ``task.kind`` picks the function."""
    return get_task_kind(task.kind).run(ev, task, get_language(language).code, max_samples)
