"""Stage ``train``: fine-tune only the selected experts on target-language text -> ``train/``."""

from __future__ import annotations

import dataclasses
import os
import shutil

import ml_collections
from absl import logging

from rise_jax.api import load_model
from rise_jax.checkpoints.hf_load import expert_reader, read_hf_config
from rise_jax.config_values import comma_list, positive_ints
from rise_jax.data.languages import get_language
from rise_jax.data.sources import SourceSpec, load_examples
from rise_jax.errors import SettingError
from rise_jax.io_utils import ensure_writable_dir, write_json_atomic
from rise_jax.models.transformer import TrainableExperts
from rise_jax.selection.artefact import load_selection
from rise_jax.stages.common import (
    checkpoint_path,
    expert_shards,
    files_identity,
    frozen_dtype,
    frozen_options,
    model_placement,
    tokenizer_for,
)
from rise_jax.stages.registry import Stage
from rise_jax.training.artefacts import EXPERTS, TRAIN_STATE_DIRS, TRAIN_STATE_FILES, save_trained_experts
from rise_jax.training.data import build_training_set
from rise_jax.training.loop import train
from rise_jax.training.options import TRAIN_METHODS, TrainOptions
from rise_jax.training.partition import (
    count_trainable,
    init_dense_lora,
    init_lora,
    init_trainable,
    selection_experts,
)
from rise_jax.workdir import Workdir


def train_state(wd: Workdir) -> tuple[str, ...]:
    """The resumable training state and the last run's outputs (not the selection it came from)."""
    own = tuple(os.path.join(wd.train, name) for name in TRAIN_STATE_DIRS + TRAIN_STATE_FILES)
    return own + (wd.train_summary, wd.train_config, wd.train_selection)


def validate(config: ml_collections.ConfigDict) -> None:
    SourceSpec.from_config(config.train.data)
    t = config.train
    positive_ints(config, "train.epochs", "train.batch_size", "train.grad_accum", "train.data.max_length")
    for name, value, ok, rule in (
        ("lr", t.lr, t.lr >= 0, ">= 0"),
        ("warmup_ratio", t.warmup_ratio, 0 <= t.warmup_ratio <= 1, "in [0, 1]"),
        ("held_out", t.held_out, 0 <= t.held_out < 1, "in [0, 1)"),
    ):
        if not ok:
            raise SettingError(f"config.train.{name} = {value!r}: must be {rule}")
    if t.get("method", "experts") not in TRAIN_METHODS:
        raise SettingError(f"config.train.method = {t.method!r}; choose one of {', '.join(TRAIN_METHODS)}")
    if t.get("method", "experts") in ("rise_lora", "lora"):
        if int(t.lora_rank) < 1:
            raise SettingError(f"config.train.lora_rank = {t.lora_rank!r}: must be >= 1")
        if t.get("extra_trainable", ""):
            raise SettingError(f"config.train.extra_trainable trains full weights; not with train.method={t.method}")
        dropout = float(t.get("lora_dropout", 0.0))
        if not 0.0 <= dropout < 1.0:
            raise SettingError(f"config.train.lora_dropout = {t.lora_dropout!r}: must be in [0, 1)")
        if dropout and (t.method == "rise_lora" or t.get("lora_all_experts", False)):
            raise SettingError(
                f"config.train.lora_dropout = {t.lora_dropout!r}: adapters inside experts train through "
                "the merged weights W + scale (B A)^T, which leave no per-token adapter input to drop "
                "(PEFT refuses lora_dropout on fused expert weights too); use 0, or method=lora without "
                "lora_all_experts"
            )
    if t.get("extra_trainable", "") and frozen_dtype(config):
        raise SettingError(
            f"config.train.extra_trainable = {t.extra_trainable!r} trains non-expert weights, which "
            f"config.model.frozen_dtype = {config.model.frozen_dtype!r} stores quantized: use one or the other"
        )


def run(config: ml_collections.ConfigDict, wd: Workdir) -> dict:
    t = config.train
    out = ensure_writable_dir(wd.train)
    path = checkpoint_path(config)
    cfg, _ = read_hf_config(path)
    selection = load_selection(wd.selection, cfg)
    language = get_language(t.language or selection["target_language"]).code
    d = t.data
    spec = SourceSpec.from_config(d)
    examples = load_examples(spec, language)
    tokenizer = tokenizer_for(config, path)
    data = build_training_set(examples, tokenizer, d.max_length, d.template, t.completion_only, d.max_samples or None)
    train_set, held = data.split(t.held_out, t.seed)
    placement = model_placement(config)
    model, base = load_model(
        path,
        dtype=config.model.dtype,
        compute_dtype=t.compute_dtype or None,
        dispatch=config.model.dispatch,
        remat=t.remat,
        router_mode=t.router_mode,
        lora_dropout=float(t.get("lora_dropout", 0.0)) if t.get("method", "experts") == "lora" else 0.0,
        **placement,
        **frozen_options(config),
    )
    method = t.get("method", "experts")
    shards = expert_shards(placement, cfg.num_experts)  # trainable rows grouped by owner device
    if method == "rise_lora":  # adapters inside the selected experts; the experts stay frozen
        trainable = init_lora(cfg, selection_experts(selection), t.lora_rank, t.lora_alpha, t.seed, shards)
    elif method == "lora":  # the LoRA baseline: adapters on path-rule dense kernels
        trainable = init_dense_lora(base, comma_list(t.lora_targets), t.lora_rank, t.lora_alpha, t.seed)
        if t.get("lora_all_experts", False):  # ... and inside every expert of every MoE layer
            every = [(layer, e) for layer in range(cfg.num_moe_layers) for e in range(cfg.num_experts)]
            experts = init_lora(cfg, every, t.lora_rank, t.lora_alpha, t.seed + 1, shards)
            trainable = TrainableExperts({**trainable.weights, **experts.weights}, experts.slots)
    else:
        originals = expert_reader(path, cfg) if frozen_dtype(config) else None  # train from the originals
        trainable = init_trainable(
            base, cfg, selection_experts(selection), comma_list(t.get("extra_trainable", "")), originals, shards
        )
    mesh = placement.get("mesh")
    if mesh is not None:  # trainable experts (and so their Adam moments) split by expert too
        import jax

        from rise_jax.sharding import trainable_shardings

        weights = jax.device_put(trainable.weights, trainable_shardings(trainable.weights, mesh))
        trainable = trainable._replace(weights=weights)
    n_params = count_trainable(trainable.weights, trainable.slots)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    logging.info(
        f"training {'LoRA adapters on ' + t.lora_targets if method == 'lora' else str(len(selection['experts'])) + ' experts'} "
        f"({method}, {n_params:,} parameters) on {language}: "
        f"{len(train_set.ids)} sequences ({train_set.num_tokens:,} target tokens, {data.truncated} truncated), "
        f"{len(held.ids)} held out"
    )
    opts = TrainOptions.from_config(t, pad_id=pad_id)
    result = train(model, base, trainable, train_set, held if held.ids else None, opts, out)
    summary = {k: v for k, v in result.items() if k != "trainable"}
    summary.update(
        language=language,
        method=method,
        trainable_parameters=n_params,
        sequences=len(train_set.ids),
        held_out_sequences=len(held.ids),
        target_tokens=train_set.num_tokens,
        truncated=data.truncated,
        source=dataclasses.asdict(spec),
    )
    if method != "experts":  # the adapters' settings, for the report and whoever reads the run
        summary["lora"] = {"rank": int(t.lora_rank), "alpha": float(t.lora_alpha)}
        if method == "lora":
            summary["lora"].update(
                targets=t.lora_targets,
                dropout=float(t.get("lora_dropout", 0.0)),
                all_experts=bool(t.get("lora_all_experts", False)),
            )
    if result["status"] == "completed":
        save_trained_experts(out, result["trainable"])
        shutil.copyfile(wd.selection, wd.train_selection)
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
    inputs=lambda config: {"train_data": files_identity(config.train.data.path)},
)
