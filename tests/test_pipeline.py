"""The whole pipeline on the embedded demo (test size): artefacts, report, resume and invalidation."""

import json
import os

import numpy as np
import pytest

from rise_jax import launch
from rise_jax.configs import demo  # noqa: E402
from rise_jax.pipeline import changed_keys, fingerprint, parse_stages, relevant_config

STAGES = ["stats", "analyze", "select", "train", "export", "eval", "report"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    wd = str(tmp_path_factory.mktemp("demo"))
    outcome = launch.run(demo.get_config("test"), wd)
    return wd, outcome


def test_demo_pipeline_writes_every_artefact_and_the_report(demo_run):
    wd, outcome = demo_run
    assert outcome == {s: "ran" for s in STAGES}
    ckpt = os.path.join(wd, "demo", "checkpoint")
    for f in ("config.json", "model.safetensors", "tokenizer.json", "pretrain.json"):
        assert os.path.isfile(os.path.join(ckpt, f)), f
    pre = json.load(open(os.path.join(ckpt, "pretrain.json")))
    assert pre["loss_curve"][-1]["lm_loss"] < 0.5 * pre["loss_curve"][0]["lm_loss"]  # it learned
    for rel in (
        "routing_stats/stats.npz",
        "analysis/analysis.json",
        "analysis/overlap_heatmap.png",
        "selection.json",
        "train/summary.json",
        "export/hf/config.json",
        "eval/results.json",
        "eval/table.md",
        "report.md",
        "report_perplexity.png",
    ):
        assert os.path.isfile(os.path.join(wd, rel)), rel
    sel = json.load(open(os.path.join(wd, "selection.json")))
    assert sel["target_language"] == "bn" and sel["num_selected"] == 16
    res = json.load(open(os.path.join(wd, "eval", "results.json")))["results"]
    ppl = {v: {lang: s["perplexity"] for lang, s in r["perplexity"].items()} for v, r in res.items()}
    assert set(ppl["base"]) == {"en", "es", "ru", "zh", "bn", "sw"}
    assert ppl["trained"]["bn"] < ppl["base"]["bn"]  # fine-tuning the bn subnetwork helps bn
    report = open(os.path.join(wd, "report.md")).read()
    for heading in ("## Model and data", "## Routing overlap", "## Selected subnetwork", "## Training", "## Results"):
        assert heading in report
    # The report's numbers are the run's own.
    assert f"{ppl['base']['bn']:.3f} → {ppl['trained']['bn']:.3f}" in report
    assert f"{sel['interference']['en']:.3f}" in report


def test_second_run_skips_every_stage_and_changed_training_reruns_only_train_onwards(demo_run, capsys):
    wd, _ = demo_run
    c = demo.get_config("test")
    assert launch.run(c, wd) == {s: "skipped" for s in STAGES}
    stats_before = os.path.getmtime(os.path.join(wd, "routing_stats", "stats.npz"))
    c.train.lr = 1e-3
    outcome = launch.run(c, wd)
    assert outcome == {
        "stats": "skipped",
        "analyze": "skipped",
        "select": "skipped",
        "train": "ran",
        "export": "ran",
        "eval": "ran",
        "report": "ran",
    }
    assert "config changed since its artefact was made (train.lr)" in capsys.readouterr().out
    assert os.path.getmtime(os.path.join(wd, "routing_stats", "stats.npz")) == stats_before


def test_fingerprints_depend_on_earlier_stages_not_later_ones():
    c = demo.get_config("test")
    before = {s: fingerprint(relevant_config(c, s)) for s in STAGES}
    c.select.k = 8
    after = {s: fingerprint(relevant_config(c, s)) for s in STAGES}
    assert [s for s in STAGES if before[s] != after[s]] == ["select", "train", "export", "eval", "report"]
    c.eval.progress = True  # display only: never invalidates
    assert fingerprint(relevant_config(c, "eval")) == after["eval"]
    assert changed_keys({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}}) == ["a.c"]


def test_stage_list_is_validated_and_put_in_pipeline_order():
    assert parse_stages("report,stats") == ["stats", "report"]
    with pytest.raises(ValueError, match=r"unknown stage\(s\) \['trian'\]"):
        parse_stages("stats,trian")


def test_demo_corpus_is_parallel_skewed_and_deterministic(tmp_path):
    from rise_jax.demo.corpus import LANGUAGES, write_corpus

    a, b = write_corpus(str(tmp_path / "a")), write_corpus(str(tmp_path / "b"))
    for lang in LANGUAGES:
        ta = open(os.path.join(a, "test", f"{lang}.txt")).read()
        assert ta == open(os.path.join(b, "test", f"{lang}.txt")).read()
        assert len(ta.splitlines()) == 64
    counts = json.load(open(os.path.join(a, "counts.json")))["pretrain"]
    assert counts["en"] > 10 * counts["bn"] and counts["sw"] == counts["bn"]
    scripts = {lang: open(os.path.join(a, "dev", f"{lang}.txt")).read() for lang in ("ru", "zh", "bn")}
    assert "\u0400" <= scripts["ru"][0] <= "\u04ff" and "\u0980" <= scripts["bn"][0] <= "\u09ff"
    assert np.all([ord(ch) > 0x4E00 for ch in scripts["zh"].splitlines()[0][:2]])


def test_sweep_points_share_the_replay_and_write_a_summary(demo_run, tmp_path):
    from rise_jax.sweep import run_sweep

    wd, _ = demo_run
    c = demo.get_config("test")
    c.model.demo = False
    c.model.checkpoint = os.path.join(wd, "demo", "checkpoint")
    for spec in (c.data, c.train.data, c.eval.tasks.perplexity):
        spec.path = spec.path.replace("{workdir}", wd)
    c.stages = "stats,analyze,select"
    points = [{"select.alpha": 0.0}, {"select.alpha": 10.0}]
    summary = run_sweep(c, points, str(tmp_path))
    a, b = (p["workdir"] for p in summary)
    npz = "routing_stats/stats.npz"
    assert os.stat(os.path.join(a, npz)).st_ino == os.stat(os.path.join(b, npz)).st_ino  # replayed once
    sel = [json.load(open(os.path.join(d, "selection.json"))) for d in (a, b)]
    assert [s["params"]["alpha"] for s in sel] == [0.0, 10.0]
    assert os.path.isfile(tmp_path / "sweep.json") and os.path.isfile(tmp_path / "sweep.md")
