"""Stage ``stats``: replay per-language text through the frozen model -> ``routing_stats/``."""

from __future__ import annotations

import dataclasses
import os

import ml_collections
from absl import logging

from rise_jax.config_values import booleans, comma_list, positive_ints
from rise_jax.data.batching import tokenize_examples
from rise_jax.data.languages import get_language, parse_languages
from rise_jax.data.sources import SourceSpec, blank_lines_skipped, check_source, load_examples
from rise_jax.routing.stats import replay
from rise_jax.stages.build import build_model
from rise_jax.stages.common import (
    check_model_inputs,
    checkpoint_identity,
    checkpoint_path,
    checkpoint_pending,
    files_identity,
    tokenizer_for,
)
from rise_jax.stages.registry import Stage
from rise_jax.workdir import Workdir

PARALLEL_SOURCES = ("flores", "ntrex")


def validate(config: ml_collections.ConfigDict) -> None:
    languages = parse_languages(config.data.languages, "config.data.languages", allow_empty=False)
    spec = SourceSpec.from_config(config.data)
    positive_ints(config, "stats.batch_size", "stats.bucket_multiple", "data.max_length")
    booleans(config, "stats.pack")
    check_model_inputs(config)
    parallel = spec.kind in PARALLEL_SOURCES or config.data.get("parallel", False)
    check_source(spec, languages, "config.data", parallel=parallel, pending=checkpoint_pending(config))


def run(config: ml_collections.ConfigDict, wd: Workdir) -> str:
    path = checkpoint_path(config)
    languages = parse_languages(config.data.languages)
    spec = SourceSpec.from_config(config.data)
    examples = {lang: load_examples(spec, lang) for lang in languages}  # every source error before compute
    tokenizer = tokenizer_for(config, path)
    max_samples = config.data.max_samples or None
    corpora = [
        tokenize_examples(lang, examples[lang], tokenizer, config.data.max_length, max_samples, config.data.template)
        for lang in languages
    ]
    built = build_model(config)
    model, params, settings = built.model, built.params, built.settings
    parallel = spec.kind in PARALLEL_SOURCES or config.data.get("parallel", False)
    divergence = config.stats.divergence and parallel
    stats = replay(
        model,
        params,
        corpora,
        batch_size=config.stats.batch_size,
        bucket_multiple=config.stats.bucket_multiple,
        pack=config.stats.pack,
        seq_probs_languages=languages if divergence else (),
        pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
        model_info={
            "checkpoint": os.path.abspath(path),
            "dtype": config.model.dtype,
            "frozen_dtype": settings.frozen_dtype or config.model.dtype,
            "frozen_groups": list(settings.frozen_groups) if settings.frozen_dtype else [],
        },
    )
    for code, written in zip(languages, comma_list(config.data.languages), strict=True):
        # Keyed by the canonical code; the code the user wrote and the language's name kept with it.
        stats.info[code].update(as_written=written, name=get_language(written).name)
        blank = blank_lines_skipped(spec, code)
        if blank is not None:
            stats.info[code]["blank_lines_skipped"] = blank
    stats.extra = {
        "source": dataclasses.asdict(spec),
        "max_length": config.data.max_length,
        "max_samples": config.data.max_samples,
        "template": config.data.template,
    }
    out = stats.save(wd.stats)
    print(f"{'language':>8s} {'sequences':>9s} {'tokens':>9s} {'truncated':>9s}")
    for lang in languages:
        i = stats.info[lang]
        blank = f"  ({i['blank_lines_skipped']} blank lines skipped)" if i.get("blank_lines_skipped") else ""
        print(f"{lang:>8s} {i['sequences']:9d} {i['tokens']:9d} {i['truncated']:9d}{blank}")
    logging.info(f"routing statistics -> {out}")
    return out


# (mesh: placement only, and stats.pack: padding-free rows, results are equal; pipeline._IGNORED)
STAGE = Stage(
    "stats",
    ("model", "data", "stats"),
    run,
    validate=validate,
    outputs=lambda wd: (wd.stats_arrays, wd.stats_summary),
    inputs=lambda config, wd: {**checkpoint_identity(config), "data": files_identity(config.data.path, wd)},
)
