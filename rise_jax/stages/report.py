"""Stage ``report``: ``report.md`` + PNGs in the workdir, from the artefacts of the other stages.

Sections: model and data; routing overlap (heatmap, layer-wise similarity by zone, Table 2);
the companion study (Bandarkar et al.) when its artefacts exist: divergence from the reference by
zone, routing entropy and consistency by zone, task vs multilingual experts over τ, the
``steered`` variant against the baseline, and performance against middle-layer divergence;
the selected subnetwork by zone; interference mass per language; training; per-language results
before and after with deltas (``eval/table.md``) and a bar chart (``report_results.png``); the first
saved generations of each generative task and language, every variant side by side; what was
skipped or truncated. Every number is read from this run's artefacts; sections whose stage did not
run say so instead of guessing.
"""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections
from absl import logging

from rise_jax.evaluation.tasks import TASK_KINDS
from rise_jax.io_utils import write_text_atomic
from rise_jax.reporting import plots
from rise_jax.stages.registry import Stage
from rise_jax.workdir import Workdir


def _load(path: str) -> Any:
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh) if path.endswith(".json") else fh.read()


def _img(wd: Workdir, path: str, alt: str) -> str:
    """A Markdown image of ``path`` relative to the report (nothing when the file is absent)."""
    return f"![{alt}]({os.path.relpath(path, wd.root)})\n" if os.path.isfile(path) else ""


def _model_section(config: ml_collections.ConfigDict, stats: dict | None, groups: dict[str, str]) -> list[str]:
    out = ["## Model and data\n"]
    model = (stats or {}).get("model", {})
    if model:
        keys = ("model_type", "num_moe_layers", "num_experts", "top_k", "checkpoint")
        out.append("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
        out.append("| " + " | ".join(str(model.get(k, "–")) for k in keys) + " |\n")
    pre = _load(os.path.join(config.model.checkpoint, "pretrain.json")) if config.model.get("demo") else None
    if pre:
        curve = pre["loss_curve"]
        out.append(
            f"Demo model pretrained here from scratch: {pre['sentences']} sentences ({pre['tokens']} tokens) of the "
            f"project's corpus, {pre['options']['steps']} steps, LM loss {curve[0]['lm_loss']:.3f} → "
            f"{curve[-1]['lm_loss']:.3f}, {pre['seconds']:.0f} s.\n"
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


def run(config: ml_collections.ConfigDict, wd: Workdir) -> dict[str, Any]:
    stats = _load(wd.stats_summary)
    sel = _load(wd.selection)
    train = _load(wd.train_summary)
    results = _load(wd.eval_results)
    parts = ["# rise_jax report\n", f"Workdir `{wd.root}`.\n"]
    analysis_json = _load(wd.analysis_json) or {}
    parts += _model_section(config, stats, analysis_json.get("resource_groups", {}))
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
    parts += _study_section(wd, config, analysis_json, results)
    parts += _selection_section(wd, sel)
    parts += _training_section(train)
    parts += _results_section(wd, config, results, sel)
    parts += _generations_section(wd, results)
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
    path = write_text_atomic(wd.report, "\n".join(parts))
    logging.info(f"report -> {path}")
    return {"report": path}


STAGE = Stage(
    "report",
    (),
    run,
    reads=("stats", "analyze", "task_experts", "select", "train", "eval", "correlate"),
    outputs=lambda wd: (wd.report,),
)
