"""The paper configs' reference recipe end to end on a tiny model with local TyDiQA-format data."""

import json
import os

from fixture_data import FLORES, TINY_TOKENIZER, TINY_VOCAB
from hf_reference import make_hf_model, save_hf_model

from rise_jax import launch
from rise_jax.configs import qwen3_30b_a3b
from rise_jax.data.sources import SourceSpec, load_examples

TYDIQA_NAMES = {"bn": ("bengali", "ben_Beng"), "en": ("english", "eng_Latn"), "sw": ("swahili", "swh_Latn")}


def _tydiqa_train_file(path, per_language=12):
    """A TyDiQA-GoldP train file in its published (SQuAD) format: ids prefixed by the language
    name; passages are FLoRes sentences, the question a sentence of the same language."""
    articles = []
    for code, (name, flores) in TYDIQA_NAMES.items():
        with open(os.path.join(FLORES, flores, "dev.tsv"), encoding="utf-8") as fh:
            lines = [row.split("\t")[-1].strip() for row in fh.read().splitlines()[1:]]
        for i in range(per_language):
            context, question = lines[2 * i], lines[2 * i + 1]
            qa = {"id": f"{name}-{i}-0", "question": question, "answers": [{"answer_start": 0, "text": context[:8]}]}
            articles.append({"title": f"{code}{i}", "paragraphs": [{"context": context, "qas": [qa]}]})
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({"version": "TyDiQA-GoldP", "data": articles}, fh, ensure_ascii=False)
    return str(path)


def test_the_reference_recipe_runs_end_to_end_on_local_tydiqa_data(tmp_path):
    ckpt = save_hf_model(
        make_hf_model("qwen3_moe", seed=5, vocab_size=TINY_VOCAB, hidden_size=32, num_hidden_layers=4),
        str(tmp_path / "ck"),
    )
    train_file = _tydiqa_train_file(tmp_path / "tydiqa-goldp-v1.1-train.json")
    c = qwen3_30b_a3b.get_config("bn,rise,4")  # the reference recipe is the default
    c.model.checkpoint = ckpt
    c.model.tokenizer = TINY_TOKENIZER
    c.model.dtype = "float32"
    c.train.compute_dtype = ""
    for section in (c.data, c.train.data):  # the hub dataset's local file: the same rows, SQuAD format
        section.source = "squad"
        section.path = train_file
    c.stages = "stats,analyze,select,train"
    wd = str(tmp_path / "wd")
    assert launch.run(c, wd) == {s: "ran" for s in ("stats", "analyze", "select", "train")}
    stats = json.load(open(os.path.join(wd, "routing_stats", "summary.json")))
    assert list(stats["languages"]) == ["bn", "en"]  # target + REFERENCE_LANGS=en, nothing else
    assert all(v["sequences"] == 12 for v in stats["languages"].values())
    assert stats["template"] == "raw"
    sel = json.load(open(os.path.join(wd, "selection.json")))
    assert sel["languages"] == ["bn", "en"] and sel["num_selected"] == 4
    # Replay and training text: question, newline, passage (rise/data.py), no chat template.
    first = load_examples(SourceSpec.from_config(c.data), "bn")[0]
    assert first.text.split("\n")[1] == first.context and first.text.startswith(first.question)
    summary = json.load(open(os.path.join(wd, "train", "summary.json")))
    assert summary["language"] == "bn" and summary["status"] == "completed"
    cfg = json.load(open(os.path.join(wd, "train", "train_config.json")))
    assert cfg["completion_only"] is False and cfg["lr"] == 2e-5 and cfg["grad_accum"] == 8
