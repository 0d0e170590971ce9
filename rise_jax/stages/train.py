"""Stage ``train``: fine-tune what ``train.method`` trains (the selected experts, adapters,
routers) on target-language text, with the routing-alignment term when ``train.align_weight`` > 0
-> ``train/``."""

from __future__ import annotations

import dataclasses
import os

import ml_collections
from absl import logging

from rise_jax.checkpoints.hf_load import read_hf_config
from rise_jax.config_values import booleans, positive_ints
from rise_jax.data.languages import get_language, language_field
from rise_jax.data.sources import SourceSpec, check_source, load_examples
from rise_jax.distributed import multi_process, to_host
from rise_jax.errors import SettingError
from rise_jax.io_utils import copy_atomic, ensure_writable_dir, write_json_atomic
from rise_jax.selection.artefact import load_selection
from rise_jax.stages.build import build_model, model_settings
from rise_jax.stages.common import (
    check_model_inputs,
    checkpoint_path,
    checkpoint_pending,
    files_identity,
    tokenizer_for,
)
from rise_jax.stages.registry import Stage
from rise_jax.training.alignment import Alignment, pair_examples, resolve_layers
from rise_jax.training.artefacts import EXPERTS, TRAIN_STATE_DIRS, TRAIN_STATE_FILES, save_trained_experts
from rise_jax.training.data import build_training_set
from rise_jax.training.loop import train
from rise_jax.training.methods import MethodSetup, get_method
from rise_jax.training.options import TrainOptions
from rise_jax.training.partition import selection_experts
from rise_jax.workdir import Workdir


def train_state(wd: Workdir) -> tuple[str, ...]:
    """The resumable training state and the last run's outputs (not the selection it came from)."""
    own = tuple(os.path.join(wd.train, name) for name in TRAIN_STATE_DIRS + TRAIN_STATE_FILES)
    return own + (wd.train_summary, wd.train_config, wd.train_selection)


def validate(config: ml_collections.ConfigDict) -> None:
    spec = SourceSpec.from_config(config.train.data)
    t = config.train
    if t.language:
        language = language_field(t.language, "config.train.language")
    else:  # the selection's target (config.select.target made it)
        language = language_field(config.select.target, "config.select.target")
    positive_ints(config, "train.epochs", "train.batch_size", "train.grad_accum", "train.data.max_length")
    booleans(config, "train.pack")
    for name, value, ok, rule in (
        ("lr", t.lr, t.lr >= 0, ">= 0"),
        ("warmup_ratio", t.warmup_ratio, 0 <= t.warmup_ratio <= 1, "in [0, 1]"),
        ("held_out", t.held_out, 0 <= t.held_out < 1, "in [0, 1)"),
    ):
        if not ok:
            raise SettingError(f"config.train.{name} = {value!r}: must be {rule}")
    opts = TrainOptions.from_config(t)
    get_method(opts.method).validate(opts, model_settings(config).frozen_dtype)
    if opts.align_weight < 0:
        raise SettingError(f"config.train.align_weight = {opts.align_weight!r}: must be >= 0")
    if opts.align_weight > 0 and opts.pack:
        raise SettingError(
            "config.train.align_weight > 0 with config.train.pack = True: the routing-alignment term pairs "
            "each row with its one translation, so packed rows are not supported; set train.pack = False"
        )
    Alignment(1.0, opts.align_divergence, (0,))  # the divergence's name
    languages = [language]
    if opts.align_weight > 0:
        languages.append(language_field(opts.align_reference, "config.train.align_reference"))
    check_model_inputs(config)
    check_source(spec, languages, "config.train.data", pending=checkpoint_pending(config))


def alignment_settings(config: ml_collections.ConfigDict, cfg) -> tuple[Alignment | None, tuple[int, ...]]:
    """(the alignment term or None, the MoE layers whose routers train) from ``config.train``:
    ``align_layers`` empty = the middle zone of ``config.select.zone_ratios``; ``router_layers``
    empty = the alignment layers."""
    t, ratios = config.train, tuple(config.select.zone_ratios)
    trains_routers = get_method(t.method).trains_routers
    layers: tuple[int, ...] = ()
    # The alignment layers are resolved only where they are used (a middle zone may be empty on a
    # small model that neither aligns nor trains routers).
    if t.align_weight > 0 or (trains_routers and not str(t.router_layers).strip()):
        layers = resolve_layers(t.align_layers, cfg.num_moe_layers, ratios)
    routers: tuple[int, ...] = layers if trains_routers else ()
    if trains_routers and str(t.router_layers).strip():
        routers = resolve_layers(t.router_layers, cfg.num_moe_layers, ratios, "config.train.router_layers")
    align = Alignment(float(t.align_weight), t.align_divergence, layers) if t.align_weight > 0 else None
    return align, routers


def run(config: ml_collections.ConfigDict, wd: Workdir) -> dict:
    t = config.train
    out = ensure_writable_dir(wd.train)
    opts = TrainOptions.from_config(t)
    path = checkpoint_path(config)
    cfg, _ = read_hf_config(path)
    selection = load_selection(wd.selection, cfg)
    language = get_language(t.language or selection["target_language"]).code
    d = t.data
    spec = SourceSpec.from_config(d)
    examples = load_examples(spec, language)
    align, router_layers = alignment_settings(config, cfg)
    references = None
    if align is not None:  # each sequence with its parallel reference-language text
        reference = get_language(opts.align_reference).code
        examples, references = pair_examples(examples, load_examples(spec, reference), language, reference)
    tokenizer = tokenizer_for(config, path)
    data = build_training_set(
        examples, tokenizer, d.max_length, d.template, t.completion_only, d.max_samples or None, references
    )
    train_set, held = data.split(t.held_out, t.seed)
    built = build_model(config, training=True)
    model, base = built.model, built.params
    setup = MethodSetup(
        base,
        cfg,
        selection_experts(selection),
        path,
        built.settings.frozen_dtype is not None,  # quantized frozen experts: train from the originals
        built.expert_shards,  # trainable rows grouped by owner device
        router_layers,
    )
    trainable = get_method(opts.method).create(setup, opts)
    mesh = built.placement.get("mesh")
    if mesh is not None:  # trainable experts (and so their Adam moments) split by expert too
        import jax

        from rise_jax.sharding import trainable_shardings

        weights = trainable.weights
        if multi_process():  # made on this process's devices: from the host onto the global mesh
            weights = to_host(weights)
        weights = jax.device_put(weights, trainable_shardings(weights, mesh))
        trainable = trainable.replace(weights=weights)
    n_params = trainable.parameter_count()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    logging.info(
        f"training {trainable.describe(opts)} "
        f"({opts.method}, {n_params:,} parameters) on {language}: "
        f"{len(train_set.ids)} sequences ({train_set.num_tokens:,} target tokens, {data.truncated} truncated), "
        f"{len(held.ids)} held out"
    )
    opts = dataclasses.replace(opts, pad_id=pad_id)
    if align is not None:
        logging.info(
            f"routing alignment: + {align.weight} x {align.divergence} to {opts.align_reference} at MoE layers "
            f"{list(align.layers)} ({len(train_set.ids)} parallel pairs)"
        )
    result = train(model, base, trainable, train_set, held if held.ids else None, opts, out, align)
    summary = {k: v for k, v in result.items() if k != "trainable"}
    summary.update(
        language=language,
        method=opts.method,
        trainable_parameters=n_params,
        sequences=len(train_set.ids),
        held_out_sequences=len(held.ids),
        target_tokens=train_set.num_tokens,
        truncated=data.truncated,
        source=dataclasses.asdict(spec),
    )
    if align is not None:
        summary["alignment"] = {
            "weight": align.weight,
            "divergence": align.divergence,
            "layers": list(align.layers),
            "reference": opts.align_reference,
        }
    summary.update(trainable.summary(opts))  # the method's settings, for the report and whoever reads the run
    if result["status"] == "completed":
        save_trained_experts(out, result["trainable"])
        copy_atomic(wd.selection, wd.train_selection)
        write_json_atomic(wd.train_config, t.to_dict())
    write_json_atomic(wd.train_summary, summary)
    logging.info(
        f"train: {summary['status']}, last micro-batch loss {summary['final_loss']}, held-out loss {summary['held_out_loss']}"
    )
    return summary


STAGE = Stage(
    "train",
    ("train",),
    run,
    validate=validate,
    reads=("select",),
    outputs=lambda wd: (wd.train_summary, wd.train_selection, os.path.join(wd.train, EXPERTS)),
    state=train_state,
    inputs=lambda config, wd: {"train_data": files_identity(config.train.data.path, wd)},
)
