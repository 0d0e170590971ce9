"""Causal-LM log-likelihoods: shared by training, evaluation (perplexity, multiple choice) and the
demo's pretraining, so none of them imports another's module."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def token_log_probs(logits: jax.Array, input_ids: jax.Array) -> jax.Array:
    """fp32 ``[B, T-1]``: ``log p(input_ids[:, t+1] | input_ids[:, :t+1])`` (position ``t`` predicts ``t+1``)."""
    logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(logp, input_ids[:, 1:, None], axis=-1)[..., 0]


def lm_loss_sums(logits: jax.Array, input_ids: jax.Array, loss_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Causal-LM NLL summed over target positions, and their count.

    Position ``t`` predicts token ``t+1``; ``loss_mask[b, t+1]`` (1 for real answer/text tokens)
    selects which targets count, as HF's shifted ``labels`` with -100 elsewhere.
    """
    nll = -token_log_probs(logits, input_ids)
    m = loss_mask[:, 1:].astype(jnp.float32)
    return jnp.sum(nll * m), jnp.sum(m)
