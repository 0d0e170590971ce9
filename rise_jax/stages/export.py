"""Stage ``export``: merge the trained experts (or adapters) into the base model -> ``export/hf``
(HF checkpoint); for the LoRA baseline (``train.method=lora``) also ``export/peft`` (the adapters
as a PEFT adapter directory, :mod:`rise_jax.checkpoints.peft_export`)."""

from __future__ import annotations

import os
import shutil

import ml_collections
from absl import logging

from rise_jax.api import export_model
from rise_jax.checkpoints.hf_export import TOKENIZER_FILES
from rise_jax.distributed import is_writer
from rise_jax.io_utils import read_json_object
from rise_jax.stages.build import build_model
from rise_jax.stages.common import check_model_inputs
from rise_jax.stages.registry import Stage
from rise_jax.training.artefacts import load_trained_experts
from rise_jax.workdir import Workdir


def run(config: ml_collections.ConfigDict, wd: Workdir) -> str:
    built = build_model(config, quantized=False)  # merged into the source checkpoint's own weights
    model, path = built.model, built.checkpoint
    trained = load_trained_experts(wd.train)
    out = export_model(model, trained.merge(built.params), wd.export_hf, source_dir=path, overwrite=True, progress=True)
    if not is_writer():  # a multi-process job: the tensors were gathered in step, process 0 wrote them
        return out
    extras = {"peft": wd.export_peft}  # what a method may write beside the merged checkpoint
    settings = {}  # the train config the weights trained with (adapter settings)
    if os.path.isfile(wd.train_config):
        settings = read_json_object(wd.train_config, "the train stage's config", ValueError)
    written = trained.write_exports(model.cfg, extras, settings, path)
    for kind, where in extras.items():
        if kind in written:
            logging.info(f"{kind} export -> {where}")
        elif os.path.isdir(where):  # a previous run's extras do not describe this export
            shutil.rmtree(where)
    tok_dir = config.model.get("tokenizer")
    if tok_dir:  # a separately given tokenizer travels with the merged model
        for f in TOKENIZER_FILES:
            if os.path.isfile(os.path.join(tok_dir, f)):
                shutil.copy2(os.path.join(tok_dir, f), os.path.join(out, f))
    logging.info(f"merged HF checkpoint -> {out}")
    return out


def validate(config: ml_collections.ConfigDict) -> None:
    check_model_inputs(config, tokenizer=False)
    tok_dir = config.model.get("tokenizer")
    if tok_dir and not os.path.isdir(tok_dir):
        raise ValueError(f"config.model.tokenizer = {tok_dir!r}: no such directory (its files travel with the export)")


STAGE = Stage(
    "export",
    (),
    run,
    validate=validate,
    reads=("train",),
    outputs=lambda wd: (wd.export_hf,),
    kept=lambda wd: (wd.export_peft,),  # train.method=lora: the adapters go with the merged export
)
