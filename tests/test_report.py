"""The report stage's report.md / report.html from a hand-written workdir, the plots' fixes, the
tables' Δ rounding, and (when Chromium is installed) the page rendered in a headless browser."""

import json
import os
import re
import sys

import numpy as np
import pytest

from rise_jax.configs.base import get_base_config
from rise_jax.reporting import html as html_report
from rise_jax.reporting import plots
from rise_jax.reporting.tables import delta_and_decimals, variants_table
from rise_jax.stages import report
from rise_jax.workdir import Workdir

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
import screenshot_report  # noqa: E402

LANGS = ["en", "bn", "sw"]
BASE = {"en": 1.9249, "bn": 2.631, "sw": 6.10}
TRAINED = {"en": 1.9151, "bn": 1.642, "sw": 6.45}


def _write(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(obj if isinstance(obj, str) else json.dumps(obj))


def _scores(values):
    return {"perplexity": {lang: {"perplexity": v, "n": 4, "skipped": 0, "truncated": 0} for lang, v in values.items()}}


def _record(stage, seconds, finished):
    return {
        "stage": stage,
        "fingerprint": "x",
        "config": {"select": {"k": 4}},
        "status": "done",
        "seconds": seconds,
        "finished": finished,
    }


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A workdir of small hand-written artefacts: stats summary, selection, training summary and
    metrics, eval results and table, pipeline records (no analysis: its sections say so)."""
    root = str(tmp_path_factory.mktemp("report_wd"))
    wd = Workdir(root)
    _write(
        wd.stats_summary,
        {
            "model": {
                "model_type": "qwen3_moe",
                "num_moe_layers": 4,
                "num_experts": 8,
                "top_k": 2,
                "checkpoint": "tiny",
            },
            "languages": {lang: {"sequences": 4, "tokens": 40, "truncated": 0} for lang in LANGS},
        },
    )
    experts = [(0, 1, "shallow"), (1, 3, "middle"), (2, 5, "middle"), (3, 7, "deep")]
    _write(
        wd.selection,
        {
            "method": "rise",
            "params": {"k": 4, "alpha": 10.0},
            "target_language": "bn",
            "languages": LANGS,
            "model": {"model_type": "qwen3_moe", "num_moe_layers": 4, "num_experts": 8, "top_k": 2},
            "num_selected": 4,
            "zones": {
                "boundaries": [1, 3],
                "shallow": {"layers": [0, 0], "budget": 1, "count": 1},
                "middle": {"layers": [1, 2], "budget": 2, "count": 2},
                "deep": {"layers": [3, 3], "budget": 1, "count": 1},
            },
            "experts": [{"layer": la, "expert": e, "zone": z, "scores": {}} for la, e, z in experts],
            "interference": {"en": 0.25, "sw": 0.5},
            "stats": "",
        },
    )
    _write(
        wd.train_summary,
        {
            "status": "completed",
            "method": "experts",
            "language": "bn",
            "trainable_parameters": 1234,
            "sequences": 8,
            "target_tokens": 80,
            "truncated": 0,
            "optimizer_steps": 6,
            "final_loss": 1.5,
            "held_out_loss": 1.6,
        },
    )
    metrics = [{"step": i, "epoch": 0, "loss": 2.0 - 0.1 * i} for i in range(1, 7)]
    metrics += [{"step": 3, "opt_step": 3, "held_out_loss": 1.8}, {"step": 6, "opt_step": 6, "held_out_loss": 1.6}]
    _write(wd.path("train", "metrics.jsonl"), "".join(json.dumps(m) + "\n" for m in metrics))
    _write(
        wd.eval_results,
        {
            "config": {"tasks": {"perplexity": {"kind": "perplexity"}}},
            "results": {"base": _scores(BASE), "trained": _scores(TRAINED)},
        },
    )
    rows = {"base": [BASE[lang] for lang in LANGS], "trained": [TRAINED[lang] for lang in LANGS]}
    _write(wd.eval_table, "### perplexity\n\n" + variants_table(rows, LANGS))
    for stage, secs, finished in (
        ("select", 0.5, "2026-01-01 10:00:01"),
        ("train", 12.25, "2026-01-01 10:00:14"),
        ("eval", 3.0, "2026-01-01 10:00:17"),
    ):
        _write(wd.record(stage), _record(stage, secs, finished))
    _write(wd.record("report"), {"stage": "report", "fingerprint": "x", "config": {}, "status": "running"})
    c = get_base_config()
    c.model.checkpoint = root
    c.eval.languages = ",".join(LANGS)
    out = report.run(c, wd)
    return wd, out


def test_report_md_opens_with_the_headline_and_keeps_its_sections(workdir):
    wd, out = workdir
    md = open(out["report"], encoding="utf-8").read()
    heads = [line for line in md.splitlines() if line.startswith("## ")]
    assert heads[:2] == ["## Headline", "## Model and data"] and heads[-1] == "## Stage wall times"
    for heading in ("## Selected subnetwork", "## Training", "## Results per language", "## Skipped or truncated"):
        assert heading in heads
    assert "| Target language | **bn** |" in md
    assert "| perplexity on bn (lower is better) | base → trained: 2.63 → 1.64 (-0.99) |" in md
    assert "| perplexity: largest change on another language | sw: 6.10 → 6.45 (+0.35) |" in md
    assert "rise for bn: 4 experts in 4 of 4 MoE layers (0–3); by zone shallow 1, middle 2, deep 1" in md
    # Stage wall times in pipeline order, the report's own record still running.
    times = md[md.index("## Stage wall times") :]
    assert times.index("| select |") < times.index("| train |") < times.index("| eval |")
    assert "| train | done | 12.2 |" in times or "| train | done | 12.3 |" in times
    assert "| report | writing this report | – |" in times and "**15.8**" in times
    assert "![training loss by step](report_training.png)" in md and os.path.isfile(wd.path("report_training.png"))
    assert "The analyze stage has not run." in md


def test_report_html_is_self_contained_with_embedded_figures(workdir):
    wd, out = workdir
    page = open(out["html"], encoding="utf-8").read()
    assert out["html"] == wd.path("report.html") and page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I), "fetches something"
    assert "<script" not in page.lower() and "<link" not in page.lower() and "@import" not in page
    assert '<section class="headline">' in page and "2.63 → 1.64 (-0.99)" in page
    assert page.index("Headline") < page.index("Model and data")
    md = open(out["report"], encoding="utf-8").read()
    images = re.findall(r"<img src=\"([^\"]+)\"", page)
    assert len(images) == md.count("![") == 2  # training loss, results (the other stages' figures are absent)
    assert all(src.startswith("data:image/png;base64,") for src in images)


def test_markdown_to_html_escapes_and_renders_the_subset(tmp_path):
    text = "# T\n\nA **b** `<c>` [l](x/y.jsonl) <script>\n\n| a | b |\n|---|---:|\n| x \\| y | 1 |\n\n- one\n- two\n"
    body = html_report.markdown_to_html(text + "\n![gone](nothing.png)\n", str(tmp_path))
    assert '<span class="missing">[gone: nothing.png missing]</span>' in body
    assert "<strong>b</strong>" in body and "<code>&lt;c&gt;</code>" in body and "&lt;script&gt;" in body
    assert '<a href="x/y.jsonl">l</a>' in body and "<td>x | y</td>" in body and '<td class="num">1</td>' in body
    assert "<ul>\n<li>one</li>\n<li>two</li>\n</ul>" in body


def test_report_screenshot_in_headless_chromium_is_not_blank(workdir, tmp_path):
    if screenshot_report.find_chromium() is None:
        pytest.skip("no chromium binary (apt-get install -y chromium)")
    from PIL import Image

    wd, _ = workdir
    out = str(tmp_path / "shot.png")
    assert screenshot_report.main([wd.root, out, "--height", "1200"]) == 0
    with open(out, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    image = np.asarray(Image.open(out).convert("L"))
    assert image.shape == (1200, 1280)
    assert image.std() > 10 and len(np.unique(image)) > 32  # text, tables and figures, not one colour


def test_delta_rows_agree_with_the_values_shown():
    table = variants_table({"base": [1.9249, 2.0], "trained": [1.9151, 1.5]}, ["a", "b"])
    assert "| base | 1.925 | 2.000 |" in table and "| Δ trained | -0.010 | -0.500 |" in table
    assert "| Δ trained | +0.00 | -0.50 |" in variants_table({"base": [1.5, 2.0], "trained": [1.5, 1.5]}, ["a", "b"])
    rng = np.random.default_rng(0)
    pairs = [tuple(x) for x in rng.uniform(0, 10, (200, 2))]
    deltas, d = delta_and_decimals(pairs)
    for (a, b), delta in zip(pairs, deltas, strict=True):
        assert f"{delta:.{d}f}" in (
            f"{float(f'{a:.{d}f}') - float(f'{b:.{d}f}'):.{d}f}",
            "-0." + "0" * d,
            "0." + "0" * d,
        )


@pytest.fixture
def figures(monkeypatch):
    """The plots' figures, kept open instead of saved."""
    kept = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: kept.append(fig) or path)
    yield kept
    import matplotlib.pyplot as plt

    for fig in kept:
        plt.close(fig)


def test_plots_use_integer_ticks_one_colour_scale_and_keep_legends_off_the_data(figures):
    plots.selection_map(8, 16, [(0, 2, "shallow"), (5, 15, "deep")], "s.png", "sel")
    ax = figures[-1].axes[0]
    xticks = [t for t in ax.get_xticks() if 0 <= t <= 15]
    assert all(float(t).is_integer() for t in ax.get_xticks()) and len(xticks) >= 4
    assert list(ax.get_yticks()) == list(range(8))
    freqs = np.random.default_rng(0).random((6, 4, 8)) * np.arange(1, 7)[:, None, None]
    plots.activation_heatmaps(freqs, ["en", "es", "ru", "zh", "bn", "sw"], "a.png", "act")
    fig = figures[-1]
    clims = {im.get_clim() for ax in fig.axes for im in ax.get_images()}
    assert clims == {(0.0, float(freqs.max()))}
    assert sum(1 for ax in fig.axes if ax.get_label() == "<colorbar>") == 1
    plots.layer_curves(np.random.rand(3, 8), ["en", "bn", "sw"], "d.png", "divergence", "JS")
    fig = figures[-1]
    fig.canvas.draw()
    ax = fig.axes[0]
    assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1
