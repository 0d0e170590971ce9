"""Stage ``eval``: tasks x languages for the base model and its variants -> ``eval/``.

Variants (``config.eval.variants``): ``base``; ``trained`` (the compact experts of ``train/``
merged in-process); ``pruned`` (base with the selection's experts pruned from the routers);
``trained_pruned``; ``steered`` (base with ``config.eval.steer`` applied).

Artefacts: ``eval/results.json`` (``{"config", "results": {variant: {task: {lang: {metric: value,
"n", "skipped", "truncated", "generations"}}}}}``, rewritten atomically after every language so an
interrupted run resumes where it stopped), ``eval/generations/<variant>/<task>/<lang>.jsonl`` for
the generative tasks (MGSM, QA, open QA, translation, PolyMath, MMLU-ProX; written before the language is marked done; one example a line:
``id``, ``prompt`` (null when skipped as too long), ``output`` (the model's text), ``prediction``
(what was scored), ``reference``, ``score``; the results' ``generations`` names the file relative
to the workdir) and ``eval/table.md`` (one table per task: rows = variants,
columns = languages + Avg, plus deltas against ``config.eval.baseline``, then a table per further
metric of its kind — PolyMath's levels, translation's BLEU; before them, with several tasks, every
task on one table, task × language × variant; first, when ``config.eval.general`` names tasks,
the paper's Table 4 layout: a column per task and metric).
"""

from __future__ import annotations

import math
import os
from typing import Any

import ml_collections
from absl import logging

from rise_jax.checkpoints.hf_load import read_hf_config
from rise_jax.config_values import comma_list, int_ranges, positive_ints
from rise_jax.content_hash import json_sha256, paths_sha256, tree_sha256
from rise_jax.data.languages import language_field, parse_languages
from rise_jax.data.sources import SOURCE_KINDS, SourceSpec, check_source
from rise_jax.distributed import on_writer
from rise_jax.evaluation import coverage
from rise_jax.evaluation import interventions as iv
from rise_jax.evaluation.generate import stop_token_ids
from rise_jax.evaluation.tasks import TASK_KINDS, EvalError, Evaluator, get_task_kind, run_task
from rise_jax.io_utils import (
    copy_atomic,
    ensure_writable_dir,
    read_json_object,
    write_json_atomic,
    write_jsonl_atomic,
    write_text_atomic,
)
from rise_jax.reporting.tables import results_table, tasks_table, variants_table
from rise_jax.selection.artefact import load_selection
from rise_jax.stages.build import build_model
from rise_jax.stages.common import (
    check_model_inputs,
    checkpoint_identity,
    checkpoint_pending,
    files_identity,
    tokenizer_for,
)
from rise_jax.stages.registry import Stage
from rise_jax.training.artefacts import EXPERTS, apply_trained_experts
from rise_jax.workdir import Workdir

VARIANTS = ("base", "trained", "pruned", "trained_pruned", "steered")


def _names(spec: str, what: str, allowed: tuple[str, ...] | list[str]) -> list[str]:
    names = comma_list(spec)
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise EvalError(f"unknown {what} {unknown}; choose from {', '.join(allowed)}")
    if not names:
        raise EvalError(f"no {what} given")
    return names


def variant_setup(name: str, config: ml_collections.ConfigDict, wd: Workdir, model, base: dict[str, Any]):
    """(params, router edit) of one variant."""
    cfg = model.cfg
    params, edit = base, None
    if name in ("trained", "trained_pruned"):
        params = apply_trained_experts(base, wd.train)
    if name in ("pruned", "trained_pruned"):
        edit = iv.prune_selection(cfg, load_selection(wd.selection, cfg))
    if name == "steered":
        edit = steering_edit(config, wd, cfg)
    return params, edit


STEER_SOURCES = ("experts", "language", "task_experts", "multilingual", "random")


def steering_edit(config: ml_collections.ConfigDict, wd: Workdir, cfg):
    """The ``steered`` variant's edit from ``eval.steer``: which experts (``source``), where
    (``layers``), how (``mode``: soft / hard / deactivate, ``strength`` λ); seeded by ``config.seed``.

    ``source``: ``experts`` (the ``experts`` index list in every layer), ``language`` (that
    language's experts by frequency difference > ``tau``), ``task_experts`` (the task experts of
    the ``task_experts`` stage at threshold ``tau``: a different set per layer, as the companion
    study steers), and its ablations ``multilingual`` (the multilingual experts at ``tau``
    instead) and ``random`` (as many random experts per layer as the task set has)."""
    s = config.eval.steer
    layers = list(int_ranges(s.layers)) if s.layers else list(range(cfg.num_moe_layers))
    source = s.get("source", "") or ("language" if s.get("language") else "experts")
    if source not in STEER_SOURCES:
        raise EvalError(f"config.eval.steer.source = {source!r}; choose one of {', '.join(STEER_SOURCES)}")
    seed = int(config.get("seed", 0))
    if source == "experts":
        return iv.steer(cfg, int_ranges(s.experts), layers, s.mode, float(s.strength), seed=seed)
    if source == "language":
        pairs = language_experts(wd, s.language, float(s.tau), set(layers))
        logging.info(f"steering {len(pairs)} {s.language} experts (activation-frequency difference > {s.tau})")
        return iv.steer_pairs(cfg, pairs, s.mode, float(s.strength), seed=seed)
    task = task_expert_sets(wd, float(s.tau), set(layers))
    pairs = task["multilingual" if source == "multilingual" else "task"]
    if source == "random":
        counts: dict[int, int] = {}
        for layer, _ in pairs:
            counts[layer] = counts.get(layer, 0) + 1
        pairs = iv.random_pairs(cfg, counts, seed)
    logging.info(
        f"steering {len(pairs)} {source} (layer, expert) pairs at tau {s.tau} in layers {layers[0]}-{layers[-1]}"
    )
    return iv.steer_pairs(cfg, pairs, s.mode, float(s.strength), seed=seed)


def task_expert_sets(wd: Workdir, tau: float, layers: set[int]) -> dict[str, list[tuple[int, int]]]:
    """The task and multilingual expert sets at threshold ``tau`` from ``analysis/task_experts.json``,
    within ``layers``."""
    if not os.path.isfile(wd.task_experts):
        raise EvalError(f"{wd.task_experts}: missing (run the task_experts stage before steering by task experts)")
    doc = read_json_object(wd.task_experts, "task experts", EvalError)
    rows = [r for r in doc.get("sweep", []) if abs(float(r["tau"]) - tau) < 1e-9]
    if not rows:
        have = ", ".join(str(r["tau"]) for r in doc.get("sweep", []))
        raise EvalError(f"{wd.task_experts}: no expert sets at tau {tau} (swept: {have}); add it to task_experts.taus")
    return {
        key: [(int(layer), int(e)) for layer, e in rows[0][key] if int(layer) in layers]
        for key in ("task", "multilingual")
    }


def language_experts(wd: Workdir, language: str, tau: float, layers: set[int]) -> list[tuple[int, int]]:
    """``(layer, expert)`` whose activation frequency on ``language`` exceeds the mean over the
    other replayed languages by more than ``tau`` (from ``routing_stats/``), within ``layers``."""
    from rise_jax.data.languages import get_language
    from rise_jax.routing.stats import RoutingStats

    stats = RoutingStats.load(wd.stats)
    freq = stats.frequencies()
    i = stats.index(get_language(language).code)
    others = [j for j in range(len(stats.languages)) if j != i]
    if not others:
        raise EvalError("steering by language needs routing statistics of at least two languages")
    pairs = iv.experts_by_frequency_difference(freq[i], freq[others].mean(axis=0), tau)
    return [(layer, e) for layer, e in pairs if layer in layers]


def _steer_ints(s: ml_collections.ConfigDict, field: str) -> list[int]:
    try:
        values = int_ranges(s[field]) if str(s[field]).strip() else []
    except ValueError:
        raise EvalError(
            f'config.eval.steer.{field} = {s[field]!r}: expected indices such as "3,17" or "0-11"'
        ) from None
    if str(s[field]).strip() and (not values or min(values) < 0):
        raise EvalError(f"config.eval.steer.{field} = {s[field]!r}: expected non-empty ranges of indices >= 0")
    return values


def _validate_steer(config: ml_collections.ConfigDict) -> None:
    """``config.eval.steer`` for the ``steered`` variant: source, mode, strength, tau, layers and
    experts (against the checkpoint's ``config.json`` when it is a local directory), language."""
    s = config.eval.steer
    source = s.get("source", "") or ("language" if s.get("language") else "experts")
    if source not in STEER_SOURCES:
        raise EvalError(f"config.eval.steer.source = {source!r}; choose one of {', '.join(STEER_SOURCES)}")
    if s.mode not in iv.STEER_MODES:
        raise EvalError(f"config.eval.steer.mode = {s.mode!r}; choose one of {', '.join(iv.STEER_MODES)}")
    for field, ok, rule in (
        ("strength", lambda v: math.isfinite(v), "a finite number"),
        ("tau", lambda v: 0 <= v < 1, "in [0, 1) (an activation-frequency difference)"),
    ):
        value = s[field]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(float(value)):
            raise EvalError(f"config.eval.steer.{field} = {value!r}: must be {rule}")
    layers, experts = _steer_ints(s, "layers"), _steer_ints(s, "experts")
    if source == "experts" and not experts:
        raise EvalError("config.eval.steer.experts is empty: name the experts to steer (or set eval.steer.source)")
    if source == "language":
        language = language_field(s.language, "config.eval.steer.language")
        replayed = parse_languages(config.data.languages, "config.data.languages")
        if language not in replayed:
            raise EvalError(
                f"config.eval.steer.language = {s.language!r} is not among config.data.languages "
                f"({', '.join(replayed)}): its experts come from the routing statistics"
            )
    if source in ("task_experts", "multilingual", "random"):
        swept = [float(t) for t in comma_list(config.task_experts.taus)]
        if not any(abs(t - float(s.tau)) < 1e-9 for t in swept):
            raise EvalError(
                f"config.eval.steer.tau: no expert sets at tau {s.tau} (swept: {', '.join(map(str, swept))}); "
                "add it to config.task_experts.taus"
            )
    checkpoint = config.model.checkpoint
    if checkpoint_pending(config) or not os.path.isfile(os.path.join(checkpoint or "", "config.json")):
        return
    cfg, _ = read_hf_config(checkpoint)
    for field, values, size, what in (
        ("layers", layers, cfg.num_moe_layers, "MoE layer"),
        ("experts", experts, cfg.num_experts, "expert"),
    ):
        if values and max(values) >= size:
            raise iv.InterventionError(
                f"config.eval.steer.{field} = {s[field]!r}: {what} {max(values)} out of range [0, {size}) "
                f"({checkpoint})"
            )
    if source == "experts" and s.mode == "hard" and len(set(experts)) > cfg.top_k:
        raise iv.InterventionError(
            f"config.eval.steer.experts: hard steering of {len(set(experts))} experts exceeds top-k = {cfg.top_k}"
        )
    if source == "experts" and s.mode == "deactivate" and len(set(experts)) > cfg.num_experts - cfg.top_k:
        raise iv.InterventionError(
            f"config.eval.steer.experts: deactivating {len(set(experts))} experts leaves fewer than "
            f"top-k = {cfg.top_k} of {cfg.num_experts}"
        )


def task_languages(config: ml_collections.ConfigDict, name: str) -> list[str]:
    """The languages eval task ``name`` runs on: its own ``languages``, else ``eval.languages``;
    ``"replay"`` (in either) = the replayed languages (``data.languages``) its dataset has
    (:func:`~rise_jax.evaluation.coverage.shared_languages`)."""
    e, task, where = config.eval, config.eval.tasks[name], f"config.eval.tasks.{name}"
    spec, field = (
        (task.languages, f"{where}.languages") if task.get("languages") else (e.languages, "config.eval.languages")
    )
    if not comma_list(spec):
        raise EvalError(f"{where}.languages and config.eval.languages are both empty: name the languages to evaluate")
    if str(spec).strip() != coverage.REPLAY:
        return parse_languages(spec, field, allow_empty=False)
    replay = parse_languages(config.data.languages, "config.data.languages")
    shared = coverage.shared_languages(task, replay)
    if not shared:
        raise EvalError(
            f"{field} = 'replay': the dataset of eval task {name} has none of the replayed languages "
            f"({', '.join(replay)}); it has {', '.join(coverage.published_languages(task) or ())}"
        )
    return shared


def validate(config: ml_collections.ConfigDict) -> None:
    e = config.eval
    unknown = [v for v in comma_list(e.variants) if v not in VARIANTS]
    if unknown:
        raise EvalError(f"config.eval.variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    if not comma_list(e.variants):
        raise EvalError("config.eval.variants is empty: no eval variant(s) given")
    unknown_general = [n for n in comma_list(e.get("general", "")) if n not in e.tasks]
    if unknown_general:
        raise EvalError(f"config.eval.general: unknown task(s) {unknown_general}; choose from {', '.join(e.tasks)}")
    if e.baseline not in VARIANTS:
        raise EvalError(f"config.eval.baseline = {e.baseline!r}; choose from {', '.join(VARIANTS)}")
    pending = checkpoint_pending(config)
    check_model_inputs(config)
    for name in _names(e.run, "eval task(s)", list(e.tasks.keys())):
        task, where = e.tasks[name], f"config.eval.tasks.{name}"
        kind = get_task_kind(task.kind, f"eval.tasks.{name}")
        if kind.validate is not None:
            kind.validate(task, f"eval.tasks.{name}")
        languages = task_languages(config, name)
        if task.kind == "perplexity" and "source" in task:
            if task.source not in SOURCE_KINDS:
                raise EvalError(f"{where}.source = {task.source!r}; choose one of {', '.join(SOURCE_KINDS)}")
            spec = SourceSpec(task.source, task.path, split=task.get("split", "test"))
            check_source(spec, languages, where, pending=pending)
    positive_ints(config, "eval.batch_size")
    slots = e.decode_slots
    if slots is not None and (isinstance(slots, bool) or not isinstance(slots, int) or slots < 0):
        raise EvalError(
            f"config.eval.decode_slots = {slots!r}: must be a whole number >= 1, or 0 for the default "
            "(as many slots as a 2 GiB KV cache holds, at most 16)"
        )
    if "steered" in comma_list(e.variants):
        _validate_steer(config)


# Fields of config.eval that choose what is evaluated, how it is shown or how fast it runs, not what
# a result is (``decode_slots``: greedy decoding gives the same tokens with any number of slots).
_NOT_RESULT_INPUTS = {
    "variants",
    "baseline",
    "run",
    "languages",
    "progress",
    "steer",
    "tasks",
    "general",
    "decode_slots",
}


def variant_inputs(name: str, config: ml_collections.ConfigDict, wd: Workdir) -> dict[str, Any]:
    """What a variant's model is made from beyond the base model, by content: the trained experts
    (``trained``), the selection (``pruned``), the steering settings and the artefacts they read
    (``steered``)."""
    out: dict[str, Any] = {}
    if name in ("trained", "trained_pruned"):
        out["trained"] = paths_sha256((os.path.join(wd.train, EXPERTS), wd.train_selection, wd.train_config), wd.root)
    if name in ("pruned", "trained_pruned"):
        out["selection"] = tree_sha256(wd.selection)
    if name == "steered":
        s = config.eval.steer
        out["steer"] = s.to_dict()
        out["seed"] = int(config.get("seed", 0))
        source = s.get("source", "") or ("language" if s.get("language") else "experts")
        if source == "language":
            out["stats"] = paths_sha256((wd.stats_arrays, wd.stats_summary), wd.root)
        elif source != "experts":
            out["task_experts"] = tree_sha256(wd.task_experts)
    return out


def result_inputs(
    config: ml_collections.ConfigDict,
    wd: Workdir,
    variant: str,
    task_name: str,
    language: str,
    parts: dict[tuple[str, ...], Any] | None = None,
) -> dict[str, Any]:
    """Exactly what one (variant, task, language) result is made from: the model (settings and
    checkpoint/tokenizer content), the variant's own inputs (:func:`variant_inputs`), the task's
    settings and data content, and the eval settings that change scores (``batch_size``,
    ``max_samples``). Its SHA-256 names the result in the store. ``parts``, when given, holds the
    model, variant and task parts already worked out in this run (one stage run hashes each once)."""
    parts = {} if parts is None else parts
    e = config.eval
    if ("model",) not in parts:
        identity = checkpoint_identity(config)  # by content where local: a moved checkpoint is the same model
        parts[("model",)] = {
            "model": {k: v for k, v in config.model.to_dict().items() if k != "checkpoint"},
            "checkpoint": {k: v for k, v in identity.items() if k != "checkpoint"} or identity,
            "eval": {k: v for k, v in e.to_dict().items() if k not in _NOT_RESULT_INPUTS},
        }
    if ("variant", variant) not in parts:
        parts[("variant", variant)] = variant_inputs(variant, config, wd)
    if ("task", task_name) not in parts:
        task = e.tasks[task_name].to_dict()
        task["max_samples"] = task.get("max_samples", 0) or e.max_samples
        task.pop("languages", None)
        parts[("task", task_name)] = {
            "task": task,
            "task_data": files_identity(str(task.get("path", "")), wd),
            **({"fewshot_data": files_identity(str(task["fewshot_path"]), wd)} if task.get("fewshot_path") else {}),
        }
    return {
        **parts[("model",)],
        "variant": variant,
        "variant_inputs": parts[("variant", variant)],
        **parts[("task", task_name)],
        "language": language,
    }


def _stored(wd: Workdir, digest: str) -> tuple[str, str]:
    return os.path.join(wd.eval_store, f"{digest}.json"), os.path.join(wd.eval_store, f"{digest}.jsonl")


def run(config: ml_collections.ConfigDict, wd: Workdir) -> dict[str, Any]:
    """Every (variant, task, language) result, each computed once: a result whose inputs
    (:func:`result_inputs`) equal those of one computed before — in an earlier run, under another
    selection or before an interruption — is taken from the store ``.rise/results/eval/<sha256>.json``
    (with its generations, ``<sha256>.jsonl``) instead of recomputed, and the log says so. The model
    is built only when something is left to compute."""
    e = config.eval
    variants = _names(e.variants, "eval variant(s)", VARIANTS)
    task_names = _names(e.run, "eval task(s)", list(e.tasks.keys()))
    ensure_writable_dir(wd.eval)
    os.makedirs(wd.eval_store, exist_ok=True)
    config_record = e.to_dict()
    results: dict[str, Any] = {}
    env: dict[str, Any] = {}

    def environment():
        if not env:
            built = build_model(config, progress=False)
            tokenizer = tokenizer_for(config, built.checkpoint)
            gen_cfg_file, gen_cfg = os.path.join(built.checkpoint, "generation_config.json"), None
            if os.path.isfile(gen_cfg_file):
                gen_cfg = read_json_object(gen_cfg_file, "generation config", EvalError)
            env.update(built=built, tokenizer=tokenizer, stops=stop_token_ids(tokenizer, gen_cfg))
        return env

    reused = 0
    parts: dict[tuple[str, ...], Any] = {}  # the inputs shared by many results, worked out once
    for variant in variants:
        evaluator = None
        for name in task_names:
            task = e.tasks[name]
            metric = TASK_KINDS[task.kind].primary
            for lang in task_languages(config, name):
                digest = json_sha256(result_inputs(config, wd, variant, name, lang, parts))
                scores_file, generations_file = _stored(wd, digest)
                # The writer looks (in a multi-process job every process must take the same branch).
                stored = on_writer(
                    lambda f=scores_file: (
                        read_json_object(f, "stored eval result", EvalError) if os.path.isfile(f) else None
                    ),
                    "the eval store",
                )
                if stored is not None:
                    scores = stored
                    reused += 1
                    how = "reused"
                else:
                    if evaluator is None:
                        ev = environment()
                        params, edit = variant_setup(variant, config, wd, ev["built"].model, ev["built"].params)
                        evaluator = Evaluator(
                            ev["built"].model,
                            params,
                            ev["tokenizer"],
                            ev["stops"],
                            edit,
                            batch_size=e.batch_size,
                            progress=e.progress,
                            decode_slots=e.decode_slots or None,
                        )
                    outcome = run_task(evaluator, task, lang, task.get("max_samples", 0) or e.max_samples)
                    scores = dict(outcome.scores)
                    if outcome.generations:  # stored before the scores that mark the result done
                        write_jsonl_atomic(generations_file, outcome.generations)
                    write_json_atomic(scores_file, scores)
                    how = "computed"
                if os.path.isfile(generations_file):
                    target = wd.generations(variant, name, lang)
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    copy_atomic(generations_file, target)
                    scores = {**scores, "generations": os.path.relpath(target, wd.root)}
                results.setdefault(variant, {}).setdefault(name, {})[lang] = scores
                write_json_atomic(wd.eval_results, {"config": config_record, "results": results})
                logging.info(f"eval {variant} {name} {lang}: {metric} {scores[metric]:.2f} (n={scores['n']}; {how})")
    if reused:
        logging.info(f"eval: {reused} result(s) reused from earlier runs with the same inputs ({wd.eval_store})")
    write_text_atomic(wd.eval_table, results_markdown(results, e))
    return results


def results_markdown(results: dict[str, Any], e: ml_collections.ConfigDict) -> str:
    """With several tasks, first all of them on one table (task × language × variant, each its
    primary metric); then one table per task (its primary metric, then its kind's ``details``
    metrics), with skipped/truncated counts when any."""
    parts = []
    task_names = [n for n in e.tasks.keys() if any(n in r for r in results.values())]
    primary = {}
    for name in task_names:
        metric = TASK_KINDS[e.tasks[name].kind].primary
        primary[name] = {
            v: {lang: s[metric] for lang, s in r[name].items() if metric in s} for v, r in results.items() if name in r
        }
    if len(task_names) > 1:
        labels = {f"{n} {TASK_KINDS[e.tasks[n].kind].primary}": primary[n] for n in task_names}
        parts.append("### Every task by language (primary metrics)\n\n" + tasks_table(labels, e.baseline))
    for name in task_names:
        kind = e.tasks[name].kind
        metric = TASK_KINDS[kind].primary
        per_variant = {v: r[name] for v, r in results.items() if name in r}
        languages = list(dict.fromkeys(lang for langs in per_variant.values() for lang in langs))
        title = f"### {name}: {metric}" if kind == name else f"### {name} ({kind}): {metric}"
        parts.append(f"{title}\n\n" + results_table(per_variant, metric, languages, e.baseline))
        for extra in TASK_KINDS[kind].details:
            if any(extra in s for langs in per_variant.values() for s in langs.values()):
                parts.append(f"#### {name}: {extra}\n\n" + results_table(per_variant, extra, languages, e.baseline))
        notes = [
            f"{v}/{lang}: {s['skipped']} skipped, {s['truncated']} truncated"
            for v, langs in per_variant.items()
            for lang, s in langs.items()
            if s.get("skipped") or s.get("truncated")
        ]
        if notes:
            parts.append("Prompts over the length limit: " + "; ".join(notes) + ".\n")
    general = [n for n in comma_list(e.get("general", "")) if any(n in r for r in results.values())]
    if general:
        parts.insert(0, "### General ability (paper Table 4)\n\n" + general_table(results, e, general))
    return "\n".join(parts)


_SHORT = {"exact_match": "EM", "f1": "F1", "accuracy": "acc", "accuracy_norm": "acc_norm", "perplexity": "ppl"}


def general_table(results: dict[str, Any], e: ml_collections.ConfigDict, names: list[str]) -> str:
    """The general-ability tasks side by side (the paper's Table 4 layout): one row per variant,
    then Δ rows; a column per task and metric, each the mean over the task's languages (English
    for the published benchmarks)."""
    columns, rows = [], {v: [] for v in results}
    for name in names:
        for metric in TASK_KINDS[e.tasks[name].kind].general_metrics:
            columns.append(f"{name} {_SHORT.get(metric, metric)}")
            for variant, per_task in results.items():
                vals = [s[metric] for s in per_task.get(name, {}).values() if metric in s]
                rows[variant].append(sum(vals) / len(vals) if vals else None)
    return variants_table(rows, columns, e.baseline)


STAGE = Stage(
    "eval",
    ("eval",),
    run,
    validate=validate,
    reads=("stats", "task_experts", "select", "train"),
    outputs=lambda wd: (wd.eval_results, wd.eval_table),
    state=lambda wd: (wd.eval_results, wd.eval_generations),  # finished languages of an interrupted run
    inputs=lambda config, wd: {
        f"eval_{name}": files_identity(str(config.eval.tasks[name].get("path", "")), wd)
        for name in comma_list(config.eval.run)
        if name in config.eval.tasks
    },
)
