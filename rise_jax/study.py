"""The testbed study: ``python -m rise_jax.study --config=configs/testbed.py[:arg] [--sweep=NAME] --workdir=DIR``.

When does routing isolation appear? For each point of the sweep (``configs/sweeps.py``: overrides
of the controlled factors, e.g. ``testbed_imbalance`` over ``pretrain.mix``; no sweep: one point)
the ``pretrain`` stage runs in ``DIR/<index>_<label>`` (resumable, fingerprinted), then
``config.study.stages`` (default ``stats,analyze,select``) run on every checkpoint it saved
(``pretrain.save_steps`` and the last step), each in ``<point>/at_step/<step>`` as an ordinary
pipeline run on that checkpoint and the point's corpus. From their artefacts, per point and step:

* ``overlap`` {lang: Jaccard of the global top-N (layer, expert) sets with the reference}
  (``analysis.json``'s ``global_jaccard``, the RISE paper's routing overlap);
* ``divergence`` {lang: [L]} and its zone means (Bandarkar et al.'s entropy-normalised JSD from the
  reference by layer), and ``u_shape`` {lang: the middle zone's mean below both the shallow and the
  deep zone's}: the companion study's middle-layer convergence;
* ``interference`` {lang: ρ}: how much each language uses the experts RISE selected for
  ``select.target`` (expected selected-expert activations per token, ``selection.json``).

With the cipher corpus's ground truth (``pretrain/corpus/languages.json``: each language's mix
share and vocabulary overlap with the reference) the study says, at the last step of each point,
whether the overlap follows resource share or vocabulary overlap (:func:`tracks`), and at which
step each low-resource language's overlap first falls below ``config.study.overlap_level``.
Results: ``DIR/study.json``, ``DIR/study.md`` and the figures ``study_overlap.png``,
``study_u_depth.png``, ``study_interference.png`` (over steps, a panel per point),
``study_factor_overlap.png`` (the last step's overlap over the points) and
``study_divergence_<point>.png`` (the divergence by layer at the last step).
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import ml_collections
import numpy as np
from absl import app, flags, logging

from rise_jax.config_values import comma_list
from rise_jax.io_utils import ensure_writable_dir, write_json_atomic, write_text_atomic
from rise_jax.launch import parse_flags, resolve_placeholders, run, run_or_exit
from rise_jax.messages import show_messages, verbose_flag
from rise_jax.reporting import plots
from rise_jax.sweep import apply_overrides, label, load_sweep
from rise_jax.testbed.pretrain import PretrainOptions
from rise_jax.workdir import Workdir

FLAGS = flags.FLAGS
ZONES = ("shallow", "middle", "deep")


def saved_checkpoints(wd: Workdir, opts: PretrainOptions) -> list[tuple[int, str]]:
    """``(step, HF checkpoint)`` of every checkpoint the point's ``pretrain`` saved, by step."""
    out = {s: wd.pretrain_step(s) for s in opts.saved_steps()}
    out.setdefault(opts.steps, wd.pretrain_checkpoint)
    return sorted(out.items())


def step_config(config: ml_collections.ConfigDict, point_dir: str, checkpoint: str) -> ml_collections.ConfigDict:
    """The point's config for the study stages on ``checkpoint``: ``{workdir}`` is the point's (its
    corpus), the model is that checkpoint, the stages are ``config.study.stages``."""
    c = resolve_placeholders(config, point_dir)
    c.stages = config.study.stages
    c.model.checkpoint = checkpoint
    return c


def _zone_means(curve: list[float | None], zones: dict[str, list[int] | None]) -> dict[str, float | None]:
    out = {}
    for z in ZONES:
        span = zones.get(z)
        values = [v for v in curve[span[0] : span[1] + 1] if v is not None] if span else []
        out[z] = float(np.mean(values)) if values else None
    return out


def measure_step(wd: Workdir) -> dict[str, Any]:
    """The measures of one checkpoint's run (module docstring) from its artefacts."""
    with open(wd.analysis_json, encoding="utf-8") as fh:
        a = json.load(fh)
    langs, ref = a["languages"], a["reference"]
    i = langs.index(ref)
    out: dict[str, Any] = {
        "overlap": {lang: a["global_jaccard"][i][j] for j, lang in enumerate(langs) if lang != ref},
        "layer_overlap": {lang: a["zone_jaccard"][lang]["all"] for lang in langs if lang != ref},
        "divergence": a.get("divergence") or {},
        "zones": a["zones"],
    }
    zone_div = {lang: _zone_means(curve, a["zones"]) for lang, curve in out["divergence"].items()}
    out["zone_divergence"] = zone_div
    out["u_shape"] = {
        lang: None if None in z.values() else bool(z["middle"] < z["shallow"] and z["middle"] < z["deep"])
        for lang, z in zone_div.items()
    }
    out["u_depth"] = {  # how far the middle dips below the lower of the two edges (> 0: a U)
        lang: None if None in z.values() else min(z["shallow"], z["deep"]) - z["middle"] for lang, z in zone_div.items()
    }
    if os.path.isfile(wd.selection):
        with open(wd.selection, encoding="utf-8") as fh:
            sel = json.load(fh)
        out["target"] = sel["target_language"]
        out["interference"] = sel["interference"]
    return out


def _truth(point_dir: str) -> dict[str, Any]:
    path = os.path.join(Workdir(point_dir).pretrain_corpus, "languages.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def tracks(overlap: dict[str, float], truth: dict[str, Any], reference: str) -> dict[str, Any]:
    """Does the overlap with the reference follow resource share or vocabulary overlap? Each
    factor's *effect* is the mean overlap of the languages at its highest value minus that at its
    lowest (over the non-reference languages; a factor that does not vary has none). The verdict
    names the factor whose effect is at least twice the other's and at least 0.05 in Jaccard,
    ``both`` when both reach 0.05 without that margin, else ``neither``."""
    langs = [lang for lang in overlap if lang in truth]
    effects: dict[str, float | None] = {}
    for factor, value in (
        ("resource share", lambda lang: truth[lang]["share"]),
        ("vocabulary overlap", lambda lang: truth[lang]["vocabulary_overlap"].get(reference, 0.0)),
    ):
        values = {lang: round(value(lang), 6) for lang in langs}
        hi, lo = max(values.values(), default=0), min(values.values(), default=0)
        if hi == lo:
            effects[factor] = None
            continue
        top = [overlap[lang] for lang in langs if values[lang] == hi]
        bottom = [overlap[lang] for lang in langs if values[lang] == lo]
        effects[factor] = float(np.mean(top) - np.mean(bottom))
    big = {f: abs(e) for f, e in effects.items() if e is not None and abs(e) >= 0.05}
    if not big:
        verdict = "neither"
    elif len(big) == 1 or max(big.values()) >= 2 * min(big.values()):
        verdict = max(big, key=big.get)
    else:
        verdict = "both"
    return {"effects": effects, "verdict": verdict}


def run_point(config: ml_collections.ConfigDict, point_dir: str) -> dict[str, Any]:
    """Pretrain the point's model, run the study stages on each saved checkpoint, measure them."""
    pre = copy.deepcopy(config)
    pre.stages = "pretrain"
    run(pre, point_dir)
    opts = PretrainOptions.from_config(config.pretrain)
    steps = {}
    for step, checkpoint in saved_checkpoints(Workdir(point_dir), opts):
        step_dir = os.path.join(point_dir, "at_step", str(step))
        logging.info(f"--- step {step}: {', '.join(comma_list(config.study.stages))} on {checkpoint}")
        run(step_config(config, point_dir, checkpoint), step_dir)
        steps[step] = measure_step(Workdir(step_dir))
    truth = _truth(point_dir)
    return {"steps": steps, "truth": truth, "verdicts": verdicts(config, steps, truth)}


def verdicts(config: ml_collections.ConfigDict, steps: dict[int, dict[str, Any]], truth: dict[str, Any]) -> dict:
    """What one point shows: each low-resource language's first step below the overlap level,
    the languages whose divergence curve is U-shaped at the last step, what the overlap tracks."""
    level, reference, last = float(config.study.overlap_level), config.analyze.reference, max(steps)
    return {
        "crossing": {lang: crossing(steps, lang, level) for lang in comma_list(config.analyze.low_resource)},
        "u_shaped_at_last_step": sorted(lang for lang, v in steps[last]["u_shape"].items() if v),
        "tracks": tracks(steps[last]["overlap"], truth, reference) if truth else None,
    }


def crossing(steps: dict[int, dict[str, Any]], lang: str, level: float) -> int | None:
    """The first step at which ``lang``'s overlap with the reference is below ``level`` (None: never)."""
    return next((s for s in sorted(steps) if steps[s]["overlap"].get(lang, 1.0) < level), None)


def run_study(config: ml_collections.ConfigDict, points: list[dict[str, Any]], workdir: str) -> list[dict[str, Any]]:
    """Every point (module docstring); writes ``study.json``, ``study.md`` and the figures."""
    ensure_writable_dir(workdir)
    summary = []
    for i, overrides in enumerate(points):
        point_dir = os.path.join(workdir, f"{i:02d}_{label(overrides) or 'config'}")
        ensure_writable_dir(point_dir)
        logging.info(f"=== study point {i + 1}/{len(points)}: {overrides} -> {point_dir}")
        result = run_point(apply_overrides(config, overrides), point_dir)
        summary.append({"overrides": overrides, "workdir": point_dir, **result})
        write_json_atomic(os.path.join(workdir, "study.json"), _jsonable(summary))
    figures = study_plots(summary, workdir, float(config.study.overlap_level))
    write_text_atomic(os.path.join(workdir, "study.md"), study_markdown(config, summary, figures))
    return summary


def _jsonable(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**p, "steps": {str(s): m for s, m in p["steps"].items()}} for p in summary]


def _name(point: dict[str, Any]) -> str:
    return label(point["overrides"]) or "config"


def study_plots(summary: list[dict[str, Any]], workdir: str, level: float | None = None) -> list[str]:
    """The study's figures (module docstring): one panel per point; returns their file names."""
    files = []
    for key, name, title, ylabel, line in (
        ("overlap", "study_overlap.png", "Routing overlap with the reference", "global top-N Jaccard", level),
        (
            "u_depth",
            "study_u_depth.png",
            "Middle-layer dip of the divergence (> 0: U-shaped)",
            "min(shallow, deep) − middle",
            0.0,
        ),
        (
            "interference",
            "study_interference.png",
            "Use of RISE's experts for the target",
            "ρ (activations per token)",
            None,
        ),
    ):
        panels = {}
        for point in summary:
            series = {}
            for lang in next(iter(point["steps"].values())).get(key, {}):
                values = [(s, m.get(key, {}).get(lang)) for s, m in sorted(point["steps"].items())]
                values = [(s, v) for s, v in values if v is not None]
                if values:
                    series[lang] = values
            if series:
                panels[_name(point)] = series
        if panels:
            path = os.path.join(workdir, name)
            plots.panel_curves(panels, path, title, "pretraining step", ylabel, line, log_x=True)
            files.append(name)
    if len(summary) > 1:  # over the controlled factor: each language's overlap at each point's last step
        langs = list(dict.fromkeys(lang for p in summary for lang in p["steps"][max(p["steps"])]["overlap"]))
        series = {lang: [p["steps"][max(p["steps"])]["overlap"].get(lang) for p in summary] for lang in langs}
        name = "study_factor_overlap.png"
        title = "Routing overlap with the reference at the last step, per sweep point"
        plots.sweep_plot(
            [_name(p) for p in summary], series, os.path.join(workdir, name), title, "point", "global top-N Jaccard"
        )
        files.append(name)
    for i, point in enumerate(summary):
        last = point["steps"][max(point["steps"])]
        curves = last["divergence"]
        if not curves:
            continue
        langs = list(curves)
        values = np.asarray([[np.nan if v is None else v for v in curves[lang]] for lang in langs], float)
        name = f"study_divergence_{i:02d}.png"
        zones = last["zones"]
        n = values.shape[1]
        ratios = (
            (zones["shallow"][1] + 1) / n if zones.get("shallow") else 0.0,
            (zones["middle"][1] - zones["middle"][0] + 1) / n if zones.get("middle") else 0.0,
        )
        title = f"Divergence from the reference by layer, step {max(point['steps'])}: {_name(point)}"
        plots.layer_curves(values, langs, os.path.join(workdir, name), title, "entropy-normalised JSD", ratios)
        files.append(name)
    return files


def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def study_markdown(config: ml_collections.ConfigDict, summary: list[dict[str, Any]], figures: list[str]) -> str:
    """The study's report: per point the overlap and U-shape over steps, the crossings of the
    overlap level and what the isolation tracks."""
    level, reference, low = (
        float(config.study.overlap_level),
        config.analyze.reference,
        comma_list(config.analyze.low_resource),
    )
    lines = [
        "# Testbed study\n",
        f"Reference language: {reference}; low-resource: {', '.join(low) or '–'}; overlap level {level}.\n",
    ]
    for point in summary:
        steps = point["steps"]
        truth = point["truth"]
        lines.append(f"## {_name(point)}\n")
        if truth:
            lines.append("| language | mix share | vocabulary overlap with the reference |\n|---|---:|---:|")
            for lang, t in truth.items():
                lines.append(f"| {lang} | {t['share']:.4f} | {t['vocabulary_overlap'].get(reference, 0):.3f} |")
            lines.append("")
        langs = list(next(iter(steps.values()))["overlap"])
        head = ["step"] + [f"overlap {lang}" for lang in langs] + [f"U {lang}" for lang in langs]
        target = next(iter(steps.values())).get("target")
        if target:
            head.append(f"ρ {reference} (RISE for {target})")
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for s, m in sorted(steps.items()):
            cells = [str(s)] + [_fmt(m["overlap"][lang]) for lang in langs]
            cells += [
                {True: "yes", False: "no", None: "–"}[m["u_shape"].get(lang)] + f" ({_fmt(m['u_depth'].get(lang))})"
                for lang in langs
            ]
            if target:
                cells.append(_fmt(m["interference"].get(reference)))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        v, last = point["verdicts"], max(steps)
        for lang, s in v["crossing"].items():
            where = f"first below {level} at step {s}" if s is not None else f"never below {level} at the saved steps"
            lines.append(f"- {lang}: overlap with {reference} {where}.")
        u = v["u_shaped_at_last_step"]
        lines.append(
            f"- Divergence curve U-shaped at step {last} (middle zone below both edges): "
            f"{', '.join(u) if u else 'for no language'}."
        )
        if v["tracks"]:
            t = v["tracks"]
            effects = ", ".join(f"{f} {_fmt(e)}" for f, e in t["effects"].items())
            lines.append(
                f"- At step {last} the overlap tracks **{t['verdict']}** (effect of each factor: the mean Jaccard "
                f"of the languages at its highest value minus at its lowest: {effects})."
            )
        lines.append("")
    lines += [f"![{f[:-4]}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    del argv
    show_messages(library_info=verbose_flag())
    points = run_or_exit(load_sweep, FLAGS.sweeps_file, FLAGS.sweep) if FLAGS.sweep else [{}]
    run_or_exit(run_study, _CONFIG.value, points, os.path.abspath(FLAGS.workdir))


if __name__ == "__main__":
    from ml_collections import config_flags

    _CONFIG = config_flags.DEFINE_config_file("config", None, "ml_collections config file (configs/testbed.py).")
    flags.DEFINE_string("sweep", "", "Name of a sweep in --sweeps_file (empty: the config alone).")
    flags.DEFINE_string("sweeps_file", "configs/sweeps.py", "Python file with get_sweep(name).")
    flags.DEFINE_string("workdir", None, "Root directory; one subdirectory per point.")
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main, flags_parser=parse_flags)
