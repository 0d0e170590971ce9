"""Stage ``stats``: replay per-language text through the frozen model -> ``routing_stats/``."""

from __future__ import annotations

import dataclasses
import os

import ml_collections

from rise_jax.api import load_model
from rise_jax.data.batching import tokenize_examples
from rise_jax.data.languages import parse_languages
from rise_jax.data.sources import SourceSpec, load_examples
from rise_jax.routing.stats import replay
from rise_jax.stages.common import checkpoint_path, model_sharding, tokenizer_for

PARALLEL_SOURCES = ("flores", "ntrex")


def source_spec(data: ml_collections.ConfigDict) -> SourceSpec:
    return SourceSpec(
        kind=data.source,
        path=data.path,
        split=data.split,
        include_answer=data.get("include_answer", False),
        hf_path=data.hf_path,
        hf_name=data.hf_name,
        hf_data_files=data.hf_data_files,
        text_fields=data.text_fields,
        hf_filter=data.hf_filter,
        answer_field=data.get("answer_field", ""),
    )


def stats_dir(workdir: str) -> str:
    return os.path.join(workdir, "routing_stats")


def run(config: ml_collections.ConfigDict, workdir: str) -> str:
    path = checkpoint_path(config, workdir)
    languages = parse_languages(config.data.languages)
    spec = source_spec(config.data)
    examples = {lang: load_examples(spec, lang) for lang in languages}  # every source error before compute
    tokenizer = tokenizer_for(config, path)
    max_samples = config.data.max_samples or None
    corpora = [
        tokenize_examples(lang, examples[lang], tokenizer, config.data.max_length, max_samples, config.data.template)
        for lang in languages
    ]
    model, params = load_model(
        path, dtype=config.model.dtype, dispatch=config.model.dispatch, sharding=model_sharding(config)
    )
    parallel = spec.kind in PARALLEL_SOURCES or config.data.get("parallel", False)
    divergence = config.stats.divergence and parallel
    stats = replay(
        model,
        params,
        corpora,
        batch_size=config.stats.batch_size,
        bucket_multiple=config.stats.bucket_multiple,
        seq_probs_languages=languages if divergence else (),
        pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
        model_info={"checkpoint": os.path.abspath(path)},
    )
    stats.extra = {
        "source": dataclasses.asdict(spec),
        "max_length": config.data.max_length,
        "max_samples": config.data.max_samples,
        "template": config.data.template,
    }
    out = stats.save(stats_dir(workdir))
    print(f"{'language':>8s} {'sequences':>9s} {'tokens':>9s} {'truncated':>9s}")
    for lang in languages:
        i = stats.info[lang]
        print(f"{lang:>8s} {i['sequences']:9d} {i['tokens']:9d} {i['truncated']:9d}")
    print(f"routing statistics -> {out}")
    return out
