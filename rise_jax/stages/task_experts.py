"""Stage ``task_experts``: experts specialised for a task vs for languages (Bandarkar et al. §5).

Replays a task corpus (``task_experts.data``, any text source: e.g. English MGSM questions, or a
local plain-text file of task prompts; its language is ``task_experts.language``) through the
frozen model, then compares activation frequencies against the reference language's general
text from ``routing_stats/`` (``analyze.reference``, e.g. English FLoRes):
``Δ_task = a_task − a_ref`` marks task experts, ``Δ_λ = a_λ − a_ref`` for every other replayed
language marks multilingual experts, swept over ``task_experts.taus``
(:func:`~rise_jax.routing.analysis.task_and_language_experts`).

Artefacts: ``task_routing/`` (the task corpus's routing statistics, the ``routing_stats`` format),
``analysis/task_experts.json`` ({task_language, reference, languages, taus, sweep: [{tau, task,
multilingual, overlap: [[layer, expert], ...], n_task, n_multilingual, n_overlap}]}; layers are
MoE-layer indices), ``analysis/task_experts.md`` (counts per τ) and ``analysis/task_experts.png``.
The steering variant can promote the task experts of one τ (``eval.steer.source = "task_experts"``).
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections
from absl import logging

from rise_jax.config_values import booleans, comma_list, positive_ints
from rise_jax.data.batching import tokenize_examples
from rise_jax.data.languages import get_language, language_field
from rise_jax.data.sources import SourceSpec, check_source, load_examples
from rise_jax.errors import RiseError
from rise_jax.io_utils import write_json_atomic, write_text_atomic
from rise_jax.reporting import plots
from rise_jax.routing.analysis import task_and_language_experts
from rise_jax.routing.stats import RoutingStats, replay
from rise_jax.stages.build import build_model
from rise_jax.stages.common import (
    check_model_inputs,
    checkpoint_identity,
    checkpoint_pending,
    files_identity,
    replayed_reference,
    tokenizer_for,
)
from rise_jax.stages.registry import Stage
from rise_jax.workdir import Workdir


class TaskExpertsError(RiseError, ValueError):
    """A task-experts setting or input that cannot be used; the message names it."""


def taus(config: ml_collections.ConfigDict) -> list[float]:
    values = comma_list(config.task_experts.taus)
    try:
        out = [float(v) for v in values]
    except ValueError as err:
        raise TaskExpertsError(f"config.task_experts.taus = {config.task_experts.taus!r}: {err}") from err
    if not out or any(not 0 <= t < 1 for t in out):
        raise TaskExpertsError(f"config.task_experts.taus = {config.task_experts.taus!r}: give values in [0, 1)")
    return out


def validate(config: ml_collections.ConfigDict) -> None:
    taus(config)
    language = language_field(config.task_experts.language, "config.task_experts.language")
    if not config.task_experts.data.path and config.task_experts.data.source != "hf":
        raise TaskExpertsError("config.task_experts.data.path is empty: give the task corpus (e.g. MGSM's directory)")
    spec = SourceSpec.from_config(config.task_experts.data)
    positive_ints(config, "task_experts.data.max_length", "stats.batch_size")
    booleans(config, "stats.pack")
    replayed_reference(config, TaskExpertsError, "task experts are measured against its routing statistics")
    check_model_inputs(config)
    check_source(spec, [language], "config.task_experts.data", pending=checkpoint_pending(config))


def table_markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Task experts (Δ vs {result['reference']} general text > τ) and multilingual experts "
        f"(any language's Δ > τ), and how many are both.",
        "",
        "| τ | task experts | multilingual experts | both |",
        "|---:|---:|---:|---:|",
    ]
    for row in result["sweep"]:
        lines.append(f"| {row['tau']:.2f} | {row['n_task']} | {row['n_multilingual']} | {row['n_overlap']} |")
    return "\n".join(lines) + "\n"


def run(config: ml_collections.ConfigDict, wd: Workdir) -> dict[str, Any]:
    t = config.task_experts
    stats = RoutingStats.load(wd.stats)
    reference = get_language(config.analyze.reference).code
    ref = stats.index(reference)
    language = get_language(t.language).code
    built = build_model(config)
    model, params, path = built.model, built.params, built.checkpoint
    stats.check_model(model.cfg, wd.stats)
    spec = SourceSpec.from_config(t.data)
    tokenizer = tokenizer_for(config, path)
    examples = load_examples(spec, language)
    corpus = tokenize_examples(
        language, examples, tokenizer, t.data.max_length, t.data.max_samples or None, t.data.template
    )
    task_stats = replay(
        model,
        params,
        [corpus],
        batch_size=config.stats.batch_size,
        bucket_multiple=config.stats.bucket_multiple,
        pack=config.stats.pack,
        pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
        model_info={"checkpoint": os.path.abspath(path)},
    )
    task_stats.save(wd.task_routing)
    freq = stats.frequencies()
    others = {lang: freq[i] for i, lang in enumerate(stats.languages) if i != ref}
    try:
        result = task_and_language_experts(task_stats.frequencies()[0], others, freq[ref], taus(config))
    except ValueError as err:
        raise TaskExpertsError(f"{wd.stats}: {err}") from err
    result = {"task_language": language, "reference": reference, "languages": list(others), **result}
    write_json_atomic(wd.task_experts, result)
    table = table_markdown(result)
    write_text_atomic(wd.task_experts_table, table)
    sweep = result["sweep"]
    plots.tau_sweep(
        [r["tau"] for r in sweep],
        {k: [r[f"n_{k}"] for r in sweep] for k in ("task", "multilingual", "overlap")},
        os.path.join(wd.analysis, "task_experts.png"),
        "Task vs multilingual experts by threshold τ",
    )
    print(table)
    logging.info(f"task experts -> {wd.task_experts}")
    return result


# Not chained: a side analysis, so changing the task corpus never invalidates select / train
# (its own fingerprint names everything it is made from: the model, the replay and the task corpus).
# Stages that read it (eval's steering, the report) include its config in theirs (pipeline._upto).
STAGE = Stage(
    "task_experts",
    ("model", "data", "stats", "task_experts", "analyze.reference"),
    run,
    validate=validate,
    reads=("stats",),
    outputs=lambda wd: (wd.task_experts, wd.task_experts_table),
    inputs=lambda config, wd: {
        **checkpoint_identity(config),
        "data": files_identity(config.data.path, wd),
        "task_data": files_identity(config.task_experts.data.path, wd),
    },
    kept=lambda wd: (os.path.join(wd.analysis, "task_experts.png"), wd.task_routing),
    chained=False,
)
