"""Stage ``export``: merge the trained experts into the base model -> ``export/hf`` (HF checkpoint)."""

from __future__ import annotations

import os
import shutil

import ml_collections
from absl import logging

from rise_jax.api import export_model, load_model
from rise_jax.checkpoints.hf_export import TOKENIZER_FILES
from rise_jax.stages.common import checkpoint_path, model_sharding
from rise_jax.stages.registry import Stage
from rise_jax.training.artefacts import apply_trained_experts
from rise_jax.workdir import Workdir


def run(config: ml_collections.ConfigDict, wd: Workdir) -> str:
    path = checkpoint_path(config)
    model, params = load_model(
        path, dtype=config.model.dtype, dispatch=config.model.dispatch, sharding=model_sharding(config)
    )
    merged = apply_trained_experts(params, wd.train)
    out = export_model(model, merged, wd.export_hf, source_dir=path, overwrite=True, progress=True)
    tok_dir = config.model.get("tokenizer")
    if tok_dir:  # a separately given tokenizer travels with the merged model
        for f in TOKENIZER_FILES:
            if os.path.isfile(os.path.join(tok_dir, f)):
                shutil.copy2(os.path.join(tok_dir, f), os.path.join(out, f))
    logging.info(f"merged HF checkpoint -> {out}")
    return out


STAGE = Stage("export", (), run, reads=("train",), outputs=lambda wd: (wd.export_hf,))
