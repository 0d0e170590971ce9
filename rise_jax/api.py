"""The Python API: load a checkpoint, run the model, export it.

>>> model, params = rise_jax.load_model("/ckpt/Qwen3-30B-A3B", dtype="bfloat16")
>>> out = rise_jax.forward(model, params, input_ids, attention_mask, return_routing=True)
>>> out.logits            # [B, T, V]
>>> out.routing.topk_indices  # [L_moe, B, T, k]   (see rise_jax.models.routers.RoutingInfo)
>>> rise_jax.export_model(model, params, "/out/merged", source_dir="/ckpt/Qwen3-30B-A3B")
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rise_jax.checkpoints import export_hf_checkpoint, load_hf_checkpoint
from rise_jax.checkpoints.hf_load import ShardingFn
from rise_jax.errors import InputError
from rise_jax.models.quantized import DEFAULT_GROUPS
from rise_jax.models.routers import RouterEdit
from rise_jax.models.transformer import ModelOutput, MoEModel, RuntimeOptions

_DTYPES = {"float32": jnp.float32, "fp32": jnp.float32, "bfloat16": jnp.bfloat16, "bf16": jnp.bfloat16}


def as_dtype(dtype: Any) -> Any:
    """``"bfloat16"``/``"bf16"``/``"float32"``/``"fp32"`` or a jnp dtype -> jnp dtype."""
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}")
        return _DTYPES[dtype]
    return dtype


def load_model(
    path: str,
    *,
    dtype: Any = "bfloat16",
    compute_dtype: Any = None,
    dispatch: str = "auto",
    remat: bool = False,
    router_mode: str = "deterministic",
    sharding: ShardingFn | None = None,
    progress: bool = True,
    frozen_dtype: str | None = None,
    frozen_groups: tuple[str, ...] = DEFAULT_GROUPS,
    mesh: Any = None,
    expert_parallel: bool = True,
) -> tuple[MoEModel, dict[str, Any]]:
    """Load an HF checkpoint directory -> ``(model, params)``.

    ``dtype`` is the parameter dtype; ``compute_dtype`` the activation dtype (default: ``dtype``).
    Router logits and top-k are fp32 regardless. ``frozen_dtype`` (``int8`` or ``float8_e4m3fn``)
    stores the frozen kernels of ``frozen_groups`` (experts, mlp, lm_head; attention on request)
    quantized per output channel (:mod:`rise_jax.models.quantized`), quantized while reading,
    dequantised to ``dtype`` where used.

    ``mesh`` (:func:`rise_jax.sharding.make_mesh`) places the parameters as they are read
    (:func:`rise_jax.sharding.param_sharding`; experts split whole over its ``model`` axis) and,
    with ``expert_parallel``, runs every MoE dispatch expert-parallel: each device computes its
    own experts and only tokens' partial sums cross devices (:mod:`rise_jax.models.expert_parallel`).
    ``sharding`` alone places the parameters and leaves the partitioning to XLA.
    """
    if mesh is not None and sharding is None:
        from rise_jax.sharding import param_sharding

        sharding = param_sharding(mesh)
    pdt = as_dtype(dtype)
    ckpt = load_hf_checkpoint(
        path, pdt, sharding=sharding, progress=progress, frozen_dtype=frozen_dtype or None, frozen_groups=frozen_groups
    )
    opts = RuntimeOptions(
        dtype=as_dtype(compute_dtype) if compute_dtype is not None else pdt,
        param_dtype=pdt,
        dispatch=dispatch,
        remat=remat,
        router_mode=router_mode,
        expert_mesh=mesh if expert_parallel else None,
    )
    return MoEModel(ckpt.config, opts), ckpt.params


def check_token_ids(input_ids: Any, vocab_size: int) -> None:
    """Refuse token ids outside ``[0, vocab_size)`` (an embedding lookup past the table returns NaN
    or another row, silently). Checked on concrete arrays only: a traced value (inside the
    caller's ``jit``) or one spread over other processes passes unchecked."""
    if isinstance(input_ids, jax.core.Tracer):
        return
    if isinstance(input_ids, jax.Array) and not input_ids.is_fully_addressable:
        return
    ids = np.asarray(input_ids)
    if ids.size == 0:
        return
    if not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"input_ids: token ids must be integers, got dtype {ids.dtype}")
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        where = tuple(int(i) for i in np.argwhere(ids == bad)[0])
        raise InputError(
            f"input_ids: token id {bad} at position {where} is outside the model's vocabulary [0, {vocab_size}) "
            "(a tokenizer with more ids than the checkpoint's vocab_size?)"
        )


def forward(
    model: MoEModel,
    params: dict[str, Any],
    input_ids: jax.Array,
    attention_mask: jax.Array | None = None,
    positions: jax.Array | None = None,
    return_routing: bool = False,
    skip_lm_head: bool = False,
    router_edit: RouterEdit | None = None,
    inference: bool = False,
) -> ModelOutput:
    """Jit-compiled forward pass. With ``return_routing`` the output carries a
    :class:`~rise_jax.models.routers.RoutingInfo`; without it no routing array is materialised.
    ``router_edit`` prunes or steers experts (:mod:`rise_jax.evaluation.interventions`). Token
    ids outside the model's vocabulary are an :class:`~rise_jax.errors.InputError` (checked on
    the host before the call; not inside a caller's ``jit``). ``inference=True`` is faster (the
    experts are read in place, :class:`~rise_jax.models.transformer.MoEModel`) for a call that is
    never differentiated: through it the expert weights get no gradient."""
    check_token_ids(input_ids, model.cfg.vocab_size)
    return _forward(
        model, params, input_ids, attention_mask, positions, return_routing, skip_lm_head, router_edit, inference
    )


@functools.partial(jax.jit, static_argnames=("model", "return_routing", "skip_lm_head", "inference"))
def _forward(
    model: MoEModel,
    params: dict[str, Any],
    input_ids: jax.Array,
    attention_mask: jax.Array | None,
    positions: jax.Array | None,
    return_routing: bool,
    skip_lm_head: bool,
    router_edit: RouterEdit | None,
    inference: bool,
) -> ModelOutput:
    return model.apply(
        {"params": params},
        input_ids,
        attention_mask,
        positions,
        return_routing=return_routing,
        skip_lm_head=skip_lm_head,
        router_edit=router_edit,
        inference=inference,
    )


def export_model(
    model: MoEModel,
    params: dict[str, Any],
    out_dir: str,
    *,
    source_dir: str | None = None,
    dtype: Any = None,
    overwrite: bool = False,
    max_shard_bytes: int = 5 * 1024**3,
    progress: bool = True,
) -> str:
    """Write ``params`` as an HF checkpoint directory (per-expert hub layout) that transformers loads.

    With ``source_dir`` its ``config.json`` is written back (dtype updated), its tokenizer files
    are copied and the tensors loading skipped (a multi-token-prediction head, a vision tower:
    the family's ``HFNames.skipped``) are carried over unchanged; otherwise a config is generated
    from the model's :class:`ModelConfig`.
    """
    hf_config = None
    if source_dir is not None:
        with open(os.path.join(source_dir, "config.json"), encoding="utf-8") as fh:
            hf_config = json.load(fh)
    return export_hf_checkpoint(
        params,
        model.cfg,
        out_dir,
        hf_config=hf_config,
        dtype=as_dtype(dtype) if dtype is not None else None,
        tokenizer_dir=source_dir,
        source_dir=source_dir,
        overwrite=overwrite,
        max_shard_bytes=max_shard_bytes,
        progress=progress,
    )
