"""The routing-alignment objective: pull a target language's routing towards English's on
parallel text, added to the causal-LM loss (``train.align_weight`` > 0).

For a micro-batch of parallel pairs ``i`` (target-language text, its English translation) and the
chosen MoE layers ``S`` (``train.align_layers``; default the middle zone, :mod:`rise_jax.zones`)::

    p[i, l] = (1/T_i) Σ_t softmax(z_tgt[l, i, t, :])       token-mean routing distribution, target side
    q[i, l] = (1/T'_i) Σ_t softmax(z_en[l, i, t, :])       the same on the English side (no gradient)
    A       = (1/|P|) Σ_i (1/|S|) Σ_{l∈S} D(p[i, l], q[i, l])
    loss    = NLL(target text) + train.align_weight · A

with ``z`` the fp32 router logits before top-k (:mod:`rise_jax.models.routing_divergence` defines
the distribution for every family, sigmoid and biased routers included), ``P`` the pairs whose
both sides have tokens, and ``D`` (``train.align_divergence``):

* ``kl`` (default): ``KL(q‖p) = Σ_e q_e (ln q_e − ln p_e)``: English is the distribution to match,
  as the companion study's follow-up training code writes it (Bandarkar et al., arXiv 2510.04694:
  "KL between the mean routing distributions of parallel sentences"; PyTorch
  ``kl_div(log p, q)``);
* ``js``: the entropy-normalised JS divergence the analysis measures, ``D_H-JS(p, q) = JS(p‖q) /
  max(ln E − (H(p) + H(q))/2, 1e-6)`` (DESIGN §3; :func:`rise_jax.routing.analysis.entropy_normalised_jsd`).

English is the reference, not a second target: ``q`` comes from the same model in the same step
(the trainable state as it is now) but under ``stop_gradient``, so the objective moves the target
language's routing towards English and never English's towards the target. NLL is the mean over
target tokens (as without the term); ``A`` is a mean over pairs and layers, so ``align_weight``
means the same whatever the batch and the layer count.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from rise_jax.config_values import int_ranges
from rise_jax.data.sources import Example
from rise_jax.errors import SettingError
from rise_jax.models.routing_divergence import DIVERGENCES, divergence, sequence_mean_probs
from rise_jax.zones import DEFAULT_RATIOS, zone_ranges

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Alignment:
    """The alignment term's settings: ``weight`` (> 0), ``divergence`` (``kl`` | ``js``) and the
    MoE ``layers`` whose routing is aligned (indices into the model's MoE layers)."""

    weight: float
    divergence: str
    layers: tuple[int, ...]

    def __post_init__(self):
        if self.divergence not in DIVERGENCES:
            raise SettingError(
                f"config.train.align_divergence = {self.divergence!r}; choose one of {', '.join(DIVERGENCES)}"
            )
        if not self.layers:
            raise SettingError("routing alignment needs at least one MoE layer (config.train.align_layers)")

    def distributions(self, router_logits: Array, mask: Array) -> Array:
        """``[|S|, B, E]``: the token-mean routing distribution of each sequence at the chosen layers."""
        return sequence_mean_probs(router_logits[jnp.asarray(self.layers)], mask)

    def term(self, target_logits: Array, target_mask: Array, reference: Array, reference_mask: Array) -> Array:
        """``A`` (module docstring) from the target side's router logits ``[L, B, T, E]`` and mask
        ``[B, T]`` and the reference side's :meth:`distributions` ``[|S|, B, E]`` and mask."""
        p = self.distributions(target_logits, target_mask)
        d = divergence(self.divergence, p, reference)  # [|S|, B]
        pairs = ((jnp.sum(target_mask, axis=1) > 0) & (jnp.sum(reference_mask, axis=1) > 0)).astype(jnp.float32)
        return jnp.sum(d * pairs[None]) / (len(self.layers) * jnp.maximum(jnp.sum(pairs), 1.0))


def resolve_layers(
    spec: str,
    num_moe_layers: int,
    zone_ratios: Sequence[float] = DEFAULT_RATIOS,
    where: str = "config.train.align_layers",
) -> tuple[int, ...]:
    """MoE layer indices from ``"3-5"`` / ``"2,7"``; empty = the middle zone (``zone_ratios``:
    ``config.select.zone_ratios``). Out-of-range layers and an empty middle zone are errors naming
    ``where``."""
    if str(spec).strip():
        try:
            layers = sorted(set(int_ranges(spec)))
        except ValueError as err:
            raise SettingError(f"{where} = {spec!r}: not MoE layer indices like '3-5' or '2,7' ({err})") from None
        bad = [i for i in layers if not 0 <= i < num_moe_layers]
        if bad:
            raise SettingError(f"{where} = {spec!r}: MoE layers {bad} out of range [0, {num_moe_layers})")
        return tuple(layers)
    first, end = zone_ranges(num_moe_layers, zone_ratios)["middle"]
    if end <= first:
        raise SettingError(
            f"{where} is empty and the middle zone of {num_moe_layers} MoE layers (zone ratios "
            f"{tuple(zone_ratios)}) has no layer: name the layers, e.g. {where}=0-{num_moe_layers - 1}"
        )
    return tuple(range(first, end))


def pair_examples(
    examples: Sequence[Example], references: Sequence[Example], language: str, reference: str
) -> tuple[list[Example], list[Example]]:
    """(target examples, their reference-language translations), matched by ``Example.id`` (FLoRes
    ``index_id``, NTREX / plain-text line number), in the target's order. None matching is an error."""
    by_id = {e.id: e for e in references}
    kept = [e for e in examples if e.id in by_id]
    if not kept:
        raise SettingError(
            f"routing alignment: no {language} training text has a {reference} translation with the same id "
            f"(config.train.data must be a parallel source: flores, ntrex, or plain_text with line i the same "
            f"sentence in every language)"
        )
    return kept, [by_id[e.id] for e in kept]
