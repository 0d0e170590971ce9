"""Agreement with lm-evaluation-harness: on an exported tiny model, lm-eval's HF backend and our
evaluator give the same per-item log-likelihoods, acc and acc_norm on a local multiple-choice task
(written in lm-eval's YAML + JSONL form), on lm-eval's own multilingual tasks (``global_mmlu``
one-shot, ``include``, ``global_piqa``, ``xcopa``, ``xnli``, ``xstorycloze``: their task YAMLs
included as they ship, only the dataset pointed at small local files of HF rows) and the same
rolling log-likelihoods, word/byte perplexity and bits per byte on a local
``loglikelihood_rolling`` task.

Both families: Qwen3's tokenizer adds no BOS (lm-eval predicts a document's first token after
EOS), Phi-3.5's adds one (after BOS). lm-eval is a test dependency (requirements-test.txt).
"""

import json
import os
import shutil

import lm_eval
import numpy as np
import pytest
from fixture_data import FLORES, tokenizer_dir
from hf_reference import make_hf_model, save_hf_model
from lm_eval.tasks import TaskManager

from rise_jax import api
from rise_jax.evaluation.tasks import Evaluator, choice_loglikelihoods, eval_multiple_choice, eval_perplexity
from rise_jax.tokenizer import load_tokenizer

FAMILIES = {
    "qwen3_moe": ("qwen3", dict(vocab_size=151936, hidden_size=32, num_hidden_layers=2)),
    "phimoe": ("phi35moe", dict(vocab_size=32064, hidden_size=32, num_hidden_layers=2)),
}
MAX_LENGTH = 16  # shorter than the documents: the rolling windows are exercised
MC_ITEMS = [
    {"question": "The capital of France is", "choices": ["Paris", "a banana", "Berlin"], "answer": 0},
    {"question": "Question: Which is a gas?\nAnswer:", "choices": ["ice", "steam", "liquid water"], "answer": 1},
    {"question": "Two plus two equals ", "choices": ["four", "seven"], "answer": 0},  # trailing space moves
    {"question": "বাংলাদেশের রাজধানী", "choices": ["ঢাকা", "কলকাতা"], "answer": 0},
    {"question": "A. one\nB. two\nAnswer:", "choices": ["A", "B"], "answer": 1},
]


def _flores(code, n):
    lines = open(os.path.join(FLORES, code, "dev.tsv"), encoding="utf-8").read().splitlines()[1 : n + 1]
    return [line.split("\t")[2] for line in lines]


DOCS = _flores("eng_Latn", 3) + _flores("ben_Beng", 2)

MC_YAML = """task: rise_agree_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: question
doc_to_choice: choices
doc_to_target: answer
metric_list:
  - metric: acc
  - metric: acc_norm
"""
ROLLING_YAML = """task: rise_agree_rolling
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: text
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
"""


_GM = dict(subject="anatomy", subject_category="STEM", cultural_sensitivity_label="CA")
# lm-eval task YAML (under lm_eval/tasks) -> (its splits' HF rows, our format, language, shots).
ML_TASKS = {
    "global_mmlu": (
        "global_mmlu/full/de/global_mmlu_full_de_anatomy.yaml",
        {
            "test": [
                dict(
                    _GM,
                    sample_id="anatomy/test/0",
                    question=" Wo liegt das Herz? ",
                    option_a="Brust",
                    option_b="Kopf",
                    option_c="Bein",
                    option_d="Arm",
                    answer="A",
                ),
                dict(
                    _GM,
                    sample_id="anatomy/test/1",
                    question="Wie viele Knochen?",
                    option_a="12",
                    option_b="206",
                    option_c="3",
                    option_d="1000",
                    answer="B",
                ),
            ],
            "dev": [  # few-shot: the first exemplar of the item's own subject (astronomy is skipped)
                dict(
                    _GM,
                    subject="astronomy",
                    sample_id="astronomy/dev/0",
                    question="Stern?",
                    option_a="a",
                    option_b="b",
                    option_c="c",
                    option_d="d",
                    answer="D",
                ),
                dict(
                    _GM,
                    sample_id="anatomy/dev/0",
                    question="Auge?",
                    option_a="sehen",
                    option_b="hören",
                    option_c="gehen",
                    option_d="essen",
                    answer="A",
                ),
            ],
        },
        "global_mmlu",
        "de",
        1,
    ),
    "include": (
        "include/default/German/include_base_44_german_driving_license.yaml",
        {
            "test": [
                dict(
                    language="German",
                    country="Germany",
                    domain="Driving License",
                    subject="Verkehr",
                    regional_feature="region explicit",
                    level="",
                    question="Was bedeutet Rot?",
                    option_a="Halt",
                    option_b="Fahren",
                    option_c="Hupen",
                    option_d="Wenden",
                    answer=0,
                )
            ]
        },
        "include",
        "de",
        0,
    ),
    "global_piqa": (
        "global_piqa/nonparallel_cloze/ben_beng.yaml",
        {
            "test": [
                dict(prompt="জল গরম করতে,", solution0="চুলায় পাত্র রাখুন।", solution1="ফ্রিজে রাখুন।", label=0),
                dict(prompt="To dry a shirt,", solution0="put it in water.", solution1="hang it in the sun.", label=1),
            ]
        },
        "global_piqa",
        "bn",
        0,
    ),
    "xcopa": (
        "xcopa/default_sw.yaml",
        {
            "test": [
                dict(
                    premise="Mtu alienda dukani.",
                    choice1="Alihitaji mkate.",
                    choice2="Duka lilifungwa.",
                    question="cause",
                    label=0,
                    idx=1,
                    changed=False,
                ),
                dict(
                    premise="Mvua ilinyesha.",
                    choice1="Barabara ililowa.",
                    choice2="Jua liliwaka.",
                    question="effect",
                    label=0,
                    idx=2,
                    changed=False,
                ),
            ]
        },
        "xcopa",
        "sw",
        0,
    ),
    "xnli": (
        "xnli/xnli_sw.yaml",
        {
            "validation": [
                dict(premise="Mbwa anabweka.", hypothesis="Mnyama anapiga kelele.", label=0),
                dict(premise="Ni usiku.", hypothesis="Jua linawaka sana.", label=2),
            ]
        },
        "xnli",
        "sw",
        0,
    ),
    "xstorycloze": (
        "xstorycloze/default_en.yaml",
        {
            "eval": [
                dict(
                    story_id="s1",
                    input_sentence_1="Tom was hungry.",
                    input_sentence_2="He opened the fridge.",
                    input_sentence_3="It was empty.",
                    input_sentence_4="He went to the store.",
                    sentence_quiz1="He bought food.",
                    sentence_quiz2="He flew to the moon.",
                    answer_right_ending=1,
                )
            ]
        },
        "xstorycloze",
        "en",
        0,
    ),
}
ALSO_SPLIT = {"xcopa": "validation", "xnli": "train", "xstorycloze": "train"}
ML_YAML = """include: {base}
task: rise_agree_{name}
dataset_path: json
dataset_name: null
dataset_kwargs:
  data_files:
{files}
num_fewshot: {shots}
metric_list:
  - metric: acc
  - metric: acc_norm
  - metric: acc_bytes
"""


def _ml_tasks(tmp, tasks):
    """lm-eval's YAML of each multilingual task, included as it ships, pointed at local rows."""
    base = os.path.join(os.path.dirname(lm_eval.__file__), "tasks")
    for name, (yaml, splits, _, _, shots) in ML_TASKS.items():
        paths = {split: _jsonl(tmp / f"{name}_{split}.jsonl", rows) for split, rows in splits.items()}
        if name in ALSO_SPLIT:  # a split the YAML names but the test never reads
            paths[ALSO_SPLIT[name]] = next(iter(paths.values()))
        files = "\n".join(f"    {split}: {path}" for split, path in paths.items())
        (tasks / f"{name}.yaml").write_text(
            ML_YAML.format(base=os.path.join(base, yaml), name=name, files=files, shots=shots)
        )
    return [f"rise_agree_{name}" for name in ML_TASKS]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def agreement(request, tmp_path_factory):
    """(our evaluator on the export, lm-eval's results on the export, task data dir)."""
    family = request.param
    tok_name, overrides = FAMILIES[family]
    tmp = tmp_path_factory.mktemp(family)
    ckpt = save_hf_model(make_hf_model(family, seed=7, **overrides), str(tmp / "hf"))
    model, params = api.load_model(ckpt, dtype="float32")
    export = str(tmp / "export")
    api.export_model(model, params, export, source_dir=ckpt)
    tok_dir = tokenizer_dir(tok_name)
    for name in os.listdir(tok_dir):
        if name.endswith((".json", ".txt", ".model")) and name != "SOURCE.txt":
            shutil.copy(os.path.join(tok_dir, name), export)
    tasks = tmp / "tasks"
    tasks.mkdir()
    (tasks / "mc.yaml").write_text(MC_YAML.format(data=_jsonl(tmp / "mc.jsonl", MC_ITEMS)))
    (tasks / "rolling.yaml").write_text(
        ROLLING_YAML.format(data=_jsonl(tmp / "docs.jsonl", [{"text": d} for d in DOCS]))
    )
    ml_tasks = _ml_tasks(tmp, tasks)
    out = {"samples": {}, "results": {}}
    # Our task YAMLs include lm-eval's shipped ones by path, so its index of every shipped task
    # (include_defaults: 7.5 s per TaskManager here) is never read.
    for names, max_length in ((["rise_agree_mc", *ml_tasks], 2048), (["rise_agree_rolling"], MAX_LENGTH)):
        res = lm_eval.simple_evaluate(
            model="hf",
            model_args=f"pretrained={export},dtype=float32,device=cpu,max_length={max_length}",
            tasks=names,
            task_manager=TaskManager(include_path=str(tasks), include_defaults=False),
            batch_size=4,
            log_samples=True,
        )
        for task in names:
            out["samples"][task], out["results"][task] = res["samples"][task], res["results"][task]
    model, params = api.load_model(export, dtype="float32")
    tokenizer = load_tokenizer(export)
    ev = Evaluator(model, params, tokenizer, [tokenizer.eos_token_id], batch_size=3, progress=False)
    return ev, out, tmp


def _by_doc(samples):
    return sorted(samples, key=lambda s: s["doc_id"])


def test_multiple_choice_log_likelihoods_acc_and_acc_norm_equal_lm_evals(agreement):
    ev, out, tmp = agreement
    theirs = [[float(r[0]) for r in s["filtered_resps"]] for s in _by_doc(out["samples"]["rise_agree_mc"])]
    ours = choice_loglikelihoods(ev, [i["question"] for i in MC_ITEMS], [i["choices"] for i in MC_ITEMS])
    assert [len(t) for t in theirs] == [len(o) for o in ours]
    np.testing.assert_allclose(np.concatenate(ours), np.concatenate(theirs), rtol=0, atol=1e-4)
    task = {"kind": "multiple_choice", "format": "jsonl", "path": str(tmp / "mc.jsonl")}
    from ml_collections import ConfigDict

    scores = eval_multiple_choice(ev, ConfigDict(task), "en", 0).scores
    metrics = out["results"]["rise_agree_mc"]
    assert scores["accuracy"] == pytest.approx(100 * metrics["acc,none"])
    assert scores["accuracy_norm"] == pytest.approx(100 * metrics["acc_norm,none"])


def test_multilingual_tasks_log_likelihoods_and_accuracies_equal_lm_evals(agreement, monkeypatch):
    """Our readers of the HF rows build lm-eval's contexts and choices (few-shot, descriptions,
    XNLI's empty context included): the same log-likelihood per choice, recorded as our task
    scores them, and the same acc / acc_norm / acc_bytes."""
    from ml_collections import ConfigDict

    from rise_jax.evaluation import tasks

    ev, out, tmp = agreement
    scored = []
    monkeypatch.setattr(
        tasks, "choice_loglikelihoods", lambda *a: scored.append(choice_loglikelihoods(*a)) or scored[-1]
    )
    for name, (_, splits, fmt, language, shots) in ML_TASKS.items():
        test_split = next(iter(splits))
        task = ConfigDict(dict(kind="multiple_choice", format=fmt, path=str(tmp / f"{name}_{test_split}.jsonl")))
        if shots:
            task.shots, task.fewshot_path = shots, str(tmp / f"{name}_dev.jsonl")
        scores = eval_multiple_choice(ev, task, language, 0).scores
        theirs = [[float(r[0]) for r in s["filtered_resps"]] for s in _by_doc(out["samples"][f"rise_agree_{name}"])]
        ours = scored[-1]
        assert [len(t) for t in theirs] == [len(o) for o in ours], name
        np.testing.assert_allclose(np.concatenate(ours), np.concatenate(theirs), rtol=0, atol=1e-4, err_msg=name)
        metrics = out["results"][f"rise_agree_{name}"]
        for ours_key, theirs_key in (
            ("accuracy", "acc"),
            ("accuracy_norm", "acc_norm"),
            ("accuracy_bytes", "acc_bytes"),
        ):
            assert scores[ours_key] == pytest.approx(100 * metrics[f"{theirs_key},none"]), (name, ours_key)


def test_rolling_log_likelihoods_and_perplexities_equal_lm_evals(agreement, tmp_path):
    from ml_collections import ConfigDict

    from rise_jax.evaluation.tasks import rolling_loglikelihoods

    ev, out, _ = agreement
    theirs = [float(s["filtered_resps"][0]) for s in _by_doc(out["samples"]["rise_agree_rolling"])]
    ours = rolling_loglikelihoods(ev, DOCS, MAX_LENGTH)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)
    # The perplexity task in rolling mode reports lm-eval's three metrics over the same text.
    (tmp_path / "en.txt").write_text("\n".join(DOCS) + "\n", encoding="utf-8")
    task = ConfigDict(
        dict(
            kind="perplexity",
            source="plain_text",
            path=str(tmp_path),
            split="",
            max_length=MAX_LENGTH,
            window="rolling",
        )
    )
    scores = eval_perplexity(ev, task, "en", 0).scores
    metrics = out["results"]["rise_agree_rolling"]
    for ours_key, theirs_key in (
        ("word_perplexity", "word_perplexity,none"),
        ("byte_perplexity", "byte_perplexity,none"),
        ("bits_per_byte", "bits_per_byte,none"),
    ):
        assert scores[ours_key] == pytest.approx(metrics[theirs_key], rel=1e-6), ours_key
    assert scores["n"] == len(DOCS) and scores["truncated"] == 0
    assert scores["tokens"] == sum(len(ev.tokenizer(d)["input_ids"]) for d in DOCS)


def test_rolling_windows_are_lm_evals_windows_for_every_length():
    from lm_eval import utils

    from rise_jax.evaluation.loglikelihood_requests import rolling_windows

    for max_length in (1, 2, 3, 5, 8):
        for n in range(0, 20):
            tokens = list(range(100, 100 + n))
            theirs = [
                utils.make_disjoint_window(w)
                for w in utils.get_rolling_token_windows(tokens, prefix_token=7, max_seq_len=max_length, context_len=1)
            ]
            ours = rolling_windows(tokens, 7, max_length)
            assert len(ours) == len(theirs)
            for (seq, mask), (context, pred) in zip(ours, theirs, strict=True):
                # lm-eval feeds (context + pred)[-(L+1):][:-1] and scores the last len(pred) positions
                assert list(seq) == (context + pred)[-(max_length + 1) :]
                assert list(seq[mask]) == pred
