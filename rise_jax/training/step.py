"""Loss, optimiser and the jit-compiled train / held-out steps over the trainable experts only."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from rise_jax.models.transformer import MoEModel
from rise_jax.training.partition import join_trainable


def lm_loss_sums(logits: jax.Array, input_ids: jax.Array, loss_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Causal-LM NLL summed over target positions, and their count.

    Position ``t`` predicts token ``t+1``; ``loss_mask[b, t+1]`` (1 for real answer/text tokens)
    selects which targets count, as HF's shifted ``labels`` with -100 elsewhere.
    """
    logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
    target = input_ids[:, 1:]
    nll = -jnp.take_along_axis(logp, target[..., None], axis=-1)[..., 0]
    m = loss_mask[:, 1:].astype(jnp.float32)
    return jnp.sum(nll * m), jnp.sum(m)


def make_optimizer(
    lr: float,
    total_steps: int,
    warmup_ratio: float = 0.05,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    clip_norm: float = 1.0,
    grad_accum: int = 1,
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(optimiser, learning-rate schedule): AdamW with linear warmup (``ceil(ratio · total)`` steps) then linear decay to 0, after
    clipping the global norm of the trainable gradients; ``optax.MultiSteps`` averages
    ``grad_accum`` micro-batches per optimiser step. (Paper defaults: lr 2e-5, (0.9, 0.999),
    eps 1e-8, weight decay 0, warmup 0.05, clip 1.0, accumulation 8.)"""
    total_steps = max(int(total_steps), 1)
    warmup = min(math.ceil(warmup_ratio * total_steps), total_steps)
    schedule = optax.join_schedules(
        [optax.linear_schedule(0.0, lr, max(warmup, 1)), optax.linear_schedule(lr, 0.0, max(total_steps - warmup, 1))],
        [warmup],
    )
    parts = [optax.clip_by_global_norm(clip_norm)] if clip_norm and clip_norm > 0 else []
    parts.append(optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay))
    tx = optax.chain(*parts)
    return (optax.MultiSteps(tx, every_k_schedule=grad_accum) if grad_accum > 1 else tx), schedule


def make_steps(model: MoEModel, tx: optax.GradientTransformation):
    """(train_step, eval_step), both jit-compiled.

    ``train_step(weights, opt_state, slots, base_params, ids, mask, loss_mask, rng)`` ->
    ``(weights, opt_state, {"loss", "tokens", "grad_norm"})``; base params are an input, never an
    output: they cannot change. ``eval_step(...)`` -> (NLL sum, target count).
    """

    def loss_fn(weights, slots, base, ids, mask, loss_mask, rng):
        out = model.apply(
            {"params": base}, ids, mask, trainable_experts=join_trainable(weights, slots), rngs={"router": rng}
        )
        total, count = lm_loss_sums(out.logits, ids, loss_mask)
        return total / jnp.maximum(count, 1.0), count

    def train_step(weights, opt_state, slots, base, ids, mask, loss_mask, rng):
        (loss, count), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            weights, slots, base, ids, mask, loss_mask, rng
        )
        updates, opt_state = tx.update(grads, opt_state, weights)
        weights = optax.apply_updates(weights, updates)
        return weights, opt_state, {"loss": loss, "tokens": count, "grad_norm": optax.global_norm(grads)}

    def eval_step(weights, slots, base, ids, mask, loss_mask):
        out = model.apply({"params": base}, ids, mask, trainable_experts=join_trainable(weights, slots))
        return lm_loss_sums(out.logits, ids, loss_mask)

    return jax.jit(train_step), jax.jit(eval_step)


def tree_bytes(tree: Any) -> int:
    return int(sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree)))
