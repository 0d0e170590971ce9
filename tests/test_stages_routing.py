"""The stats -> analyze -> select stages on a tiny real-vocabulary model and real FLoRes text."""

import json
import os

import numpy as np
import pytest
from fixture_data import FLORES, MGSM, TINY_TOKENIZER, TINY_VOCAB
from hf_reference import make_hf_model, save_hf_model

from rise_jax import launch
from rise_jax.configs import base  # noqa: E402
from rise_jax.routing.stats import StatsError
from rise_jax.selection.algorithms import SelectionError


@pytest.fixture(scope="module")
def tokenizer_vocab_ckpt(tmp_path_factory):
    """A tiny checkpoint whose vocabulary covers the test tokenizer's ids."""
    model = make_hf_model("qwen3_moe", seed=8, vocab_size=TINY_VOCAB, hidden_size=32, num_hidden_layers=4)
    return save_hf_model(model, str(tmp_path_factory.mktemp("rv")))


def make_config(ckpt, **select):
    c = base.get_base_config()
    c.model.checkpoint = ckpt
    c.model.tokenizer = TINY_TOKENIZER
    c.model.dtype = "float32"
    c.data.path = FLORES
    c.data.languages = "en,bn,sw,zh"
    c.data.max_samples = 12
    c.data.max_length = 48
    c.select.k = 6
    for key, v in select.items():
        c.select[key] = v
    return c


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tokenizer_vocab_ckpt):
    wd = str(tmp_path_factory.mktemp("wd"))
    c = make_config(tokenizer_vocab_ckpt)
    c.stages = "stats,analyze,select"
    launch.run(c, wd)
    return wd


def test_stages_write_documented_artefacts(workdir):
    summary = json.load(open(os.path.join(workdir, "routing_stats", "summary.json")))
    assert list(summary["languages"]) == ["en", "bn", "sw", "zh"]
    assert summary["languages"]["bn"]["sequences"] == 12 and summary["languages"]["bn"]["truncated"] > 0
    assert summary["model"]["num_experts"] == 8 and "counts" in summary["keys"]
    with np.load(os.path.join(workdir, "routing_stats", "stats.npz")) as z:
        assert z["counts"].shape == (4, 4, 8) and z["seq_probs__bn"].shape == (12, 4, 8)

    a = json.load(open(os.path.join(workdir, "analysis", "analysis.json")))
    assert a["reference"] == "en" and len(a["global_jaccard"]) == 4
    assert a["zone_jaccard"]["en"]["shallow"] == 1.0 and a["zone_jaccard"]["bn"]["middle"] is None  # L=4
    assert set(a["divergence"]) == {"bn", "sw", "zh"} and a["divergence_pairs"]["bn"] == 12
    table = open(os.path.join(workdir, "analysis", "table2.md")).read()
    assert "| language | shallow | middle | deep | Avg. | all layers |" in table and "| bn |" in table
    bn = a["zone_jaccard"]["bn"]  # middle zone empty at L = 4: Avg. = mean of shallow and deep
    assert abs(bn["avg"] - (bn["shallow"] + bn["deep"]) / 2) < 1e-12
    for png in ("overlap_heatmap", "layerwise_similarity", "routing_entropy", "divergence", "activation_bn"):
        assert os.path.getsize(os.path.join(workdir, "analysis", f"{png}.png")) > 2000

    sel = json.load(open(os.path.join(workdir, "selection.json")))
    assert sel["method"] == "rise" and sel["target_language"] == "bn" and sel["num_selected"] == 6
    assert sel["zones"]["boundaries"] == [2, 2] and sel["zones"]["middle"]["count"] == 0
    assert set(sel["interference"]) == {"en", "sw", "zh"}
    assert {"layer", "expert", "zone", "scores"} <= set(sel["experts"][0])
    assert os.path.getsize(os.path.join(workdir, "selection_map.png")) > 2000


@pytest.mark.parametrize("method", ["random", "topk", "esft_gate", "esft_token"])
def test_every_baseline_runs_as_a_stage(tmp_path, workdir, tokenizer_vocab_ckpt, method):
    import shutil

    shutil.copytree(os.path.join(workdir, "routing_stats"), tmp_path / "routing_stats")
    c = make_config(tokenizer_vocab_ckpt, method=method)
    c.stages = "select"
    launch.run(c, str(tmp_path))
    sel = json.load(open(tmp_path / "selection.json"))
    assert sel["method"] == method and sel["num_selected"] >= 1


@pytest.mark.parametrize(
    "select,error,message",
    [
        (dict(target="te"), StatsError, "language 'te' is not in the routing statistics"),
        (dict(k=1000), SelectionError, "K = 1000 exceeds the pool of 32 experts"),
        (dict(ratios=(0.6, 0.6, 0.0)), SelectionError, "sum to 1.2 > 1"),
        (dict(method="best"), SelectionError, "unknown selection method 'best'"),
    ],
)
def test_bad_selection_inputs_fail_clearly_without_an_artefact(
    tmp_path, workdir, tokenizer_vocab_ckpt, select, error, message
):
    import shutil

    shutil.copytree(os.path.join(workdir, "routing_stats"), tmp_path / "routing_stats")
    c = make_config(tokenizer_vocab_ckpt, **select)
    c.stages = "select"
    with pytest.raises(error, match=message):
        launch.run(c, str(tmp_path))
    assert not os.path.exists(tmp_path / "selection.json")


def test_statistics_from_another_model_shape_are_refused_by_select(tmp_path, workdir):
    import shutil

    shutil.copytree(os.path.join(workdir, "routing_stats"), tmp_path / "routing_stats")
    other = save_hf_model(make_hf_model("qwen3_moe", seed=1, num_experts=16), str(tmp_path / "other"))
    c = make_config(other)
    c.stages = "select"
    with pytest.raises(StatsError, match=r"made for a model with .* = \(4, 8, 2\), but the model has \(3, 16, 2\)"):
        launch.run(c, str(tmp_path))
    assert not os.path.exists(tmp_path / "selection.json")


def test_single_language_statistics_cannot_drive_rise(tmp_path, tokenizer_vocab_ckpt):
    c = make_config(tokenizer_vocab_ckpt)
    c.data.languages = "bn"
    c.data.max_samples = 2
    c.stages = "stats,select"
    with pytest.raises(SelectionError, match="at least 2 languages"):
        launch.run(c, str(tmp_path))
    assert not os.path.exists(tmp_path / "selection.json")


def test_unreadable_source_fails_before_any_artefact(tmp_path, tokenizer_vocab_ckpt):
    from rise_jax.data.sources import SourceError

    c = make_config(tokenizer_vocab_ckpt)
    c.data.path = str(tmp_path / "nowhere")
    c.stages = "stats"
    with pytest.raises(SourceError, match=r"nowhere/eng_Latn/dev\.tsv: missing"):
        launch.run(c, str(tmp_path / "wd"))
    assert not os.path.exists(tmp_path / "wd" / "routing_stats")


def test_task_experts_stage_replays_a_task_corpus_and_sweeps_tau(workdir, tokenizer_vocab_ckpt):
    c = make_config(tokenizer_vocab_ckpt)
    c.stages = "task_experts"
    c.task_experts.data.path = MGSM
    c.task_experts.data.max_samples = 8
    c.task_experts.taus = "0.0,0.1,0.3"
    launch.run(c, workdir)
    out = json.load(open(os.path.join(workdir, "analysis", "task_experts.json")))
    assert out["reference"] == "en" and out["task_language"] == "en" and out["languages"] == ["bn", "sw", "zh"]
    assert [r["tau"] for r in out["sweep"]] == [0.0, 0.1, 0.3]
    counts = [r["n_task"] for r in out["sweep"]]
    assert counts == sorted(counts, reverse=True) and counts[0] > 0
    for r in out["sweep"]:
        assert r["n_overlap"] == len({tuple(p) for p in r["task"]} & {tuple(p) for p in r["multilingual"]})
    summary = json.load(open(os.path.join(workdir, "task_routing", "summary.json")))
    assert summary["languages"]["en"]["sequences"] == 8
    assert os.path.getsize(os.path.join(workdir, "analysis", "task_experts.png")) > 1000
    c.task_experts.taus = "0.1,1.5"
    with pytest.raises(Exception, match=r"task_experts.taus = '0.1,1.5': give values in \[0, 1\)"):
        launch.run(c, workdir)


def test_plain_text_blank_lines_are_skipped_and_counted_in_the_summary(tmp_path, tokenizer_vocab_ckpt):
    text = tmp_path / "text"
    text.mkdir()
    (text / "en.txt").write_text("The cat sat.\n\n   \nThe dog ran.\n", encoding="utf-8")
    (text / "quz.txt").write_text("Allillanchu\nImaynalla\n", encoding="utf-8")
    c = make_config(tokenizer_vocab_ckpt)
    c.stages = "stats"
    c.data.source = "plain_text"
    c.data.path = str(text)
    c.data.languages = "en,quz"
    wd = str(tmp_path / "wd")
    launch.run(c, wd)
    info = json.load(open(os.path.join(wd, "routing_stats", "summary.json")))["languages"]
    assert (info["en"]["sequences"], info["en"]["blank_lines_skipped"]) == (2, 2)
    assert (info["qu"]["as_written"], info["qu"]["sequences"], info["qu"]["blank_lines_skipped"]) == ("quz", 2, 0)


def test_an_esft_json_selects_its_experts_and_an_edit_in_place_selects_again(tmp_path, workdir, tokenizer_vocab_ckpt):
    """``select.method=esft_json``: the experts an ESFT expert-config JSON lists (its decoder-layer
    keys in order = the MoE layers); the file's content is in the select stage's fingerprint, so
    editing it in place reruns the selection."""
    import shutil

    shutil.copytree(os.path.join(workdir, "routing_stats"), tmp_path / "routing_stats")
    layers = json.load(open(tmp_path / "routing_stats" / "summary.json"))["model"]["num_moe_layers"]
    path = tmp_path / "esft.json"

    def write(ids):
        experts = {str(i): ids if i == 0 else [] for i in range(layers)}
        path.write_text(json.dumps({"experts": experts, "shared_experts": False, "non_expert_modules": False}))

    c = make_config(tokenizer_vocab_ckpt, method="esft_json")
    c.select.esft_config = str(path)
    c.stages = "select"
    write([1, 3])
    assert launch.run(c, str(tmp_path)) == {"select": "ran"}
    sel = json.load(open(tmp_path / "selection.json"))
    assert sel["method"] == "esft_json" and [(e["layer"], e["expert"]) for e in sel["experts"]] == [(0, 1), (0, 3)]
    assert launch.run(c, str(tmp_path)) == {"select": "skipped"}
    write([2])
    assert launch.run(c, str(tmp_path)) == {"select": "ran"}
    assert [(e["layer"], e["expert"]) for e in json.load(open(tmp_path / "selection.json"))["experts"]] == [(0, 2)]
