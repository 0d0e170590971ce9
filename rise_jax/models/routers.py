"""Routers: which experts each token uses, and with what weight.

Both routers compute logits in fp32 (``x @ W`` with ``x`` and ``W`` upcast) and select experts on
fp32 values, so the selected set is the one the model uses whatever the parameter dtype.

* ``softmax_topk`` (Qwen3-MoE, Qwen3MoeTopKRouter): ``p = softmax(z)``; top-k of ``p``; weights
  are the top-k probabilities, renormalised to sum to 1 when ``norm_topk_prob``. With expert
  groups (DeepSeek-V2 ``group_limited_greedy``): the ``E`` experts form ``G`` equal groups, a
  group scores ``max`` of its ``p``, only the best ``topk_group`` groups keep their ``p`` (the
  others' are set to 0) before the top-k.
* ``sigmoid_topk`` (DeepSeek-V3, GLM-4.5: DeepseekV3TopkRouter): ``s = sigmoid(z)``; the
  experts are *chosen* on ``c = s + b`` (``b`` = ``e_score_correction_bias``, the load-balancing
  bias, which never enters a weight); with groups a group scores the sum of its two largest
  ``c``, the experts outside the best ``topk_group`` groups get ``c = -inf``; top-k of ``c``;
  the weights are the **unbiased** ``s`` of the chosen experts, divided by their sum
  (``+ 1e-20``) when ``norm_topk_prob``.

Both DeepSeek-style routers multiply the weights by ``routed_scaling_factor`` before the experts
are combined (as transformers does); :class:`RoutingInfo` reports the weights *before* that
constant, so they stay the router's distribution over the chosen experts (what ESFT's gate score
sums; see ``docs/ROUTING.md``).
* ``topk_softmax`` (GPT-OSS, GptOssTopKRouter): top-k of the (biased) logits; weights are the
  softmax over those k logits.
* ``topk_sigmoid`` (Llama-4, Llama4Router): top-k of the logits; weights are ``sigmoid`` of the k
  chosen logits (no renormalisation). With ``ModelConfig.router_scales_input`` these weights
  scale each chosen expert's *input*, not its output (docs/ROUTING.md).
* ``sparsemixer`` (PhiMoE, transformers ``sparsemixer``): top-1 = argmax z, weight = softmax over
  the logits within a relative ``2·jitter_eps`` band of the max; top-2 = argmax of z with top-1
  masked, weight from the same construction. Eval mode is deterministic and exact; train mode
  (Gumbel sampling + Heun's third-order custom backward) is :func:`sparsemixer_train`.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

Array = jax.Array


@flax.struct.dataclass
class RoutingInfo:
    """Per-layer routing of every token, stacked over the model's MoE layers.

    Shapes (``L`` = MoE layers, ``B`` batch, ``T`` tokens, ``k`` experts per token, ``E`` experts):

    * ``topk_indices``  int32 ``[L, B, T, k]`` — experts each token activates (rank order).
    * ``topk_weights``  float32 ``[L, B, T, k]`` — the routing weight of each of those experts
      (before a family's ``routed_scaling_factor``, which the model applies on top).
    * ``router_logits`` float32 ``[L, B, T, E]`` — raw router logits (fp32).

    Padding positions are included; mask them with the attention mask before counting.
    """

    topk_indices: Array
    topk_weights: Array
    router_logits: Array

    def activation_mask(self) -> Array:
        """bool ``[L, B, T, E]``: True where the token activates the expert."""
        e = self.router_logits.shape[-1]
        return jnp.any(jax.nn.one_hot(self.topk_indices, e, dtype=jnp.bool_), axis=-2)

    def router_probs(self) -> Array:
        """float32 ``[L, B, T, E]``: ``softmax`` over all experts of the router logits (Bandarkar's
        routing distribution), for every family. It is not always what weights the experts: that is
        ``topk_weights`` (Qwen/OLMoE/Mixtral/DeepSeek-V2: these probabilities at the top k,
        renormalised when ``norm_topk_prob``; GPT-OSS: a softmax over the k selected logits only;
        PhiMoE: sparsemixer's masked softmaxes; DeepSeek-V3/GLM-4.5: the unbiased sigmoid scores of
        the experts chosen with the correction bias). For a sigmoid router it ranks experts as
        ``sigmoid(z)`` does and ignores the selection bias and the groups (docs/ROUTING.md)."""
        return jax.nn.softmax(self.router_logits, axis=-1)


HARD_STEER_EPS = 1e-3


@flax.struct.dataclass
class RouterEdit:
    """Edits of the router logits ``z`` of every MoE layer, applied before expert selection.

    All fields are ``[L, E]`` over MoE layers x experts (DESIGN §3, Bandarkar-style steering):

    * ``soft`` float32 — soft steering ``z_i <- z_i + soft_i * std(z)`` (population std over the
      token's ``E`` logits); 0 leaves the expert alone, so ``soft = 0`` is the identity.
    * ``hard`` bool — hard steering ``z_i <- max(z) + eps + jitter_i`` (``eps`` =
      :data:`HARD_STEER_EPS`, ``jitter`` the seeded ``N(0, 1e-6)`` draw of ``hard_jitter`` that
      breaks ties between hard-steered experts as the companion study's ε does): the expert
      ranks first, so up to ``k`` hard-steered experts are always in the top-k.
    * ``deactivate`` bool — ``z_i <- min(z) - eps``: the study's "deactivate" ablation; the expert
      ranks last (out of every token's top-k while ``k`` < the experts left), weights renormalise
      over the others as the router would.
    * ``prune`` bool — pruning ``z_i <- -inf``: the expert is never selected and the next-best
      experts take its place.

    ``std``, ``max`` and ``min`` are taken on the unedited logits; pruning wins over steering.
    Build these with :mod:`rise_jax.evaluation.interventions`.
    """

    soft: Array
    hard: Array
    prune: Array
    deactivate: Array | None = None  # bool [L, E]; None = nothing deactivated
    hard_jitter: Array | None = None  # float32 [L, E]; None = no tie-breaking jitter

    def rows(self, start: int, stop: int) -> tuple[Array, ...]:
        """The edit of MoE layers ``[start, stop)`` as the per-layer arrays a scanned run slices."""
        shape = self.soft.shape
        deactivate = self.deactivate if self.deactivate is not None else jnp.zeros(shape, bool)
        jitter = self.hard_jitter if self.hard_jitter is not None else jnp.zeros(shape, jnp.float32)
        return tuple(a[start:stop] for a in (self.soft, self.hard, self.prune, deactivate, jitter))


def edit_logits(logits: Array, soft: Array, hard: Array, prune: Array, deactivate: Array, hard_jitter: Array) -> Array:
    """Apply one layer's edit (``[E]`` rows of a :class:`RouterEdit`) to fp32 logits ``[..., E]``."""
    z = logits.astype(jnp.float32)
    edited = z + soft.astype(jnp.float32) * jnp.std(z, axis=-1, keepdims=True)
    top = jnp.max(z, axis=-1, keepdims=True) + HARD_STEER_EPS + hard_jitter.astype(jnp.float32)
    edited = jnp.where(hard, top, edited)
    edited = jnp.where(deactivate, jnp.min(z, axis=-1, keepdims=True) - HARD_STEER_EPS, edited)
    return jnp.where(prune, -jnp.inf, edited)


def _group_keep(choice: Array, groups: int, topk_groups: int, top2: bool) -> Array:
    """bool ``[..., E]``: True for the experts of the ``topk_groups`` best of ``groups`` equal groups;
    a group scores the max of its ``choice`` values, or the sum of its two largest when ``top2``."""
    e = choice.shape[-1]
    grouped = choice.reshape(*choice.shape[:-1], groups, e // groups)
    score = jnp.sum(jax.lax.top_k(grouped, 2)[0], axis=-1) if top2 else jnp.max(grouped, axis=-1)
    best = jax.lax.top_k(score, topk_groups)[1]
    keep = jnp.any(jax.nn.one_hot(best, groups, dtype=jnp.bool_), axis=-2)  # [..., G]
    return jnp.repeat(keep, e // groups, axis=-1)


def softmax_topk(
    logits: Array, k: int, norm_topk_prob: bool, groups: int = 1, topk_groups: int = 1
) -> tuple[Array, Array]:
    """Qwen3-MoE / DeepSeek-V2 router on fp32 logits ``[..., E]`` -> (weights ``[..., k]``, indices ``[..., k]``)."""
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    if topk_groups < groups:
        probs = jnp.where(_group_keep(probs, groups, topk_groups, top2=False), probs, 0.0)
    weights, idx = jax.lax.top_k(probs, k)
    if norm_topk_prob:
        weights = weights / jnp.sum(weights, axis=-1, keepdims=True)
    return weights, idx.astype(jnp.int32)


def sigmoid_topk(
    logits: Array, k: int, norm_topk_prob: bool, bias: Array | None, groups: int = 1, topk_groups: int = 1
) -> tuple[Array, Array]:
    """DeepSeek-V3 router on fp32 logits ``[..., E]`` -> (unbiased weights, indices) ``[..., k]``.

    ``bias`` ``[E]`` (``e_score_correction_bias``) only decides which experts are chosen. A pruned
    expert (logit ``-inf``, :func:`edit_logits`) keeps ``c = -inf`` whatever its bias."""
    z = logits.astype(jnp.float32)
    scores = jax.nn.sigmoid(z)
    choice = scores if bias is None else scores + bias.astype(jnp.float32)
    choice = jnp.where(z == -jnp.inf, -jnp.inf, choice)
    if topk_groups < groups:
        choice = jnp.where(_group_keep(choice, groups, topk_groups, top2=True), choice, -jnp.inf)
    idx = jax.lax.top_k(choice, k)[1]
    weights = jnp.take_along_axis(scores, idx, axis=-1)
    if norm_topk_prob:
        weights = weights / (jnp.sum(weights, axis=-1, keepdims=True) + 1e-20)
    return weights, idx.astype(jnp.int32)


def topk_softmax(logits: Array, k: int) -> tuple[Array, Array]:
    """GPT-OSS router on fp32 logits ``[..., E]``: top-k of the logits, softmax over the k."""
    top, idx = jax.lax.top_k(logits.astype(jnp.float32), k)
    return jax.nn.softmax(top, axis=-1), idx.astype(jnp.int32)


def topk_sigmoid(logits: Array, k: int) -> tuple[Array, Array]:
    """Llama-4 router on fp32 logits ``[..., E]``: top-k of the logits, ``sigmoid`` of the k.

    Selecting on the logits, not on ``sigmoid(z)``, keeps experts whose scores would round to the
    same fp32 value (logits above ~17) in the order the logits give them."""
    top, idx = jax.lax.top_k(logits.astype(jnp.float32), k)
    return jax.nn.sigmoid(top), idx.astype(jnp.int32)


def _band_mask(scores: Array, threshold: Array, jitter_eps: float) -> Array:
    """True where ``(threshold - s) / max(|s|, threshold) > 2·eps`` (logit masked out)."""
    factor = jnp.maximum(jnp.abs(scores), threshold)
    return ((threshold - scores) / factor) > (2 * jitter_eps)


def sparsemixer_eval(scores: Array, jitter_eps: float) -> tuple[Array, Array]:
    """PhiMoE's eval-mode sparsemixer on fp32 logits ``[..., E]`` -> (weights, indices) ``[..., 2]``."""
    scores = scores.astype(jnp.float32)
    neg_inf = jnp.float32(-jnp.inf)
    top1 = jnp.argmax(scores, axis=-1, keepdims=True)
    max1 = jnp.take_along_axis(scores, top1, axis=-1)
    gates1 = jax.nn.softmax(jnp.where(_band_mask(scores, max1, jitter_eps), neg_inf, scores), axis=-1)
    w1 = jnp.take_along_axis(gates1, top1, axis=-1)

    e = scores.shape[-1]
    masked = jnp.where(jax.nn.one_hot(top1[..., 0], e, dtype=jnp.bool_), neg_inf, scores)
    top2 = jnp.argmax(masked, axis=-1, keepdims=True)
    max2 = jnp.take_along_axis(masked, top2, axis=-1)
    gates2 = jax.nn.softmax(jnp.where(_band_mask(scores, max2, jitter_eps), neg_inf, masked), axis=-1)
    w2 = jnp.take_along_axis(gates2, top2, axis=-1)
    return jnp.concatenate([w1, w2], -1), jnp.concatenate([top1, top2], -1).astype(jnp.int32)


@jax.custom_vjp
def _phimoe_multiplier(scores: Array, multiplier: Array, selected: Array, gates: Array, mask_for_one: Array) -> Array:
    """PhimoeMultiplier.forward: ``multiplier · mask_for_one`` (gradient only to ``scores``)."""
    del scores, selected, gates
    return multiplier * mask_for_one


def _phimoe_multiplier_fwd(scores, multiplier, selected, gates, mask_for_one):
    out = multiplier * mask_for_one
    return out, (scores, multiplier, selected, gates, mask_for_one)


def _phimoe_multiplier_bwd(res, g):
    """PhimoeMultiplier.backward: ``d scores = -gates·(g·m) + scatter(selected, g·m)``."""
    scores, multiplier, selected, gates, mask_for_one = res
    gm = g * multiplier
    d_scores = gates * (-gm) + selected * gm  # `selected` is the one-hot of the sampled expert
    return (
        d_scores.astype(scores.dtype),
        jnp.zeros_like(multiplier),
        jnp.zeros_like(selected),
        jnp.zeros_like(gates),
        jnp.zeros_like(mask_for_one),
    )


_phimoe_multiplier.defvjp(_phimoe_multiplier_fwd, _phimoe_multiplier_bwd)


def sparsemixer_train(scores: Array, jitter_eps: float, rng: Array) -> tuple[Array, Array]:
    """PhiMoE's train-mode sparsemixer: Gumbel-sampled experts, Heun third-order backward.

    Stochastic (needs ``rng``); gradients reach the router logits through the custom VJP exactly as
    transformers' ``PhimoeMultiplier``. Routing then differs from eval mode, so a training step may
    send tokens through experts outside a frozen selection (see the training docs).
    """
    scores = scores.astype(jnp.float32)
    e = scores.shape[-1]
    neg_inf = jnp.float32(-jnp.inf)
    k_g1, k_u1, k_g2, k_u2 = jax.random.split(rng, 4)

    def pick(masked_scores: Array, threshold: Array, k_gumbel: Array, k_unif: Array):
        masked = jnp.where(_band_mask(scores, threshold, jitter_eps), neg_inf, masked_scores)
        gumbel = -jnp.log(jax.random.exponential(k_gumbel, masked.shape, jnp.float32))
        sel = jnp.argmax(masked + gumbel, axis=-1, keepdims=True)
        gates = jax.nn.softmax(masked, axis=-1)
        mult_o = jnp.take_along_axis(gates, sel, axis=-1)
        max_ind = jnp.argmax(gates, axis=-1, keepdims=True)
        unif = jax.random.uniform(k_unif, mult_o.shape, jnp.float32)
        mask_for_one = jnp.where((sel == max_ind) | (unif > 0.75), 1.0, 0.3333).astype(jnp.float32)
        sel_onehot = jax.nn.one_hot(sel[..., 0], e, dtype=jnp.float32)
        mult = _phimoe_multiplier(scores, mult_o, sel_onehot, jax.lax.stop_gradient(gates), mask_for_one)
        return mult, sel

    max1 = jax.lax.stop_gradient(jnp.max(scores, axis=-1, keepdims=True))
    m1, s1 = pick(scores, max1, k_g1, k_u1)
    masked = jnp.where(jax.nn.one_hot(s1[..., 0], e, dtype=jnp.bool_), neg_inf, scores)
    max2 = jax.lax.stop_gradient(jnp.max(masked, axis=-1, keepdims=True))
    m2, s2 = pick(masked, max2, k_g2, k_u2)
    return jnp.concatenate([m1, m2], -1), jnp.concatenate([s1, s2], -1).astype(jnp.int32)
