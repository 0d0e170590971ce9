"""The whole pipeline on the embedded demo (test size): artefacts, report, resume and invalidation."""

import json
import os
import shutil
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
from compile_level import optimized, runs_long_env

from rise_jax import launch
from rise_jax.configs import demo  # noqa: E402
from rise_jax.pipeline import changed_keys, fingerprint, parse_stages, relevant_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

STAGES = [
    "pretrain",
    "stats",
    "analyze",
    "task_experts",
    "select",
    "train",
    "export",
    "eval",
    "arms",
    "correlate",
    "report",
]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The test-size demo (README command 1's config) in a fresh workdir: its first stage,
    pretraining, through the CLI in a process of its own, then the whole pipeline here, where
    pretraining is up to date; both compile at XLA's -O1 (the demo runs its training and decoding
    programs many times: tests/compile_level.py). Returns (workdir, {stage: outcome}) with the
    CLI's pretrain outcome."""
    wd = str(tmp_path_factory.mktemp("demo"))
    cli = [sys.executable, "-m", "rise_jax.launch", "--config=configs/demo.py:test", f"--workdir={wd}"]
    pre = subprocess.run(
        [*cli, "--config.stages=pretrain"], cwd=ROOT, env=runs_long_env(), capture_output=True, text=True
    )
    assert pre.returncode == 0 and "[1/1 pretrain] done" in pre.stdout + pre.stderr, pre.stderr[-3000:]
    with optimized():
        outcome = launch.run(demo.get_config("test"), wd)
    assert outcome["pretrain"] == "skipped"  # the CLI's run, up to date
    outcome["pretrain"] = "ran"
    # later tests rerun stages in this workdir (a changed train.lr): keep the first run's results
    shutil.copy(os.path.join(wd, "eval", "results.json"), wd + "_first_results.json")
    return wd, outcome


@pytest.fixture(scope="module")
def demo_first_results(demo_run):
    """``eval/results.json`` of the demo run as it first finished (before any test reran a stage)."""
    with open(demo_run[0] + "_first_results.json", encoding="utf-8") as fh:
        return json.load(fh)["results"]


def test_demo_pipeline_writes_every_artefact_and_the_report(demo_run):
    wd, outcome = demo_run
    assert outcome == {s: "ran" for s in STAGES}
    ckpt = os.path.join(wd, "pretrain", "checkpoint")
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
        "analysis/divergence.png",
        "analysis/routing_entropy.png",
        "analysis/task_experts.json",
        "analysis/task_experts.png",
        "analysis/correlation.json",
        "analysis/correlation_perplexity.png",
    ):
        assert os.path.isfile(os.path.join(wd, rel)), rel
    sel = json.load(open(os.path.join(wd, "selection.json")))
    assert sel["target_language"] == "bn" and sel["num_selected"] == 16
    res = json.load(open(os.path.join(wd, "eval", "results.json")))["results"]
    ppl = {v: {lang: s["perplexity"] for lang, s in r["perplexity"].items()} for v, r in res.items()}
    assert set(ppl["base"]) == {"en", "es", "ru", "zh", "bn", "sw"}
    assert ppl["trained"]["bn"] < ppl["base"]["bn"]  # fine-tuning the bn subnetwork helps bn
    # A multilingual MC task (Global-PIQA rows) and translation both ways on the corpus languages.
    assert set(res["base"]["global_piqa"]) == {"en", "es", "ru", "zh", "bn", "sw"}
    assert res["base"]["global_piqa"]["en"]["n"] == 16
    for name in ("flores_en_xx", "flores_xx_en"):
        assert set(res["base"][name]) == {"es", "zh", "bn", "sw"}
        scores = res["base"][name]["bn"]
        assert scores["n"] == 4 and scores["chrf_signature"].startswith("nrefs:1|") and "bleu_signature" in scores
        assert os.path.isfile(os.path.join(wd, "eval", "generations", "base", name, "bn.jsonl"))
    # Saved translations feed back as a text source (the `generations` kind), as MGSM's do.
    from rise_jax.data.sources import SourceSpec, load_examples

    back = load_examples(
        SourceSpec(kind="generations", path=os.path.join(wd, "eval/generations/base/flores_en_xx")), "sw"
    )
    assert len(back) == 4 and all(e.text == e.prompt + e.answer and e.prompt for e in back)
    report = open(os.path.join(wd, "report.md")).read()
    for heading in ("## Model and data", "## Routing overlap", "## Selected subnetwork", "## Training", "## Results"):
        assert heading in report
    for task in ("global_piqa", "flores_en_xx", "flores_xx_en"):
        assert task in report, task
    # The report's numbers are the run's own.
    assert f"{ppl['base']['bn']:.3f} → {ppl['trained']['bn']:.3f}" in report
    assert f"{sel['interference']['en']:.3f}" in report


def test_the_demo_report_shows_the_companion_study_with_the_runs_own_numbers(demo_run):
    wd, _ = demo_run
    report = open(os.path.join(wd, "report.md")).read()
    assert "## Routing alignment with English (companion study)" in report
    a = json.load(open(os.path.join(wd, "analysis", "analysis.json")))
    middle = a["zones"]["middle"]
    bn_mid = np.mean(a["divergence"]["bn"][middle[0] : middle[1] + 1])
    assert f"| bn | {np.mean(a['divergence']['bn'][: middle[0]]):.3f} | {bn_mid:.3f} |" in report
    sw_entropy = np.mean(a["sequence_entropy"]["sw"][: middle[0]])
    assert f"| sw | {sw_entropy:.3f} |" in report
    # The task set: 81 English sums; the tau sweep's counts are the artefact's.
    sweep = json.load(open(os.path.join(wd, "analysis", "task_experts.json")))["sweep"]
    assert "(en, 81 sequences)" in report
    for row in sweep:
        assert f"| {row['tau']:.2f} | {row['n_task']} | {row['n_multilingual']} | {row['n_overlap']} |" in report
    assert row["n_overlap"] <= min(row["n_task"], row["n_multilingual"])
    # One steering variant with its delta against base, and the correlation with middle-layer divergence.
    res = json.load(open(os.path.join(wd, "eval", "results.json")))["results"]
    delta = res["steered"]["perplexity"]["bn"]["perplexity"] - res["base"]["perplexity"]["bn"]["perplexity"]
    assert "Steering (`steered`): the task experts at τ = 0.05, layers 3-4, soft (λ = 0.5)" in report
    assert f"bn {delta:+.3f}" in report
    corr = json.load(open(os.path.join(wd, "analysis", "correlation.json")))["perplexity"]
    assert corr["layers"] == list(range(middle[0], middle[1] + 1)) and corr["n"] == 5
    assert f"| perplexity | perplexity | base | {middle[0]}–{middle[1]} | 5 |" in report


@pytest.mark.runs_long
def test_second_run_skips_every_stage_and_changed_training_reruns_only_train_onwards(
    demo_run, demo_first_results, capsys
):
    wd, _ = demo_run
    c = demo.get_config("test")
    assert launch.run(c, wd) == {s: "skipped" for s in STAGES}
    stats_before = os.path.getmtime(os.path.join(wd, "routing_stats", "stats.npz"))
    c.train.lr = 1e-3
    outcome = launch.run(c, wd)
    assert outcome == {
        "pretrain": "skipped",
        "stats": "skipped",
        "analyze": "skipped",
        "task_experts": "skipped",
        "select": "skipped",
        "train": "ran",
        "export": "ran",
        "eval": "ran",
        "arms": "ran",
        "correlate": "skipped",
        "report": "ran",
    }
    out = capsys.readouterr().out
    assert "config changed since its artefact was made (train.lr)" in out
    assert os.path.getmtime(os.path.join(wd, "routing_stats", "stats.npz")) == stats_before
    # eval results that do not depend on training were reused, bit for bit, and the log says so
    assert "eval base perplexity bn: perplexity" in out and "(n=" in out
    assert all(f"eval {v} perplexity {lang}:" in out for v in ("base", "steered") for lang in ("en", "bn"))
    reused = [line for line in out.splitlines() if "; reused)" in line]
    assert {line.split()[line.split().index("eval") + 1] for line in reused} == {"base", "pruned", "steered"}
    assert not any(" trained perplexity " in line for line in reused)
    results = json.load(open(os.path.join(wd, "eval", "results.json")))["results"]
    assert results["base"] == demo_first_results["base"] and results["steered"] == demo_first_results["steered"]
    assert results["trained"] != demo_first_results["trained"]
    # the correlation reads only base scores and the divergence: reused
    assert outcome["correlate"] == "skipped"
    # undoing the edit restores every result kept from the first run: nothing is recomputed
    made = os.stat(os.path.join(wd, "train", "summary.json")).st_mtime_ns
    c.train.lr = demo.get_config("test").train.lr
    outcome = launch.run(c, wd)
    assert outcome == {
        **{s: "skipped" for s in STAGES},
        **{s: "restored" for s in ("train", "export", "eval", "arms", "report")},
    }
    assert os.stat(os.path.join(wd, "train", "summary.json")).st_mtime_ns != made
    assert json.load(open(os.path.join(wd, "eval", "results.json")))["results"] == demo_first_results


def test_the_demo_report_compares_rise_with_routing_alignment_and_steering(demo_run):
    """The arms stage (sweep routing_alignment): the demo run is the RISE arm (steering
    included), RISE + alignment and routers + alignment train beside it from the same selection;
    the report's table is the artefact's, and the alignment term moved bn's routing toward English."""
    wd, _ = demo_run
    res = json.load(open(os.path.join(wd, "eval", "results.json")))["results"]
    summary = json.load(open(os.path.join(wd, "arms", "arms.json")))
    assert [p["workdir"] == wd for p in summary] == [True, False, False]
    trained = [json.load(open(os.path.join(p["workdir"], "train", "summary.json"))) for p in summary[1:]]
    assert [t["method"] for t in trained] == ["experts", "routers"]
    for p in summary[1:]:  # the same selection, this run's baseline
        assert json.load(open(os.path.join(p["workdir"], "train", "selection.json"))) == json.load(
            open(os.path.join(wd, "selection.json"))
        )
        assert p["results"]["base"]["perplexity"] == res["base"]["perplexity"]
    rows = json.load(open(os.path.join(wd, "arms", "alignment.json")))
    assert [r["name"] for r in rows] == [
        "RISE (experts)",
        "steering at inference",
        "RISE (experts) + align",
        "routers + align",
    ]
    before = res["base"]["routing_divergence"]["bn"]["divergence"]
    assert all(r["div_before"] == before for r in rows)
    assert rows[0]["div_after"] == res["trained"]["routing_divergence"]["bn"]["divergence"]
    assert rows[2]["div_after"] < rows[0]["div_after"] and rows[3]["div_after"] < before  # aligned
    assert rows[0]["gain"] < 0 and rows[2]["gain"] < 0  # perplexity: lower is better
    report = open(os.path.join(wd, "report.md")).read()
    assert "### Routing alignment vs RISE on bn" in report
    for r in rows:
        assert f"| {r['name']} | {r['before']:.4f} | {r['after']:.4f} | {r['gain']:+.4f} |" in report
    assert "](arms/alignment_divergence.png)" in report


def test_changing_one_eval_task_recomputes_only_that_task(demo_run, capsys):
    """Each (variant, task, language) result is named by its inputs: a second task beside the
    demo's perplexity is computed once; changing its settings recomputes it alone."""
    wd, _ = demo_run
    c = demo.get_config("test")
    c.stages, c.keep_results = "eval", 3
    c.eval.variants, c.eval.languages, c.eval.run = "base", "bn,sw", "perplexity,short"
    c.eval.tasks.short = ml_collections.ConfigDict(c.eval.tasks.perplexity.to_dict())
    c.eval.tasks.short.max_length = 24

    for max_length in (24, 32):
        c.eval.tasks.short.max_length = max_length
        assert launch.run(c, wd) == {"eval": "ran"}
        out = capsys.readouterr().out
        lines = [line for line in out.splitlines() if "eval base " in line and "(n=" in line]
        assert len(lines) == 4, lines
        assert all(line.endswith("; reused)") for line in lines if "eval base perplexity " in line), lines
        assert all(line.endswith("; computed)") for line in lines if "eval base short " in line), lines
    assert launch.run(demo.get_config("test"), wd)["eval"] == "restored"


def test_fingerprints_depend_on_earlier_stages_not_later_ones():
    c = demo.get_config("test")
    before = {s: fingerprint(relevant_config(c, s)) for s in STAGES}
    c.select.k = 8
    after = {s: fingerprint(relevant_config(c, s)) for s in STAGES}
    # correlate is identified by the content it reads (wd=None here: its config alone), not chained
    assert [s for s in STAGES if before[s] != after[s]] == ["select", "train", "export", "eval", "arms", "report"]
    c.eval.progress = True  # display only: never invalidates
    assert fingerprint(relevant_config(c, "eval")) == after["eval"]
    c.stats.pack = not c.stats.pack  # packed and unpacked replays give the same statistics
    assert {s: fingerprint(relevant_config(c, s)) for s in STAGES} == after
    c.train.pack = not c.train.pack  # another batch composition: another loss curve
    packed = {s: fingerprint(relevant_config(c, s)) for s in STAGES}
    assert [s for s in STAGES if packed[s] != after[s]] == ["train", "export", "eval", "arms", "report"]
    assert changed_keys({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}}) == ["a.c"]


def test_eval_steering_by_task_experts_reruns_when_the_task_expert_config_changes_select_does_not():
    c = demo.get_config("test")
    before = {s: fingerprint(relevant_config(c, s)) for s in STAGES}
    c.task_experts.taus = "0.05,0.5"
    after = {s: fingerprint(relevant_config(c, s)) for s in STAGES}
    assert [s for s in STAGES if before[s] != after[s]] == ["task_experts", "eval", "arms", "report"]


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


def _on_demo_checkpoint(wd):
    """The demo's test config on the model the demo run pretrained (no pretraining)."""
    c = demo.get_config("test")
    c.stages = c.stages.replace("pretrain,", "")
    c.model.checkpoint = os.path.join(wd, "pretrain", "checkpoint")
    for spec in (c.data, c.train.data, *c.eval.tasks.values()):
        if isinstance(spec.get("path"), str):
            spec.path = spec.path.replace("{workdir}", wd)
    return c


def test_sweep_points_share_the_replay_and_write_a_summary(demo_run, tmp_path):
    from rise_jax.sweep import run_sweep

    wd, _ = demo_run
    c = _on_demo_checkpoint(wd)
    c.stages = "stats,analyze,select"
    points = [{"select.alpha": 0.0}, {"select.alpha": 10.0}]
    summary = run_sweep(c, points, str(tmp_path))
    a, b = (p["workdir"] for p in summary)
    npz = "routing_stats/stats.npz"
    assert os.stat(os.path.join(a, npz)).st_ino == os.stat(os.path.join(b, npz)).st_ino  # replayed once
    sel = [json.load(open(os.path.join(d, "selection.json"))) for d in (a, b)]
    assert [s["params"]["alpha"] for s in sel] == [0.0, 10.0]
    assert os.path.isfile(tmp_path / "sweep.json") and os.path.isfile(tmp_path / "sweep.md")


def test_fingerprints_cover_the_checkpoint_and_data_files_not_just_their_paths(tmp_path):
    """Same paths, other contents: the checkpoint's config.json / weight / tokenizer files and the
    text files are part of every fingerprint from the stage that reads them onward."""
    from rise_jax.workdir import Workdir

    ckpt, data = tmp_path / "ckpt", tmp_path / "text"
    ckpt.mkdir()
    data.mkdir()
    (ckpt / "config.json").write_text('{"model_type": "qwen3_moe"}')
    (ckpt / "model.safetensors").write_bytes(bytes(16))
    (data / "en.txt").write_text("hello\n")
    c = demo.get_config("test")
    c.model.checkpoint = str(ckpt)
    c.data.path = str(data)
    before = {s: fingerprint(relevant_config(c, s)) for s in STAGES}
    (ckpt / "model.safetensors").write_bytes(bytes(32))  # other weights at the same path
    after_ckpt = {s: fingerprint(relevant_config(c, s)) for s in STAGES}
    # correlate is identified by the content of the scores and curves it reads (none here)
    assert all(before[s] != after_ckpt[s] for s in STAGES if s not in ("pretrain", "correlate"))
    (data / "en.txt").write_text("hello again\n")
    after_data = {s: fingerprint(relevant_config(c, s)) for s in STAGES}
    assert all(after_ckpt[s] != after_data[s] for s in STAGES if s not in ("pretrain", "correlate"))
    # by content, not size; the tokenizer files count; a workdir inside the data directory does not
    wd = Workdir(str(data / "run"))
    fp = lambda: fingerprint(relevant_config(c, "stats", wd))  # noqa: E731
    before = fp()
    (ckpt / "model.safetensors").write_bytes(b"\x02" * 32)  # same size, other weights
    after_weights = fp()
    (ckpt / "tokenizer.json").write_text('{"a": 2}')
    after_tokenizer = fp()
    assert len({before, after_weights, after_tokenizer}) == 3
    os.makedirs(os.path.join(wd.root, "routing_stats"))
    open(os.path.join(wd.root, "routing_stats", "summary.json"), "w").write("{}")  # the run's own files
    assert fp() == after_tokenizer


def test_the_analysis_and_report_state_routing_isolation_by_resource_group(demo_run):
    wd, _ = demo_run
    a = json.load(open(os.path.join(wd, "analysis", "analysis.json")))
    assert a["resource_groups"] == {"en": "high", "es": "high", "ru": "high", "zh": "high", "bn": "low", "sw": "low"}
    g = a["group_overlap"]
    line = f"within high-resource languages {g['within_high']:.3f}, within low-resource {g['within_low']:.3f}"
    report = open(os.path.join(wd, "report.md")).read()
    assert line in report and "| bn | low |" in report


# --- frozen weights in int8 / fp8 on a real (pretrained) model ---------------------------------


@pytest.mark.runs_long
def test_an_int8_demo_model_keeps_perplexity_within_1pct_and_routes_99pct_of_tokens_alike(demo_run):
    """The demo's pretrained model (float32) against its int8-frozen copy (default groups: experts,
    MLP, LM head): perplexity per language on the demo's test text, and per layer the share of
    tokens with the same top-k expert set. With the attention quantized too, routes flip about as
    often as bf16 rounding alone flips them (this small model has many near-ties)."""
    import jax.numpy as jnp

    import rise_jax
    from rise_jax.data.batching import tokenize_examples
    from rise_jax.data.sources import SourceSpec, load_examples
    from rise_jax.evaluation.tasks import Evaluator, eval_perplexity
    from rise_jax.models.quantized import QUANTIZED_GROUPS
    from rise_jax.tokenizer import load_tokenizer

    wd, _ = demo_run
    c = _on_demo_checkpoint(wd)
    ckpt = c.model.checkpoint
    tok = load_tokenizer(ckpt)
    models = {
        "full": rise_jax.load_model(ckpt, dtype="float32", progress=False),
        "int8": rise_jax.load_model(ckpt, dtype="float32", frozen_dtype="int8", progress=False),
        "int8 + attention": rise_jax.load_model(
            ckpt, dtype="float32", frozen_dtype="int8", frozen_groups=QUANTIZED_GROUPS, progress=False
        ),
        "bf16": rise_jax.load_model(ckpt, dtype="bfloat16", progress=False),
    }
    ppl = {}
    for name in ("full", "int8"):
        ev = Evaluator(*models[name], tok, [tok.eos_token_id], batch_size=16, progress=False)
        ppl[name] = {
            lang: eval_perplexity(ev, c.eval.tasks.perplexity, lang, 0).scores["perplexity"]
            for lang in c.eval.languages.split(",")
        }
    for lang, full in ppl["full"].items():
        assert abs(ppl["int8"][lang] / full - 1) <= 0.01, (lang, full, ppl["int8"][lang])
    same = {name: [] for name in models if name != "full"}
    for lang in c.data.languages.split(","):
        examples = load_examples(SourceSpec("plain_text", c.data.path), lang)
        corpus = tokenize_examples(lang, examples, tok, 64, 64)
        ids = np.zeros((len(corpus.sequences), 64), np.int32)
        mask = np.zeros_like(ids)
        for i, s in enumerate(corpus.sequences):
            ids[i, : len(s)], mask[i, : len(s)] = s, 1

        def routes(name, ids=ids, mask=mask):
            m, p = models[name]
            out = rise_jax.forward(m, p, jnp.asarray(ids), jnp.asarray(mask), return_routing=True)
            return np.sort(np.asarray(out.routing.topk_indices), -1)

        reference = routes("full")
        for name in same:
            same[name].append((np.all(routes(name) == reference, -1) * mask).sum(axis=(1, 2)) / mask.sum())
    agree = {name: np.mean(v, axis=0) for name, v in same.items()}  # per layer
    assert agree["int8"].min() >= 0.99, agree["int8"]
    assert np.mean(1 - agree["int8 + attention"]) <= 1.5 * np.mean(1 - agree["bf16"]), agree


@pytest.mark.runs_long
def test_rise_on_an_int8_base_gains_as_much_and_exports_the_source_weights(demo_run, demo_first_results, tmp_path):
    """RISE on Bengali with every frozen weight in int8: the perplexity gain is within 5 % of the
    full-precision run's, the statistics record the frozen dtype, and the export merges the trained
    experts into the source checkpoint's own tensors (all others bit-identical)."""
    import glob

    from safetensors.numpy import load_file

    wd, _ = demo_run
    c = _on_demo_checkpoint(wd)
    c.stages = "stats,analyze,select,train,export,eval"
    c.eval.variants = "base,trained"
    c.eval.run = "perplexity"  # the gain this test compares
    wd8 = str(tmp_path / "int8")
    c.model.frozen_dtype = "int8"
    launch.run(c, wd8)

    def gain(res):
        return res["base"]["perplexity"]["bn"]["perplexity"] - res["trained"]["perplexity"]["bn"]["perplexity"]

    # the same run at full precision is the demo's own first one (same data, selection and training)
    full, int8 = gain(demo_first_results), gain(json.load(open(os.path.join(wd8, "eval", "results.json")))["results"])
    assert full > 0 and abs(int8 - full) <= 0.05 * full, (full, int8)
    summary = json.load(open(os.path.join(wd8, "routing_stats", "summary.json")))
    assert summary["model"]["frozen_dtype"] == "int8" and summary["model"]["dtype"] == "float32"
    assert json.load(open(os.path.join(wd8, "analysis", "analysis.json")))["model"]["frozen_dtype"] == "int8"

    def tensors(directory):
        out = {}
        for f in glob.glob(os.path.join(directory, "*.safetensors")):
            out.update(load_file(f))
        return out

    source, exported = tensors(c.model.checkpoint), tensors(os.path.join(wd8, "export", "hf"))
    assert set(source) == set(exported)
    selected = {
        f"model.layers.{e['layer']}.mlp.experts.{e['expert']}.{p}.weight"
        for e in json.load(open(os.path.join(wd8, "selection.json")))["experts"]
        for p in ("gate_proj", "up_proj", "down_proj")
    }
    assert selected <= set(source)
    for name, array in source.items():
        if name in selected:
            assert not np.array_equal(array, exported[name]), name
        else:
            assert exported[name].dtype == array.dtype and np.array_equal(array, exported[name]), name
