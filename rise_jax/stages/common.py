"""Helpers shared by stages (stages never import each other; what two of them need lives here)."""

from __future__ import annotations

import ml_collections

from rise_jax.checkpoints.resolve import resolve_checkpoint
from rise_jax.errors import SettingError
from rise_jax.zones import DEFAULT_RATIOS, check_ratios


def checkpoint_path(config: ml_collections.ConfigDict) -> str:
    """The model checkpoint directory: ``config.model.checkpoint`` (directory or hub id; for the
    demo, the pretrained model that :func:`rise_jax.launch.run` builds in the workdir)."""
    return resolve_checkpoint(config.model.checkpoint)


def zone_ratios(select: ml_collections.ConfigDict) -> tuple[float, float]:
    """``config.select.zone_ratios`` (shallow, middle fractions), checked; default (0.375, 0.25)."""
    try:
        return check_ratios(tuple(select.get("zone_ratios", DEFAULT_RATIOS)))
    except (TypeError, ValueError) as err:
        raise SettingError(f"config.select.zone_ratios: {err}") from err


def tokenizer_for(config: ml_collections.ConfigDict, checkpoint_dir: str):
    """``config.model.tokenizer`` if set, else the checkpoint directory's tokenizer."""
    from rise_jax.tokenizer import load_tokenizer

    return load_tokenizer(config.model.get("tokenizer") or checkpoint_dir)


def model_mesh(config: ml_collections.ConfigDict):
    """The ``(data, model)`` mesh of ``config.mesh`` when more than one device is visible, else None."""
    import jax

    from rise_jax.sharding import make_mesh

    if jax.device_count() == 1:
        return None
    mesh_cfg = config.get("mesh") or {}
    return make_mesh(model=mesh_cfg.get("model", 0), data=mesh_cfg.get("data", 1))


def model_sharding(config: ml_collections.ConfigDict):
    """Parameter placement for :func:`rise_jax.load_model` on :func:`model_mesh` (None: one device)."""
    from rise_jax.sharding import param_sharding

    mesh = model_mesh(config)
    return None if mesh is None else param_sharding(mesh)
