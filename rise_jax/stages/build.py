"""The one way stages build the configured model: :func:`build_model` (``load_model`` with every
``config.model`` / ``config.mesh`` / ``config.train`` runtime setting resolved in one place by
:func:`model_settings`) and :func:`abstract_params` (shapes only, no weights).

``tests/test_architecture.py`` checks that no other stage module calls ``load_model`` or builds
``MoEModel`` / ``RuntimeOptions``; a setting's default lives in ``configs/base.py`` (or
``training/options.py``) only.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import ml_collections

from rise_jax.api import as_dtype, load_model
from rise_jax.distributed import is_writer
from rise_jax.models.config import ModelConfig
from rise_jax.models.quantized import check_backend, resolve_frozen_dtype, resolve_frozen_groups
from rise_jax.models.transformer import MoEModel, RuntimeOptions
from rise_jax.stages.common import checkpoint_path


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """The resolved runtime settings of the configured model (``load_model``'s keywords)."""

    dtype: str  # parameter dtype
    dispatch: str  # MoE dispatch ("auto" is resolved by RuntimeOptions.impl)
    frozen_dtype: str | None  # int8 / float8_e4m3fn storage of the frozen kernels; None: as loaded
    frozen_groups: tuple[str, ...]  # which frozen kernels are stored quantized
    compute_dtype: str | None = None  # activation dtype (None: the parameter dtype)
    remat: bool = False
    router_mode: str = "deterministic"


def model_settings(config: ml_collections.ConfigDict, training: bool = False) -> ModelSettings:
    """``config.model`` resolved and checked (messages name the field); with ``training`` also the
    training-time runtime settings of ``config.train`` (compute dtype, remat, router mode)."""
    m = config.model
    as_dtype(m.dtype)
    frozen = resolve_frozen_dtype(m.frozen_dtype, m.dtype)
    if frozen is not None:
        check_backend(frozen)
    settings = ModelSettings(m.dtype, m.dispatch, frozen, resolve_frozen_groups(m.frozen_groups))
    RuntimeOptions(dispatch=settings.dispatch)  # an unknown dispatch fails here, before any loading
    if training:
        t = config.train
        settings = dataclasses.replace(
            settings, compute_dtype=t.compute_dtype or None, remat=t.remat, router_mode=t.router_mode
        )
    return settings


def model_mesh(config: ml_collections.ConfigDict):
    """The ``(data, model)`` mesh of ``config.mesh`` when more than one device is visible, else None."""
    import jax

    from rise_jax.sharding import make_mesh

    if jax.device_count() == 1:
        return None
    return make_mesh(model=config.mesh.model, data=config.mesh.data)


def model_placement(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """``load_model`` keywords placing the model on :func:`model_mesh` (``{}`` on one device):
    parameters split as they are read and, unless ``config.mesh.expert_parallel`` is False, the
    MoE dispatch expert-parallel (:mod:`rise_jax.models.expert_parallel`)."""
    mesh = model_mesh(config)
    if mesh is None:
        return {}
    return {"mesh": mesh, "expert_parallel": bool(config.mesh.expert_parallel)}


class BuiltModel(NamedTuple):
    """What :func:`build_model` returns: the model and its params, the checkpoint directory they
    came from, the settings they were built with and their placement (``load_model`` keywords)."""

    model: MoEModel
    params: dict[str, Any]
    checkpoint: str
    settings: ModelSettings
    placement: dict[str, Any]

    @property
    def expert_shards(self) -> int:
        """Devices the experts are split over when the dispatch is expert-parallel (else 1): the
        trainable copies are then laid out in owner-grouped blocks (``partition.expert_slots``)."""
        from rise_jax.models.expert_parallel import MODEL, applies

        mesh = self.placement.get("mesh")
        if self.placement.get("expert_parallel") and applies(mesh, self.model.cfg.num_experts):
            return mesh.shape[MODEL]
        return 1


def build_model(
    config: ml_collections.ConfigDict,
    *,
    training: bool = False,
    quantized: bool = True,
    placed: bool = True,
    progress: bool = True,
) -> BuiltModel:
    """The configured model: ``config.model.checkpoint`` loaded with :func:`model_settings`
    (``training``: the train section's runtime settings too), its frozen weights stored as
    ``model.frozen_dtype`` unless ``quantized`` is False (export merges into the source's own
    weights), placed on the configured mesh unless ``placed`` is False (``inspect``)."""
    path = checkpoint_path(config)
    s = model_settings(config, training)
    if not quantized:
        s = dataclasses.replace(s, frozen_dtype=None)
    placement = model_placement(config) if placed else {}
    model, params = load_model(
        path,
        dtype=s.dtype,
        compute_dtype=s.compute_dtype,
        dispatch=s.dispatch,
        remat=s.remat,
        router_mode=s.router_mode,
        progress=progress and is_writer(),  # a multi-process job shows its progress once
        frozen_dtype=s.frozen_dtype,
        frozen_groups=s.frozen_groups,
        **placement,
    )
    return BuiltModel(model, params, path, s, placement)


def abstract_params(cfg: ModelConfig) -> Any:
    """The parameter tree of ``cfg``'s model as shapes (``jax.ShapeDtypeStruct``; nothing allocated)."""
    import jax
    import numpy as np

    model = MoEModel(cfg, RuntimeOptions())
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), np.zeros((1, 1), np.int32)))["params"]
