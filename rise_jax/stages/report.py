"""Stage ``report``: ``report.md``, ``report.html`` + PNGs in the workdir, from the artefacts of the other stages.

``report.md`` opens with the headline (``## Headline``): the target language (the train stage's
language, else ``config.train.language`` / ``config.select.target``), each eval task's primary
metric on it before → after (``eval.baseline`` → ``trained``, Δ from the unrounded values), the
largest change on any other language, and the selection (method, K / number of experts, layers
by zone) and training method. Then the sections: model and data (with the pretraining loss
curve, ``report_pretraining.png``, from the checkpoint's ``pretrain.json`` (a model the ``pretrain``
stage made), when present); routing overlap (heatmap, layer-wise similarity by zone, Table 2);
the companion study (Bandarkar et al.) when its artefacts exist: divergence from the reference by
zone, routing entropy and consistency by zone, task vs multilingual experts over τ, the
``steered`` variant against the baseline, and performance against middle-layer divergence;
the selected subnetwork by zone; interference mass per language; training; per-language results
before and after with deltas (``eval/table.md``) and a bar chart (``report_results.png``); the first
saved generations of each generative task and language, every variant side by side; the arms of
the ``arms`` stage (``arms/arms.json``) with the routing-alignment comparison
(``arms/alignment.json`` and its two plots) when it ran; what was skipped or truncated; the wall
time of each stage (``## Stage wall times``, from the pipeline records ``.rise/<stage>.json``:
``stage``, ``status``, ``seconds``, ``finished``). The routing overlap section adds every language's activation heatmap on one colour scale
(``report_activation.png``, from ``routing_stats/``) and the training section the loss curves of
``train/metrics.jsonl`` (``report_training.png``: ``loss`` and ``held_out_loss`` by step). Every
number is read from this run's artefacts; sections whose stage did not run say so instead of
guessing.

``report.html`` is the same document as one self-contained page (:mod:`rise_jax.reporting.html`:
figures embedded as base64 data URIs, inline CSS, no scripts, nothing fetched), the headline boxed
at the top and a list of the sections under it. Both files are written atomically.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import ml_collections
from absl import logging

from rise_jax.config_values import comma_list
from rise_jax.evaluation.tasks import TASK_KINDS
from rise_jax.io_utils import write_text_atomic
from rise_jax.reporting import alignment, plots
from rise_jax.reporting import html as html_report
from rise_jax.reporting.tables import delta_and_decimals
from rise_jax.routing.stats import RoutingStats
from rise_jax.stages.registry import Stage
from rise_jax.sweep_points import sweep_markdown
from rise_jax.training.artefacts import METRICS
from rise_jax.workdir import Workdir


def _load(path: str) -> Any:
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh) if path.endswith(".json") else fh.read()


def _img(wd: Workdir, path: str, alt: str) -> str:
    """A Markdown image of ``path`` relative to the report (nothing when the file is absent)."""
    return f"![{alt}]({os.path.relpath(path, wd.root)})\n" if os.path.isfile(path) else ""


# Metrics where a fall is the improvement (the headline says which way is better).
LOWER_IS_BETTER = ("perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte", "nll_per_token")


def _target_language(config: ml_collections.ConfigDict, train: dict | None, sel: dict | None) -> str:
    """The language the run trains for: the train stage's, else the configured one."""
    return (
        (train or {}).get("language")
        or config.train.get("language", "")
        or (sel or {}).get("target_language")
        or config.select.get("target", "")
    )


def _primary(config: ml_collections.ConfigDict, results: dict | None) -> dict[str, tuple[str, dict]]:
    """``{task: (primary metric, {variant: {language: value}})}`` of the eval results, in the
    config's task order."""
    res = (results or {}).get("results") or {}
    out = {}
    for task in config.eval.tasks.keys():
        per_variant = {v: r[task] for v, r in res.items() if task in r}
        if per_variant:
            metric = TASK_KINDS[config.eval.tasks[task].kind].primary
            out[task] = (
                metric,
                {
                    v: {lang: s[metric] for lang, s in langs.items() if s.get(metric) is not None}
                    for v, langs in per_variant.items()
                },
            )
    return out


def _before_after(before: float, after: float) -> str:
    """``before → after (Δ)``, the Δ from the unrounded values, as many decimals as it takes for
    it to equal the difference of the numbers shown (``reporting.tables.delta_and_decimals``)."""
    (delta,), d = delta_and_decimals([(after, before)])
    return f"{before:.{d}f} → {after:.{d}f} ({delta:+.{d}f})"


def _layers_text(sel: dict) -> str:
    layers = sorted({e["layer"] for e in sel.get("experts", [])})
    if not layers:
        return "no layers"
    runs, start = [], layers[0]
    for a, b in zip(layers, [*layers[1:], None], strict=True):
        if b != a + 1:
            runs.append(f"{start}" if start == a else f"{start}–{a}")
            start = b
    total = (sel.get("model") or {}).get("num_moe_layers")
    return f"{len(layers)}{f' of {total}' if total else ''} MoE layers ({', '.join(runs)})"


def _headline(
    config: ml_collections.ConfigDict, results: dict | None, sel: dict | None, train: dict | None
) -> list[str]:
    """The report's first table: what changed on the target language, the largest change
    elsewhere, what was selected and trained."""
    target = _target_language(config, train, sel)
    rows = [("Target language", f"**{target}**" if target else "–")]
    base_name = config.eval.baseline
    primary = _primary(config, results)
    if not primary:
        rows.append(("Results", "the eval stage has not run"))
    for task, (metric, values) in primary.items():
        base, trained = values.get(base_name), values.get("trained")
        better = " (lower is better)" if metric in LOWER_IS_BETTER else ""
        if not base or not trained:
            rows.append((f"{task}: {metric}", f"no `{base_name}` and `trained` variants to compare"))
            continue
        what = task if task == metric else f"{task} ({metric})"
        if target in base and target in trained:
            rows.append(
                (
                    f"{what} on {target}{better}",
                    f"{base_name} → trained: {_before_after(base[target], trained[target])}",
                )
            )
        others = {lang: trained[lang] - base[lang] for lang in trained if lang != target and lang in base}
        if others:
            worst = max(others, key=lambda lang: abs(others[lang]))
            rows.append(
                (
                    f"{task}: largest change on another language",
                    f"{worst}: {_before_after(base[worst], trained[worst])}",
                )
            )
    if sel:
        p = sel.get("params") or {}
        k = f" (K = {p['k']})" if "k" in p and p["k"] != sel.get("num_selected") else ""
        zones = ", ".join(
            f"{z} {sel['zones'][z]['count']}" for z in ("shallow", "middle", "deep") if z in sel.get("zones", {})
        )
        rows.append(
            (
                "Selection",
                f"{sel['method']} for {sel['target_language']}: {sel['num_selected']} experts{k} in "
                f"{_layers_text(sel)}" + (f"; by zone {zones}" if zones else ""),
            )
        )
    else:
        rows.append(("Selection", "the select stage has not run"))
    if train:
        name = train.get("method", "experts")
        rows.append(
            (
                "Training",
                f"`{name}`, {train.get('trainable_parameters', 0):,} trainable parameters, "
                f"{train.get('optimizer_steps', '–')} optimiser steps, status {train.get('status', '–')}",
            )
        )
    out = ["## Headline\n", "| | |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in rows]
    return out + [""]


def _stage_records(wd: Workdir) -> list[dict]:
    """The pipeline records of ``.rise/`` (one per stage that ran), oldest finish first."""
    if not os.path.isdir(wd.records):
        return []
    records = []
    for name in sorted(os.listdir(wd.records)):
        path = os.path.join(wd.records, name)
        if name.endswith(".json") and os.path.isfile(path):
            try:
                rec = _load(path)
            except ValueError:
                continue
            if isinstance(rec, dict) and "stage" in rec:
                records.append(rec)
    return sorted(records, key=_started)


def _started(record: dict) -> tuple[float, str]:
    """When a record's run began (finish time less its seconds; unfinished runs last): the
    pipeline's order, which the finish times alone (to the second) do not keep."""
    try:
        finished = time.mktime(time.strptime(record["finished"], "%Y-%m-%d %H:%M:%S"))
    except (KeyError, TypeError, ValueError):
        return (float("inf"), record["stage"])
    return (finished - float(record.get("seconds") or 0.0), record["stage"])


def _timing_section(wd: Workdir) -> list[str]:
    records = _stage_records(wd)
    if not records:
        return []
    out = ["## Stage wall times\n", "| stage | status | seconds | finished |", "|---|---|---:|---|"]
    total = 0.0
    for r in records:
        secs = r.get("seconds")
        total += secs or 0.0
        status = "writing this report" if r["stage"] == "report" and r.get("status") == "running" else r.get("status")
        out.append(
            f"| {r['stage']} | {status or '–'} | {'–' if secs is None else f'{secs:.1f}'} | {r.get('finished', '–')} |"
        )
    out.append(f"| **total** | | **{total:.1f}** | |")
    return out + [""]


def _read_metrics(path: str) -> list[dict]:
    if not os.path.isfile(path):
        return []
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue  # a line cut short by a kill
    return [r for r in rows if isinstance(r, dict)]


def _training_curves(wd: Workdir) -> str:
    """``report_training.png`` from ``train/metrics.jsonl`` (nothing when it has no losses)."""
    rows = _read_metrics(wd.path("train", METRICS))
    series = {}
    for key, label in (("loss", "training loss (micro-batch)"), ("held_out_loss", "held-out loss")):
        points = [(r["step"], r[key]) for r in rows if r.get(key) is not None and "step" in r]
        if points:
            series[label] = points
    if not series:
        return ""
    path = wd.path("report_training.png")
    plots.loss_curves(series, path, "Training loss", "step (micro-batch)", "LM loss")
    return _img(wd, path, "training loss by step")


def _pretraining_curve(wd: Workdir, pre: dict | None) -> str:
    curve = (pre or {}).get("loss_curve") or []
    if not curve:
        return ""
    series = {"LM loss": [(c["step"], c["lm_loss"]) for c in curve]}
    if all("balance_loss" in c for c in curve):
        series["load-balance loss"] = [(c["step"], c["balance_loss"]) for c in curve]
    path = wd.path("report_pretraining.png")
    if all("z_loss" in c for c in curve) and any(c["z_loss"] for c in curve):
        series["router z-loss"] = [(c["step"], c["z_loss"]) for c in curve]
    plots.loss_curves(series, path, "Pretraining (stage pretrain)", "step", "loss")
    return _img(wd, path, "pretraining loss")


def _activation_figure(wd: Workdir) -> str:
    """Every language's activation heatmap on one colour scale (``report_activation.png``)."""
    if not os.path.isfile(wd.stats_arrays):
        return ""
    try:
        stats = RoutingStats.load(wd.stats)
    except Exception as err:  # noqa: BLE001 - a figure is not worth failing the report for
        logging.warning(f"report: no activation heatmaps ({err})")
        return ""
    path = wd.path("report_activation.png")
    plots.activation_heatmaps(
        stats.frequencies(), list(stats.languages), path, "Expert activation frequency by language (one scale)"
    )
    return _img(wd, path, "expert activation frequency by language")


def _pretraining(config: ml_collections.ConfigDict) -> dict | None:
    """The ``pretrain.json`` of a checkpoint the ``pretrain`` stage made (None for any other)."""
    return _load(os.path.join(config.model.checkpoint, "pretrain.json"))


def _model_section(config: ml_collections.ConfigDict, stats: dict | None, groups: dict[str, str]) -> list[str]:
    out = ["## Model and data\n"]
    model = (stats or {}).get("model", {})
    if model:
        keys = ("model_type", "num_moe_layers", "num_experts", "top_k", "checkpoint")
        out.append("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
        out.append("| " + " | ".join(str(model.get(k, "–")) for k in keys) + " |\n")
    pre = _pretraining(config)
    if pre:
        curve = pre["loss_curve"]
        opts = pre["options"]
        corpus = "the project's six-language corpus" if opts["corpus"] == "demo" else "cipher languages"
        out.append(
            f"Model pretrained here from scratch (stage `pretrain`): {sum(pre['streams'].values())} sentences "
            f"({pre['tokens']} tokens) of {corpus}, step {pre['step']} of {opts['steps']}, LM loss "
            f"{curve[0]['lm_loss']:.3f} → {curve[-1]['lm_loss']:.3f}.\n"
        )
    langs = (stats or {}).get("languages", {})
    if langs:
        out.append("Routing statistics replayed (real tokens only):\n")
        out.append("| language | resource | sequences | tokens | truncated |\n|---|---|---|---|---|")
        for lang, info in langs.items():
            out.append(
                f"| {lang} | {groups.get(lang, '–')} | {info.get('sequences', '–')} | {info.get('tokens', '–')} "
                f"| {info.get('truncated', '–')} |"
            )
        out.append("")
    return out


def _isolation_line(analysis_json: dict) -> list[str]:
    """The routing-isolation statement (RISE §3.1) as numbers: mean global overlap within the
    high-resource languages, within the low-resource ones and between the two."""
    g = analysis_json.get("group_overlap")
    if not g:
        return []
    fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    n = analysis_json.get("global_top_n", "N")
    return [
        f"Mean global top-{n} overlap: within high-resource languages {fmt(g['within_high'])}, within "
        f"low-resource {fmt(g['within_low'])}, between the groups {fmt(g['between'])}.\n"
    ]


def _zone_means(per_language: dict[str, list[float]], zones: dict[str, list[int] | None]) -> dict[str, dict]:
    """``{language: {zone: mean over the zone's layers, or None for an empty zone}}``; zones as
    the analysis writes them (``[first, last]`` inclusive)."""
    out: dict[str, dict] = {}
    for lang, values in per_language.items():
        out[lang] = {}
        for zone, span in zones.items():
            part = values[span[0] : span[1] + 1] if span else []
            out[lang][zone] = sum(part) / len(part) if part else None
    return out


def _zone_table(title: str, per_language: dict[str, list[float]], zones: dict) -> list[str]:
    means = _zone_means(per_language, zones)
    fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    out = [title, "", "| language | " + " | ".join(zones) + " |", "|---|" + "---:|" * len(zones)]
    out += [f"| {lang} | " + " | ".join(fmt(m[z]) for z in zones) + " |" for lang, m in means.items()]
    return out + [""]


def _u_curve_line(divergence: dict[str, list[float]], zones: dict) -> str:
    """Which languages show the study's U-curve: middle-zone divergence below both other zones."""
    means = _zone_means(divergence, zones)
    if any(zones.get(z) is None for z in ("shallow", "middle", "deep")):
        return ""
    u = [lang for lang, m in means.items() if m["middle"] < min(m["shallow"], m["deep"])]
    return (
        f"Middle-zone divergence below both the shallow and the deep zone (the study's U-curve) for "
        f"{len(u)} of {len(means)} languages" + (f" ({', '.join(u)}).\n" if u else ".\n")
    )


def _steering_lines(config: ml_collections.ConfigDict, results: dict | None) -> list[str]:
    res = (results or {}).get("results") or {}
    base_name = config.eval.baseline
    if "steered" not in res or base_name not in res:
        return []
    s = config.eval.steer
    source = s.source or ("language" if s.language else "experts")
    what = {
        "experts": f"experts {s.experts} in every steered layer",
        "language": f"{s.language}'s experts (frequency difference > {s.tau})",
        "task_experts": f"the task experts at τ = {s.tau}",
        "multilingual": f"the multilingual experts at τ = {s.tau} (ablation)",
        "random": f"random experts, as many per layer as the task experts at τ = {s.tau} (ablation)",
    }.get(source, source)
    out = [
        f"Steering (`steered`): {what}, layers {s.layers or 'all'}, {s.mode}"
        + (f" (λ = {s.strength})" if s.mode == "soft" else "")
        + f"; change against `{base_name}`:\n"
    ]
    for task, langs in res["steered"].items():
        if task not in res[base_name]:
            continue
        metric = TASK_KINDS[config.eval.tasks[task].kind].primary
        deltas = {
            lang: v[metric] - res[base_name][task][lang][metric]
            for lang, v in langs.items()
            if lang in res[base_name][task]
        }
        mean = sum(deltas.values()) / len(deltas) if deltas else 0.0
        out.append(
            f"- {task} ({metric}): "
            + ", ".join(f"{lang} {d:+.3f}" for lang, d in deltas.items())
            + f"; mean {mean:+.3f}"
        )
    return out + [""]


def _study_section(
    wd: Workdir, config: ml_collections.ConfigDict, analysis_json: dict, results: dict | None
) -> list[str]:
    """The companion study's measures (Bandarkar et al.), from whichever of their artefacts exist."""
    zones = analysis_json.get("zones") or {}
    task = _load(wd.task_experts_table)
    correlation = _load(wd.correlation)
    steering = _steering_lines(config, results)
    has_div = bool(analysis_json.get("divergence"))
    if not (has_div or task or correlation or steering):
        return []
    ref = analysis_json.get("reference", "the reference")
    out = ["## Routing alignment with English (companion study)\n"]
    if has_div:
        out += _zone_table(
            f"Entropy-normalised JS divergence from {ref} on parallel text (the study's D_H-JS), mean by zone:",
            analysis_json["divergence"],
            zones,
        )
        out.append(_u_curve_line(analysis_json["divergence"], zones))
        out.append(_img(wd, wd.path("analysis", "divergence.png"), "routing divergence by layer"))
    for key, title in (
        ("sequence_entropy", "Routing entropy (of each sequence's mean routing distribution, nats), mean by zone:"),
        ("consistency", "Inter-token routing consistency (mean top-k Jaccard of token pairs in a sequence), by zone:"),
    ):
        if analysis_json.get(key):
            out += _zone_table(title, analysis_json[key], zones)
    out.append(_img(wd, wd.path("analysis", "routing_entropy.png"), "routing entropy by layer"))
    out.append(_img(wd, wd.path("analysis", "routing_consistency.png"), "routing consistency by layer"))
    if task:
        out += ["### Task experts and multilingual experts\n"]
        replayed = ((_load(os.path.join(wd.task_routing, "summary.json")) or {}).get("languages") or {}).values()
        t = config.task_experts
        out.append(
            f"Task corpus: `{t.data.source}` {t.data.path or t.data.hf_path} ({t.language}, "
            f"{sum(v.get('sequences', 0) for v in replayed)} sequences).\n"
        )
        out.append(task)
        out.append(_img(wd, wd.path("analysis", "task_experts.png"), "task vs multilingual experts over tau"))
    out += steering
    if correlation:
        out += ["### Performance and routing alignment\n", _load(wd.correlation_table) or ""]
        for name in correlation:
            out.append(_img(wd, wd.path("analysis", f"correlation_{name}.png"), f"{name} against divergence"))
    return out


def _selection_section(wd: Workdir, sel: dict | None) -> list[str]:
    if not sel:
        return ["## Selected subnetwork\n", "The select stage has not run.\n"]
    out = [
        "## Selected subnetwork\n",
        f"Method **{sel['method']}**, target **{sel['target_language']}**, {sel['num_selected']} experts "
        f"({', '.join(f'{k}={v}' for k, v in sel['params'].items() if k != 'k')}).\n",
        "| zone | layers | budget | selected |\n|---|---|---|---|",
    ]
    for zone in ("shallow", "middle", "deep"):
        z = sel["zones"][zone]
        layers = "–" if z["layers"] is None else f"{z['layers'][0]}–{z['layers'][1]}"
        out.append(f"| {zone} | {layers} | {z['budget'] if z['budget'] is not None else '–'} | {z['count']} |")
    out.append("")
    out.append(_img(wd, wd.selection_map, "selected experts by layer"))
    rho = sel.get("interference", {})
    if rho:
        out.append("Interference mass ρ (expected selected-expert activations per token of each other language; ")
        out.append("ρ = 0 would mean training cannot change that language's outputs):\n")
        out.append("| " + " | ".join(rho) + " |\n|" + "---|" * len(rho))
        out.append("| " + " | ".join(f"{v:.3f}" for v in rho.values()) + " |\n")
    return out


TRAIN_METHOD_NAMES = {
    "experts": "RISE — the selected experts fine-tuned in full (`experts`)",
    "rise_lora": "RISE+LoRA — low-rank adapters inside the selected experts (`rise_lora`)",
    "lora": "LoRA baseline — adapters on dense layers, no expert selection used (`lora`)",
}


def _training_section(train: dict | None) -> list[str]:
    if not train:
        return ["## Training\n", "The train stage has not run.\n"]
    ho, last = train.get("held_out_loss"), train.get("final_loss")
    method = TRAIN_METHOD_NAMES.get(train.get("method", "experts"), train.get("method", "experts"))
    lora = train.get("lora")
    if lora:
        method += f", rank {lora['rank']}, alpha {lora['alpha']:g}"
        if "targets" in lora:
            method += f", targets `{lora['targets']}`, dropout {lora['dropout']:g}"
            method += ", also inside every expert" if lora.get("all_experts") else ""
    return [
        "## Training\n",
        f"Method: {method}.\n\n"
        f"Status **{train['status']}**: {train.get('trainable_parameters', 0):,} trainable parameters on "
        f"{train['language']}, {train['sequences']} sequences ({train['target_tokens']:,} target tokens, "
        f"{train['truncated']} truncated), {train.get('optimizer_steps', '–')} optimiser steps"
        + (f"; last micro-batch loss {last:.4f}" if last is not None else "")
        + (f", held-out loss {ho:.4f}" if ho is not None else "")
        + ".\n",
    ]


def _results_section(
    wd: Workdir, config: ml_collections.ConfigDict, results: dict | None, sel: dict | None
) -> list[str]:
    table = _load(wd.eval_table)
    if not results or not table:
        return ["## Results\n", "The eval stage has not run.\n"]
    res = results["results"]
    out = ["## Results per language\n", table]
    for task_name in config.eval.tasks.keys():
        per_variant = {v: r[task_name] for v, r in res.items() if task_name in r}
        if not per_variant:
            continue
        metric = TASK_KINDS[config.eval.tasks[task_name].kind].primary
        languages = list(next(iter(per_variant.values())))
        values = {v: {lang: s[metric] for lang, s in langs.items()} for v, langs in per_variant.items()}
        figure = wd.path(f"report_{task_name}.png")
        plots.results_bars(values, languages, figure, f"{task_name}: {metric} per language", metric)
        out.append(_img(wd, figure, f"{task_name} per language"))
        base, trained = values.get(config.eval.baseline), values.get("trained")
        target = (sel or {}).get("target_language")
        if base and trained and target in base and target in trained:
            others = {lang: trained[lang] - base[lang] for lang in languages if lang != target and lang in base}
            line = f"Target {target}: {metric} {base[target]:.3f} → {trained[target]:.3f} ({trained[target] - base[target]:+.3f})."
            if others:
                worst = max(others, key=lambda lang: abs(others[lang]))
                line += f" Largest change on another language: {worst} {others[worst]:+.3f}."
            out.append(line + "\n")
    return out


EXAMPLES_PER_LANGUAGE = 2


def _short(text: str | None, limit: int, tail: bool = False) -> str:
    """One line of at most ``limit`` characters (the end of it when ``tail``), safe in Markdown."""
    flat = " ".join((text or "").split()).replace("|", "\\|")
    if len(flat) <= limit:
        return flat
    return "…" + flat[-limit:] if tail else flat[:limit] + "…"


def _read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _generations_section(wd: Workdir, results: dict | None) -> list[str]:
    """A few saved generations per generative task and language, every variant side by side (the
    RISE paper's case studies, App. I), with links to the full files."""
    res = (results or {}).get("results") or {}
    files: dict[tuple[str, str], dict[str, str]] = {}
    for variant, tasks in res.items():
        for task, langs in tasks.items():
            for lang, scores in langs.items():
                rel = scores.get("generations")
                if rel and os.path.isfile(os.path.join(wd.root, rel)):
                    files.setdefault((task, lang), {})[variant] = rel
    if not files:
        return []
    out = [
        "## Example generations\n",
        f"The first {EXAMPLES_PER_LANGUAGE} examples of each generative task and language (prompt end, reference, "
        "each variant's output and what was scored); every example is in the linked files.\n",
    ]
    for (task, lang), by_variant in files.items():
        links = " · ".join(f"[{v}]({rel})" for v, rel in by_variant.items())
        out.append(f"### {task} / {lang}\n\n{links}\n")
        records = {v: _read_jsonl(os.path.join(wd.root, rel)) for v, rel in by_variant.items()}
        first = next(iter(records.values()))
        for i, example in enumerate(first[:EXAMPLES_PER_LANGUAGE]):
            out.append(
                f"Example `{example['id']}`: {_short(example.get('prompt'), 160, tail=True) or '(prompt skipped)'}  "
            )
            out.append(f"reference: {_short(json.dumps(example['reference'], ensure_ascii=False), 120)}\n")
            out.append("| variant | output | scored | score |\n|---|---|---|---|")
            for variant, recs in records.items():
                if i < len(recs):
                    r = recs[i]
                    score = ", ".join(f"{k} {v}" for k, v in r["score"].items())
                    out.append(
                        f"| {variant} | {_short(r['output'], 120)} | {_short(str(r['prediction']), 40)} | {score} |"
                    )
            out.append("")
    return out


def _document(config: ml_collections.ConfigDict, wd: Workdir) -> tuple[list[str], list[str], list[str]]:
    """The report as Markdown: (title lines, headline lines, the sections)."""
    stats = _load(wd.stats_summary)
    sel = _load(wd.selection)
    train = _load(wd.train_summary)
    results = _load(wd.eval_results)
    pre = _pretraining(config)
    title = ["# rise_jax report\n", f"Workdir `{wd.root}`.\n"]
    headline = _headline(config, results, sel, train)
    parts: list[str] = []
    analysis_json = _load(wd.analysis_json) or {}
    parts += _model_section(config, stats, analysis_json.get("resource_groups", {}))
    parts.append(_pretraining_curve(wd, pre))
    parts.append("## Routing overlap between languages\n")
    table2 = _load(wd.table2)
    if table2 is None:
        parts.append("The analyze stage has not run.\n")
    else:
        parts.append(_img(wd, wd.path("analysis", "overlap_heatmap.png"), "global expert overlap"))
        parts.append(
            _img(wd, wd.path("analysis", "layerwise_similarity.png"), "layer-wise similarity to the reference")
        )
        parts.append(table2)
        parts += _isolation_line(analysis_json)
        parts.append(_activation_figure(wd))
    parts += _study_section(wd, config, analysis_json, results)
    parts += _selection_section(wd, sel)
    parts += _training_section(train)
    parts.append(_training_curves(wd) if train else "")
    parts += _results_section(wd, config, results, sel)
    parts += _generations_section(wd, results)
    parts += _arms_section(wd, config)
    notes = []
    for lang, info in ((stats or {}).get("languages") or {}).items():
        if info.get("truncated"):
            notes.append(f"routing statistics: {info['truncated']} {lang} sequences truncated")
        if info.get("blank_lines_skipped"):
            notes.append(f"routing statistics: {info['blank_lines_skipped']} blank {lang} lines skipped")
    if train and train.get("truncated"):
        notes.append(f"training: {train['truncated']} sequences truncated to max length")
    for variant, tasks in ((results or {}).get("results") or {}).items():
        for task, langs in tasks.items():
            for lang, s in langs.items():
                if s.get("skipped") or s.get("truncated"):
                    notes.append(f"eval {variant}/{task}/{lang}: {s['skipped']} skipped, {s['truncated']} truncated")
    parts.append("## Skipped or truncated\n")
    parts.append("\n".join(f"- {n}" for n in notes) + "\n" if notes else "Nothing was skipped or truncated.\n")
    parts += _timing_section(wd)
    # A figure after a table needs a blank line between them to stay out of the table.
    return title, headline, [("\n" + p if p.startswith("![") else p) for p in parts if p]


def _arms_section(wd: Workdir, config: ml_collections.ConfigDict) -> list[str]:
    """The ``arms`` stage's arms (``arms/arms.json``) and, when they were scored with the
    routing divergence, the routing-alignment comparison (``arms/alignment.json``)."""
    summary = _load(wd.arms_summary)
    if summary is None:
        asked = "arms" in comma_list(config.stages)
        return ["## Compared ways of adapting the model\n", "The arms stage has not run.\n"] if asked else []
    out = [
        f"## Compared ways of adapting the model (sweep `{config.arms.sweep}`)\n",
        "Each arm is this run's config with the sweep point's overrides, trained from the same "
        "selection and scored against this run's baseline; every score of every arm is in "
        "`arms/arms.md`.\n",
    ]
    rows = _load(wd.arms_alignment)
    if not rows:
        return [*out, sweep_markdown(summary)]
    target = config.train.get("language", "") or config.select.target
    plots = [os.path.relpath(p, wd.root) for p in (wd.path("arms", n) for n in alignment.PLOTS) if os.path.isfile(p)]
    out.append(alignment.comparison_markdown(rows, target, plots).replace("## ", "### ", 1))
    return out


def render_html(wd: Workdir, title: list[str], headline: list[str], sections: list[str]) -> str:
    """The report as one self-contained HTML page (images embedded, the headline boxed on top)."""
    to_html = lambda lines, toc=False: html_report.markdown_to_html("\n".join(lines), wd.root, toc=toc)  # noqa: E731
    body = to_html(title) + '<section class="headline">\n' + to_html(headline) + "</section>\n"
    return html_report.page(
        f"rise_jax report: {os.path.basename(wd.root.rstrip(os.sep))}", body + to_html(sections, True)
    )


def run(config: ml_collections.ConfigDict, wd: Workdir) -> dict[str, Any]:
    title, headline, sections = _document(config, wd)
    path = write_text_atomic(wd.report, "\n".join(title + headline + sections))
    page = write_text_atomic(wd.report_html, render_html(wd, title, headline, sections))
    logging.info(f"report -> {path}, {page}")
    return {"report": path, "html": page}


STAGE = Stage(
    "report",
    (),
    run,
    reads=("stats", "analyze", "task_experts", "select", "train", "eval", "arms", "correlate"),
    outputs=lambda wd: (wd.report, wd.report_html),
    # its figures go with report.md when a result is kept and restored (rise_jax.pipeline)
    kept=lambda wd: tuple(
        wd.path(name)
        for name in sorted(os.listdir(wd.root) if os.path.isdir(wd.root) else ())
        if name.startswith("report_") and name.endswith(".png")
    ),
    spmd=False,
)
