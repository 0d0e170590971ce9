"""Routing distributions and their divergences, in JAX: shared by the training objective that
aligns routing (:mod:`rise_jax.training.alignment`) and the evaluation task that measures it
(:mod:`rise_jax.evaluation.routing_alignment`), so neither imports the other's module. The NumPy
formulas of the analysis (:mod:`rise_jax.routing.analysis`) are the reference they are tested against.

**The routing distribution** of one sequence at one MoE layer (Bandarkar et al., arXiv 2510.04694,
as their released analysis code computes it; DESIGN §3)::

    q[l, e] = (1 / T) Σ_t softmax(z[l, t, :])_e        over the sequence's T real tokens

with ``z`` the fp32 router logits (:class:`~rise_jax.models.routers.RoutingInfo` ``router_logits``,
the same for every family: before top-k, groups, any selection-only bias, and before the weights
are renormalised or scaled). For a *sigmoid* router (DeepSeek-V3, GLM-4.5, Llama-4) this is still
the softmax of its logits, not ``sigmoid(z)`` normalised: the softmax ranks experts exactly as
``sigmoid(z)`` does (both are monotone in ``z``), it is the distribution the analysis, the report
and the correlation measure, so an objective that lowers it lowers the number they show; and the
selection bias is a load-balancing offset, not the router's opinion of a token (docs/ROUTING.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

MIX_FLOOR, LOG_EPS, DENOMINATOR_FLOOR = 1e-10, 1e-10, 1e-6  # as rise_jax.routing.analysis


def sequence_mean_probs(router_logits: Array, mask: Array) -> Array:
    """``[L, B, E]``: per layer and sequence, the mean over its real tokens (``mask`` ``[B, T]``)
    of ``softmax`` over all ``E`` router logits (``router_logits`` ``[L, B, T, E]``). An empty row
    gives zeros."""
    probs = jax.nn.softmax(router_logits.astype(jnp.float32), axis=-1)
    m = mask.astype(jnp.float32)
    total = jnp.einsum("lbte,bt->lbe", probs, m)
    return total / jnp.maximum(jnp.sum(m, axis=1), 1.0)[None, :, None]


def kl_divergence(p: Array, q: Array) -> Array:
    """``KL(p‖q) = Σ_e p_e (ln p_e − ln q_e)`` over the last axis (natural log; ``p_e = 0`` terms
    contribute 0; ``q`` floored at 1e-10 inside the log)."""
    ratio = jnp.where(p > 0, p / jnp.maximum(q, LOG_EPS), 1.0)  # one log of a ratio: no cancellation
    return jnp.sum(jnp.where(p > 0, p * jnp.log(ratio), 0.0), axis=-1)


def js_divergence(p: Array, q: Array) -> Array:
    """``JS(p‖q) = ½ KL(p‖m) + ½ KL(q‖m)``, ``m = (p+q)/2`` (:func:`rise_jax.routing.analysis.js_divergence`).

    Written as ``½ Σ p ln(1 + (p−q)/(p+q)) + ½ Σ q ln(1 − (p−q)/(p+q))`` with ``log1p``: the same
    value, but in fp32 the logs of ratios near 1 keep their relative precision where ``ln p − ln m``
    would cancel (routing distributions are close to each other and to uniform: the JS is small).
    Terms with ``p_e = 0`` (or ``q_e = 0``) contribute 0; ``m`` is floored at 1e-10 as the analysis does."""
    s = jnp.maximum(p + q, 2 * MIX_FLOOR)
    r = (p - q) / s
    # the double where keeps the untaken branch finite, so no 0 · inf reaches a gradient
    one = jnp.where(p > 0, p * jnp.log1p(jnp.where(p > 0, r, 0.0)), 0.0)
    two = jnp.where(q > 0, q * jnp.log1p(jnp.where(q > 0, -r, 0.0)), 0.0)
    return 0.5 * jnp.sum(one + two, axis=-1)


def entropy_deficit(p: Array) -> Array:
    """``ln E − H(p)``, ``H(p) = −Σ p_e ln(p_e + 1e-10)`` (the study's ``calculate_entropy``), for
    a distribution ``p``: computed as ``(1/E) Σ_e [x_e ln x_e − x_e + 1]`` with ``x = E (p + 1e-10)``
    (equal on the simplex), whose terms are each ≥ 0 and whose value does not move with the fp32
    round-off of ``Σ p`` (``ln E − H`` directly would subtract two numbers near ``ln E``, and a
    near-uniform router makes the difference small). Its fp32 error is still ~1e-7 / (ln E − H)
    relative: for an almost flat router the normalised divergence is ill-conditioned in fp32."""
    e = p.shape[-1]
    y = e * (p + LOG_EPS) - 1.0  # x - 1
    terms = (1.0 + y) * jnp.log1p(jnp.where(y > -1.0, y, 0.0)) - y
    return jnp.sum(terms, axis=-1) / e


def entropy_normalised_jsd(p: Array, q: Array) -> Array:
    """``D_H-JS(p, q) = JS(p‖q) / max(ln E − (H(p) + H(q)) / 2, 1e-6)`` over the last axis (``E``
    its length): Bandarkar et al.'s ``calculate_entropy_normalized_jsd``
    (:func:`rise_jax.routing.analysis.entropy_normalised_jsd`)."""
    denominator = 0.5 * (entropy_deficit(p) + entropy_deficit(q))
    return js_divergence(p, q) / jnp.maximum(denominator, DENOMINATOR_FLOOR)


DIVERGENCES = ("kl", "js")  # the alignment divergences :func:`divergence` knows


def divergence(kind: str, target: Array, reference: Array) -> Array:
    """The alignment divergence ``kind`` between a target-language and a reference (English)
    distribution over the last axis: ``"kl"`` = ``KL(reference ‖ target)`` (the reference as the
    distribution to match: PyTorch's ``kl_div(log target, reference)``), ``"js"`` = the
    entropy-normalised JS divergence (symmetric)."""
    if kind == "kl":
        return kl_divergence(reference, target)
    if kind == "js":
        return entropy_normalised_jsd(target, reference)
    raise ValueError(f"routing divergence {kind!r}; choose one of {', '.join(DIVERGENCES)}")
