"""Stage ``train``: fine-tune only the selected experts on target-language text -> ``train/``."""

from __future__ import annotations

import dataclasses
import os
import shutil

import ml_collections

from rise_jax.api import load_model
from rise_jax.checkpoints.hf_load import read_hf_config
from rise_jax.data.languages import get_language
from rise_jax.data.sources import load_examples
from rise_jax.io_utils import ensure_writable_dir, write_json_atomic
from rise_jax.selection.artefact import load_selection, selection_path
from rise_jax.stages.common import checkpoint_path, model_mesh, model_sharding, tokenizer_for
from rise_jax.stages.stats import source_spec
from rise_jax.training.artefacts import save_trained_experts
from rise_jax.training.data import build_training_set
from rise_jax.training.loop import TrainOptions, train
from rise_jax.training.partition import (
    count_trainable,
    init_trainable,
    join_trainable,
    selection_experts,
    split_trainable,
)


def train_dir(workdir: str) -> str:
    return os.path.join(workdir, "train")


def reset(workdir: str) -> None:
    """Remove the resumable training state and the last run's outputs (not the selection)."""
    out = train_dir(workdir)
    for name in ("checkpoints", "experts", "tensorboard"):
        shutil.rmtree(os.path.join(out, name), ignore_errors=True)
    for name in ("metrics.jsonl", "summary.json"):
        if os.path.exists(os.path.join(out, name)):
            os.remove(os.path.join(out, name))


def train_options(t: ml_collections.ConfigDict, pad_id: int) -> TrainOptions:
    return TrainOptions(
        epochs=t.epochs,
        batch_size=t.batch_size,
        grad_accum=t.grad_accum,
        lr=t.lr,
        warmup_ratio=t.warmup_ratio,
        b1=t.b1,
        b2=t.b2,
        eps=t.eps,
        weight_decay=t.weight_decay,
        clip_norm=t.clip_norm,
        seed=t.seed,
        eval_every=t.eval_every,
        save_every=t.save_every,
        log_every=t.log_every,
        bucket_multiple=t.bucket_multiple,
        pad_id=pad_id,
        max_steps=t.max_steps,
        extra_lr=t.get("extra_lr", 0.0),
    )


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    t = config.train
    out = ensure_writable_dir(train_dir(workdir))
    path = checkpoint_path(config, workdir)
    cfg, _ = read_hf_config(path)
    sel_file = selection_path(workdir)
    selection = load_selection(sel_file, cfg)
    language = get_language(t.language or selection["target_language"]).code
    d = t.data
    spec = source_spec(d)
    examples = load_examples(spec, language)
    tokenizer = tokenizer_for(config, path)
    data = build_training_set(examples, tokenizer, d.max_length, d.template, t.completion_only, d.max_samples or None)
    train_set, held = data.split(t.held_out, t.seed)
    model, base = load_model(
        path,
        dtype=config.model.dtype,
        compute_dtype=t.compute_dtype or None,
        dispatch=config.model.dispatch,
        remat=t.remat,
        router_mode=t.router_mode,
        sharding=model_sharding(config),
    )
    patterns = [p.strip() for p in t.get("extra_trainable", "").split(",") if p.strip()]
    trainable = init_trainable(base, cfg, selection_experts(selection), patterns)
    mesh = model_mesh(config)
    if mesh is not None:  # trainable experts (and so their Adam moments) split by expert too
        import jax

        from rise_jax.sharding import trainable_shardings

        weights, slots = split_trainable(trainable)
        trainable = join_trainable(jax.device_put(weights, trainable_shardings(weights, mesh)), slots)
    n_params = count_trainable(split_trainable(trainable)[0])
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    print(
        f"training {len(selection['experts'])} experts ({n_params:,} parameters) on {language}: "
        f"{len(train_set.ids)} sequences ({train_set.num_tokens:,} target tokens, {data.truncated} truncated), "
        f"{len(held.ids)} held out"
    )
    result = train(model, base, trainable, train_set, held if held.ids else None, train_options(t, pad_id), out)
    summary = {k: v for k, v in result.items() if k != "trainable"}
    summary.update(
        language=language,
        trainable_parameters=n_params,
        sequences=len(train_set.ids),
        held_out_sequences=len(held.ids),
        target_tokens=train_set.num_tokens,
        truncated=data.truncated,
        source=dataclasses.asdict(spec),
    )
    if result["status"] == "completed":
        save_trained_experts(out, result["trainable"])
        shutil.copyfile(sel_file, os.path.join(out, "selection.json"))
        write_json_atomic(os.path.join(out, "train_config.json"), t.to_dict())
    write_json_atomic(os.path.join(out, "summary.json"), summary)
    print(
        f"train: {summary['status']}, last micro-batch loss {summary['final_loss']}, held-out loss {summary['held_out_loss']}"
    )
    return summary
