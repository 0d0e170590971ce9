"""Task kind ``routing_divergence``: how far a language's routing is from English's, on the model
being evaluated (base, trained, steered ...): the companion study's middle-layer divergence,
replayed on the variant's own weights and router edits.

For the parallel pairs ``i`` of a source (FLoRes / NTREX ids, or a ``plain_text`` directory whose
line n is the same sentence in every language), per MoE layer ``l``::

    curve[l] = mean_i D_H-JS(p_i[l], q_i[l])

with ``p_i[l]`` / ``q_i[l]`` the token-mean softmax over all experts of the router logits of the
language's sentence and of its English (``reference``) translation, and ``D_H-JS`` Bandarkar et
al.'s entropy-normalised JS divergence (DESIGN §3; :mod:`rise_jax.models.routing_divergence`, the
analysis stage's formula). Scores: ``divergence`` = the mean of ``curve`` over ``layers`` (empty:
the middle zone, :mod:`rise_jax.zones`), ``divergence_all`` over every MoE layer, and ``n`` pairs.
Lower is closer to English; an edit that steers the router, or training that moved it, shows here.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rise_jax.config_values import int_ranges
from rise_jax.data.batching import bucketed_batches, tokenize_examples
from rise_jax.data.languages import get_language
from rise_jax.data.sources import SourceError, SourceSpec, load_examples
from rise_jax.distributed import put_batch, to_host
from rise_jax.errors import RiseError
from rise_jax.models.routing_divergence import entropy_normalised_jsd, sequence_mean_probs
from rise_jax.zones import zone_ranges


class RoutingDivergenceError(RiseError, ValueError):
    """Unusable settings or data for the routing-divergence task (the message names which)."""


def task_layers(task: Any, num_moe_layers: int, where: str = "eval.tasks.routing_divergence") -> list[int]:
    """The MoE layers ``task.layers`` names ("3-5", "2,7"); empty = the middle zone."""
    spec = str(task.get("layers", "")).strip()
    if not spec:
        first, end = zone_ranges(num_moe_layers)["middle"]
        if end <= first:
            raise RoutingDivergenceError(f"{where}.layers is empty and {num_moe_layers} MoE layers have no middle zone")
        return list(range(first, end))
    try:
        layers = sorted(set(int_ranges(spec)))
    except ValueError:
        raise RoutingDivergenceError(f"{where}.layers = {spec!r}: not MoE layers like '3-5' or '2,7'") from None
    bad = [i for i in layers if not 0 <= i < num_moe_layers]
    if bad:
        raise RoutingDivergenceError(f"{where}.layers = {spec!r}: MoE layers {bad} out of range [0, {num_moe_layers})")
    return layers


def check_task(task: Any, where: str) -> None:
    """Cheap checks before any stage runs: the layer list parses (its range is checked with the model)."""
    spec = str(task.get("layers", "")).strip()
    if spec:
        try:
            int_ranges(spec)
        except ValueError:
            raise RoutingDivergenceError(f"{where}.layers = {spec!r}: not MoE layers like '3-5' or '2,7'") from None


@functools.partial(jax.jit, static_argnames=("model",))
def _distributions(model, params, ids, mask, router_edit) -> jax.Array:
    """``[B, L, E]``: each row's token-mean routing distribution (router edits applied)."""
    out = model.apply(
        {"params": params}, ids, mask, return_routing=True, skip_lm_head=True, router_edit=router_edit, inference=True
    )
    return jnp.transpose(sequence_mean_probs(out.routing.router_logits, mask), (1, 0, 2))


def _replay(ev: Any, sequences: list[np.ndarray]) -> np.ndarray:
    """``[N, L, E]`` routing distributions of ``sequences`` through the evaluator's model."""
    cfg = ev.model.cfg
    out = np.zeros((len(sequences), cfg.num_moe_layers, cfg.num_experts), np.float32)
    for ids, mask, index in bucketed_batches(sequences, ev.batch_size, 32, ev.pad_id):
        rows = to_host(_distributions(ev.model, ev.params, *put_batch(ev.params, ids, mask), ev.router_edit))
        out[index[index >= 0]] = rows[index >= 0]
    return out


def divergence_scores(ev: Any, task: Any, language: str, max_samples: int) -> dict[str, Any]:
    """The task's scores for ``language`` (module docstring); ``ev`` is an
    :class:`~rise_jax.evaluation.tasks.Evaluator` (model, params, tokenizer, router edit)."""
    reference = get_language(task.get("reference", "") or "en").code
    if language == reference:
        raise RoutingDivergenceError(f"task routing_divergence: {language} is the reference language itself")
    spec = SourceSpec(task.source, task.path, split=task.split)
    try:
        target, english = load_examples(spec, language), load_examples(spec, reference)
    except SourceError as err:
        raise RoutingDivergenceError(f"task routing_divergence: {err}") from err
    by_id = {e.id: e for e in english}
    target = [e for e in target if e.id in by_id][: max_samples or None]
    if not target:
        raise RoutingDivergenceError(
            f"task routing_divergence: no {language} sentence has a {reference} translation with the same id "
            f"in {task.path} (a parallel source: flores, ntrex, or plain_text with aligned lines)"
        )
    sides = [
        tokenize_examples(lang, examples, ev.tokenizer, task.max_length)
        for lang, examples in ((language, target), (reference, [by_id[e.id] for e in target]))
    ]
    common = sorted(set(sides[0].example_ids) & set(sides[1].example_ids))  # both sides kept (non-empty)
    rows = [dict(zip(s.example_ids, s.sequences, strict=True)) for s in sides]
    p, q = (_replay(ev, [r[i] for i in common]) for r in rows)
    curve = np.asarray(entropy_normalised_jsd(jnp.asarray(p), jnp.asarray(q))).mean(0)  # [L]
    layers = task_layers(task, ev.model.cfg.num_moe_layers)
    return {
        "divergence": float(curve[layers].mean()),
        "divergence_all": float(curve.mean()),
        "n": len(common),
        "skipped": len(target) - len(common),
        "truncated": sides[0].truncated,
    }
