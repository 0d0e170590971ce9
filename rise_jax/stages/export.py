"""Stage ``export``: merge the trained experts (or adapters) into the base model -> ``export/hf``
(HF checkpoint); for the LoRA baseline (``train.method=lora``) also ``export/peft`` (the adapters
as a PEFT adapter directory, :mod:`rise_jax.checkpoints.peft_export`)."""

from __future__ import annotations

import os
import shutil

import ml_collections
from absl import logging

from rise_jax.api import export_model, load_model
from rise_jax.checkpoints.hf_export import TOKENIZER_FILES
from rise_jax.checkpoints.peft_export import export_peft_adapter
from rise_jax.io_utils import read_json_object
from rise_jax.stages.common import checkpoint_path, model_placement
from rise_jax.stages.registry import Stage
from rise_jax.training.artefacts import load_trained_experts
from rise_jax.training.partition import LORA_DENSE, merge_experts
from rise_jax.workdir import Workdir


def run(config: ml_collections.ConfigDict, wd: Workdir) -> str:
    path = checkpoint_path(config)
    model, params = load_model(
        path, dtype=config.model.dtype, dispatch=config.model.dispatch, **model_placement(config)
    )
    trained = load_trained_experts(wd.train)
    merged = merge_experts(params, trained)
    out = export_model(model, merged, wd.export_hf, source_dir=path, overwrite=True, progress=True)
    if LORA_DENSE in trained.weights:
        t = read_json_object(wd.train_config, "the train stage's config", ValueError)
        peft = export_peft_adapter(
            trained.weights[LORA_DENSE],
            model.cfg,
            wd.export_peft,
            t["lora_rank"],
            t["lora_alpha"],
            path,
            t.get("lora_dropout", 0.0),
        )
        logging.info(f"PEFT adapter -> {peft}")
    elif os.path.isdir(wd.export_peft):  # a previous LoRA run's adapters do not describe this export
        shutil.rmtree(wd.export_peft)
    tok_dir = config.model.get("tokenizer")
    if tok_dir:  # a separately given tokenizer travels with the merged model
        for f in TOKENIZER_FILES:
            if os.path.isfile(os.path.join(tok_dir, f)):
                shutil.copy2(os.path.join(tok_dir, f), os.path.join(out, f))
    logging.info(f"merged HF checkpoint -> {out}")
    return out


STAGE = Stage("export", (), run, reads=("train",), outputs=lambda wd: (wd.export_hf,))
