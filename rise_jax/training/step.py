"""Optimiser and the jit-compiled train / held-out steps over the trainable experts only (the LM
loss itself is :mod:`rise_jax.models.lm_loss`; the routing-alignment term, when configured,
:mod:`rise_jax.training.alignment`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rise_jax.models.layers import segment_positions
from rise_jax.models.lm_loss import lm_loss_sums
from rise_jax.models.transformer import MoEModel
from rise_jax.training.alignment import Alignment
from rise_jax.training.methods.base import TrainingMethod


def make_optimizer(
    lr: float,
    total_steps: int,
    warmup_ratio: float = 0.05,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    clip_norm: float = 1.0,
    extra_lr: float | None = None,
    labels: Callable[[Any], Any] | None = None,
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(optimiser, learning-rate schedule): clip the global norm of the trainable gradients, then
    AdamW with linear warmup over ``ceil(ratio · total)`` optimiser steps and linear decay to 0.
    (Paper defaults: lr 2e-5, betas (0.9, 0.999), eps 1e-8, weight decay 0, warmup 0.05, clip 1.0.)
    With ``extra_lr`` and ``labels`` (weights -> ``"experts"`` / ``"extra"`` per leaf, from the
    training method) the ``"extra"`` leaves get their own AdamW (peak ``extra_lr``) through
    ``optax.partition``; the others keep theirs."""
    total_steps = max(int(total_steps), 1)
    warmup = min(math.ceil(warmup_ratio * total_steps), total_steps)
    schedule = optax.join_schedules(
        [optax.linear_schedule(0.0, lr, max(warmup, 1)), optax.linear_schedule(lr, 0.0, max(total_steps - warmup, 1))],
        [warmup],
    )
    parts = [optax.clip_by_global_norm(clip_norm)] if clip_norm and clip_norm > 0 else []
    adamw = optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
    if extra_lr is None or labels is None:
        parts.append(adamw)
    else:  # the "extra" groups get their own AdamW, on the same schedule shape
        extra = optax.adamw(
            lambda step: schedule(step) * (extra_lr / lr), b1=b1, b2=b2, eps=eps, weight_decay=weight_decay
        )
        parts.append(optax.partition({"experts": adamw, "extra": extra}, labels))
    return optax.chain(*parts), schedule


def make_steps(model: MoEModel, tx: optax.GradientTransformation, align: Alignment | None = None):
    """(grad_step, apply_step, eval_step), jit-compiled.

    ``trainable`` is a training method (:mod:`rise_jax.training.methods`): the steps differentiate
    its ``weights`` only. ``mask`` is an attention mask or, for packed rows, segment ids (the packing
    convention; positions restart per segment) with ``loss_mask`` 0 on each segment's first token
    (:class:`~rise_jax.training.data.MicroBatches`). ``grad_step(trainable, base_params, ids, mask, loss_mask, rng)`` ->
    (mean loss, target count, grads of ``trainable.weights``); ``apply_step(weights, opt_state,
    grad_sum, n)`` applies the mean of ``n`` accumulated micro-batch gradients and consumes
    (donates) ``opt_state`` and ``grad_sum``: do not reuse them after the call. Base params are an
    input of every step and an output of none: the optimiser never sees them.
    ``eval_step(trainable, base, ids, mask, loss_mask)`` -> (NLL sum, target count).

    With ``align``, ``grad_step(..., rng, ref)`` also takes ``ref`` = (ids, mask) of each row's
    parallel reference-language text and its loss is the objective ``NLL + weight · A``
    (:mod:`rise_jax.training.alignment`); without ``ref`` it is the NLL alone. ``eval_step``
    stays the NLL (held-out losses compare across objectives).
    """

    def apply(trainable: TrainingMethod, base, ids, mask, **kw):
        params = trainable.model_params(base)  # e.g. path-rule groups overlaid, dense adapters placed
        positions = segment_positions(mask)  # restart at every packed sequence (0..n-1 unpacked)
        return model.apply({"params": params}, ids, mask, positions, trainable_experts=trainable, **kw)

    def nll_sums(weights, trainable, base, ids, mask, loss_mask, rng):
        out = apply(trainable.replace(weights=weights), base, ids, mask, rngs=step_rngs(rng))
        return lm_loss_sums(out.logits, ids, loss_mask)

    def loss_fn(*args):
        total, count = nll_sums(*args)
        return total / jnp.maximum(count, 1.0), count

    def aligned_loss(weights, trainable, base, ids, mask, loss_mask, rng, ref):
        """``NLL + weight · A``: the reference side runs first, its distributions held constant."""
        ref_ids, ref_mask = ref
        ref_out = apply(trainable, base, ref_ids, ref_mask, rngs=step_rngs(jax.random.fold_in(rng, 2)),
                        return_routing=True, skip_lm_head=True)  # fmt: skip
        reference = jax.lax.stop_gradient(align.distributions(ref_out.routing.router_logits, ref_mask))
        out = apply(trainable.replace(weights=weights), base, ids, mask, rngs=step_rngs(rng), return_routing=True)
        total, count = lm_loss_sums(out.logits, ids, loss_mask)
        term = align.term(out.routing.router_logits, mask, reference, ref_mask)
        return total / jnp.maximum(count, 1.0) + align.weight * term, count

    def grad_step(trainable, base, ids, mask, loss_mask, rng, ref=None):
        if ref is not None and align is not None:
            if _data_groups(model, ids) > 1:
                raise ValueError(
                    "routing alignment (config.train.align_weight > 0) with the batch split over the mesh's "
                    "data axis is not supported: use mesh.data = 1"
                )
            (loss, count), grads = jax.value_and_grad(aligned_loss, has_aux=True)(
                trainable.weights, trainable, base, ids, mask, loss_mask, rng, ref
            )
            return loss, count, grads
        if _data_groups(model, ids) > 1:
            return _data_parallel_grad_step(trainable, base, ids, mask, loss_mask, rng)
        (loss, count), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            trainable.weights, trainable, base, ids, mask, loss_mask, rng
        )
        return loss, count, grads

    def _data_parallel_grad_step(trainable, base, ids, mask, loss_mask, rng):
        """Expert-parallel training with the batch split over ``data`` groups: each group takes the
        gradient of its NLL sum, and one psum over ``data`` after the whole backward pass adds the
        groups' gradients. (Left to shard_map's transpose inside each layer, that sum would move the
        whole trainable block once per layer; see rise_jax/models/expert_parallel.py.)"""
        from jax.sharding import PartitionSpec as P

        from rise_jax.models.expert_parallel import DATA

        def local(trainable, base, ids, mask, loss_mask, rng):
            rng = jax.random.fold_in(rng, jax.lax.axis_index(DATA))  # router noise per data group
            (total, count), grads = jax.value_and_grad(nll_sums, has_aux=True)(
                trainable.weights, trainable, base, ids, mask, loss_mask, rng
            )
            total, count, grads = jax.lax.psum((total, count, grads), DATA)
            n = jnp.maximum(count, 1.0)
            return total / n, count, jax.tree_util.tree_map(lambda g: g / n, grads)

        rows = P(DATA)
        step = jax.shard_map(
            local,
            mesh=model.opts.expert_mesh,
            in_specs=(P(), P(), rows, rows, rows, P()),
            out_specs=(P(), P(), P()),
            axis_names={DATA},
            check_vma=False,
        )
        return step(trainable, base, ids, mask, loss_mask, rng)

    def apply_step(weights, opt_state, grad_sum, n):
        grads = jax.tree_util.tree_map(lambda g: g / n, grad_sum)
        updates, opt_state = tx.update(grads, opt_state, weights)
        return optax.apply_updates(weights, updates), opt_state, optax.global_norm(grads)

    def eval_step(trainable, base, ids, mask, loss_mask):
        out = apply(trainable, base, ids, mask)
        return lm_loss_sums(out.logits, ids, loss_mask)

    # apply_step donates the optimiser state and the gradient sum: their buffers become the new
    # state and weights, so an update holds no second copy of the Adam moments (on a Qwen3-30B-A3B
    # K = 128 step that copy, 4.5 + 2.25 GiB, was the peak; bench/RESULTS.md). The weights are not
    # donated: the caller's initial trainable tree may alias arrays it still uses.
    jit_grad, jit_eval = jax.jit(grad_step), jax.jit(eval_step)
    mesh = model.opts.expert_mesh
    if mesh is None:
        return jit_grad, jax.jit(apply_step, donate_argnums=(1, 2)), jit_eval

    def checked(step):
        def run(trainable, *args):
            check_owner_layout(model, trainable)
            return step(trainable, *args)

        run.lower = step.lower  # compile / inspect (HLO, memory) as with the jitted step itself
        return run

    return checked(jit_grad), jax.jit(apply_step, donate_argnums=(1, 2)), checked(jit_eval)


def step_rngs(rng: jax.Array) -> dict[str, jax.Array]:
    """The rng streams of a training step's forward pass, from its one ``rng``: ``router``
    (PhiMoE's stochastic training router) and ``dropout`` (dense LoRA adapters' input dropout)."""
    return {"router": rng, "dropout": jax.random.fold_in(rng, 1)}


def check_owner_layout(model: MoEModel, trainable: TrainingMethod) -> None:
    """Under expert parallelism each device reads only its own block of trainable rows, so the
    rows must be grouped by owner device (a method's ``init`` with ``expert_shards`` = the mesh's
    model size); anything else would silently read other experts' copies, so it is refused here
    (host-side, on the small slot tables)."""
    from rise_jax.models.expert_parallel import MODEL, applies

    mesh, e = model.opts.expert_mesh, model.cfg.num_experts
    if not applies(mesh, e):
        return
    m = mesh.shape[MODEL]
    for run, (table, rows) in trainable.expert_tables().items():
        li, ei = np.nonzero(table >= 0)
        owner = ei // (e // m)
        block = rows // m
        row = table[li, ei]
        if rows % m or np.any((row < owner * block) | (row >= (owner + 1) * block)):
            raise ValueError(
                f"trainable rows of {run!r} are not grouped by owner device for expert parallelism over "
                f"{m} devices: build them with the method's init(..., expert_shards={m})"
            )


def _data_groups(model: MoEModel, ids: Any) -> int:
    """Data groups of an expert-parallel model's mesh that split this batch evenly (else 1)."""
    mesh = model.opts.expert_mesh
    if mesh is None:
        return 1
    from rise_jax.models.expert_parallel import DATA

    d = mesh.shape[DATA]
    return d if d > 1 and ids.shape[0] % d == 0 else 1


def tree_bytes(tree: Any) -> int:
    return int(sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree)))
