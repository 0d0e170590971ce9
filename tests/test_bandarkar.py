"""The companion study's config end to end on a tiny model with local data, through the CLI."""

import json
import os

import pytest
from fixture_data import FLORES, MGSM, TINY_TOKENIZER, TINY_VOCAB
from hf_reference import make_hf_model, save_hf_model

from rise_jax import launch
from rise_jax.configs import bandarkar

LANGS = {"en": "eng_Latn", "bn": "ben_Beng", "sw": "swh_Latn", "de": "deu_Latn", "zh": "zho_Hans"}


def _belebele(directory):
    """Belebele's published per-language JSONL, passages taken from the FLoRes text of tests/data."""
    os.makedirs(directory)
    for flores in LANGS.values():
        with open(os.path.join(FLORES, flores, "dev.tsv"), encoding="utf-8") as fh:
            passages = [line.rstrip("\n").split("\t")[2] for line in fh][1:4]  # after the header
        rows = [
            {
                "flores_passage": p,
                "question": "?",
                **{f"mc_answer{j}": f"option {j}" for j in range(1, 5)},
                "correct_answer_num": str(i % 4 + 1),
                "dialect": flores,
            }
            for i, p in enumerate(passages)
        ]
        with open(os.path.join(directory, f"{flores}.jsonl"), "w", encoding="utf-8") as fh:
            fh.write("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")


@pytest.mark.parametrize("model", ["qwen3"])
def test_the_study_config_runs_end_to_end_and_writes_every_artefact(tmp_path, model):
    over = {"vocab_size": TINY_VOCAB, "num_hidden_layers": 4}
    ckpt = save_hf_model(make_hf_model("qwen3_moe", seed=5, **over), str(tmp_path / "ckpt"))
    _belebele(str(tmp_path / "belebele"))
    c = bandarkar.get_config(model)
    c.model.checkpoint = ckpt
    c.model.tokenizer = TINY_TOKENIZER
    c.model.dtype = "float32"
    c.data.path = FLORES
    c.data.languages = ",".join(LANGS)
    c.data.max_samples = 6
    c.data.max_length = 48
    c.task_experts.data.path = MGSM
    c.task_experts.data.max_samples = 6
    c.task_experts.taus = "0.0,0.1,0.3"
    c.eval.languages = ",".join(LANGS)
    c.eval.tasks.mgsm.path = MGSM
    c.eval.tasks.mgsm.languages = "en,bn,sw,de,zh"
    c.eval.tasks.mgsm.max_new_tokens = 4
    c.eval.tasks.belebele.path = str(tmp_path / "belebele")
    c.eval.max_samples = 2
    c.eval.progress = False
    c.eval.steer.layers = "1-2"  # the tiny model's middle (the preset's 8-35 is for 48 layers)
    c.eval.steer.tau = 0.0
    c.correlate.layers = "1-2"
    wd = str(tmp_path / "wd")
    launch.run(c, wd)

    a = json.load(open(os.path.join(wd, "analysis", "analysis.json")))
    assert set(a["divergence"]) == {"bn", "sw", "de", "zh"} and len(a["consistency"]["bn"]) == 4
    assert set(a["sequence_entropy"]) == set(LANGS)
    task = json.load(open(os.path.join(wd, "analysis", "task_experts.json")))
    assert [r["tau"] for r in task["sweep"]] == [0.0, 0.1, 0.3]
    res = json.load(open(os.path.join(wd, "eval", "results.json")))["results"]
    assert set(res) == {"base", "steered"} and set(res["base"]) == {"mgsm", "belebele"}
    corr = json.load(open(os.path.join(wd, "analysis", "correlation.json")))["belebele"]
    assert corr["n"] == 4 and corr["layers"] == [1, 2]
    # A random tiny model may score every language alike on 2 items: then r is undefined (null + note).
    assert (corr["pearson_r"] is None and "correlation undefined" in corr["note"]) or -1 <= corr["pearson_r"] <= 1
    report = open(os.path.join(wd, "report.md")).read()
    assert "## Performance and routing alignment" in report and "correlation_belebele.png" in report
    for png in ("divergence", "routing_entropy", "routing_consistency", "task_experts", "correlation_belebele"):
        assert os.path.getsize(os.path.join(wd, "analysis", f"{png}.png")) > 1000, png


def test_the_study_config_names_its_models_and_refuses_others():
    assert bandarkar.get_config("phi").eval.steer.layers == "8-17"
    assert bandarkar.get_config("qwen3").eval.steer.strength == 0.5
    assert bandarkar.get_config("gpt_oss").eval.steer.mode == "hard"
    with pytest.raises(ValueError, match="choose one of qwen3, phi, gpt_oss, olmoe"):
        bandarkar.get_config("mixtral")
