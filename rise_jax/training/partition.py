"""Frozen/trainable partition for subnetwork training.

The trainable tree (:class:`~rise_jax.models.transformer.TrainableExperts`) holds only the K
selected experts, as fp32 master copies, in two parts kept apart from creation on:

    weights: {run_name: {"gate_proj": [K_run, H, I], "up_proj": [K_run, H, I], "down_proj": [K_run, I, H]
                         (+ "gate_bias", "up_bias", "down_bias" for families with expert biases: GPT-OSS)}}
    slots:   {run_name: int32 [n, E]   (-1 = frozen, else row in the arrays above)}

``weights`` is what is differentiated and optimised; ``slots`` is bookkeeping. Optionally, whole
parameter groups chosen by path rules (e.g. the routers, ``moe/router``, or attention, ``attn/``)
are trainable too: their fp32 masters sit in ``weights`` under the key :data:`EXTRA` as a subtree
shaped like the params (``{"layers": {"moe": {"router": [n, H, E]}}}``) and are overlaid on the
base params inside the step (off by default). The model substitutes the trainable rows for the
selected experts and stops gradients to every base parameter, so gradients and optimiser state
exist for the K experts only; the base params never pass through the optimiser and stay bitwise
unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rise_jax.models.config import ModelConfig
from rise_jax.models.expert_weights import LORA_A, LORA_B, LORA_SCALE, lora_delta
from rise_jax.models.layout import layer_runs, moe_layer_location
from rise_jax.models.quantized import QuantizedArray
from rise_jax.models.transformer import TrainableExperts

EXTRA = "extra_params"  # key of the path-rule groups in the trainable tree (never a run name)


def _path(keys: tuple) -> str:
    return "/".join(str(getattr(k, "key", k)) for k in keys)


def select_extra(params: dict[str, Any], patterns: list[str]) -> dict[str, Any]:
    """fp32 copies of every leaf whose ``/``-joined path matches one of the regex ``patterns``
    (``re.search``), as a subtree shaped like ``params``. Expert weights are chosen by the
    selection, never by a rule; a pattern that matches nothing is an error."""
    import re

    out: dict[str, Any] = {}
    hits = dict.fromkeys(patterns, 0)
    for keys, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        path = _path(keys)
        matched = [p for p in patterns if re.search(p, path)]
        if not matched:
            continue
        if "moe/experts" in path:
            raise ValueError(
                f"extra trainable pattern(s) {matched} match expert weights ({path}); experts come from the selection"
            )
        for p in matched:
            hits[p] += 1
        node = out
        names = path.split("/")
        for name in names[:-1]:
            node = node.setdefault(name, {})
        node[names[-1]] = jnp.asarray(leaf, jnp.float32)
    missing = [p for p, n in hits.items() if n == 0]
    if missing:
        raise ValueError(
            f"extra trainable pattern(s) {missing} match no parameter; paths look like layers/moe/router, layers/attn/q_proj/kernel"
        )
    return out


def overlay(params: dict[str, Any], extra: dict[str, Any] | None) -> dict[str, Any]:
    """``params`` with the leaves present in ``extra`` replaced (cast to the base dtype)."""
    if not extra:
        return params
    out = dict(params)
    for key, sub in extra.items():
        if isinstance(sub, dict):
            out[key] = overlay(params[key], sub)
        else:  # a quantized base kernel is replaced by full-precision values in its compute dtype
            out[key] = jnp.asarray(sub).astype(params[key].dtype)
    return out


def expert_slots(cfg: ModelConfig, experts: list[tuple[int, int]], shards: int = 1) -> dict[str, np.ndarray]:
    """Per run with at least one selected expert: ``slots [n, E]`` (row index or -1).

    Rows are numbered in (layer, expert) order. With ``shards = m > 1`` (expert parallelism over
    ``m`` devices, each owning ``E / m`` consecutive experts) they are grouped by owner instead:
    the copies of device ``i``'s experts are rows ``[i·R, (i+1)·R)`` (``R`` = the most any device
    owns; shorter groups end in unused rows), so splitting the rows into ``m`` equal blocks keeps
    every trainable expert on the device that computes it."""
    if shards < 1 or cfg.num_experts % shards:
        raise ValueError(f"expert shards must divide the {cfg.num_experts} experts, got {shards}")
    per_device = cfg.num_experts // shards
    chosen: dict[str, list[tuple[int, int]]] = {}
    for layer, expert in sorted(set(experts)):
        if not 0 <= expert < cfg.num_experts:
            raise ValueError(f"expert index {expert} out of range [0, {cfg.num_experts})")
        run, idx = moe_layer_location(cfg, layer)
        chosen.setdefault(run, []).append((idx, expert))
    slots: dict[str, np.ndarray] = {}
    for run, pairs in chosen.items():
        length = next(r.length for r in layer_runs(cfg) if r.name == run)
        slots[run] = np.full((length, cfg.num_experts), -1, np.int32)
        owners = [expert // per_device for _, expert in pairs]
        rows = max(owners.count(o) for o in set(owners)) if shards > 1 else len(pairs)
        used = [0] * shards
        for (idx, expert), owner in zip(pairs, owners, strict=True):
            slots[run][idx, expert] = owner * rows + used[owner]
            used[owner] += 1
    return slots


def slot_rows(slots: np.ndarray, shards: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(layer, expert, used) per trainable row of a slot table made by :func:`expert_slots` with
    ``shards``: rows no expert uses (the ends of an owner-grouped layout's shorter groups) have
    ``used`` False and layer = expert = 0."""
    slots = np.asarray(slots)
    li, ei = np.nonzero(slots >= 0)
    owners = ei // (slots.shape[1] // shards)
    n = shards * int(np.bincount(owners, minlength=shards).max()) if len(ei) else 0
    layer, expert, used = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, bool)
    layer[slots[li, ei]], expert[slots[li, ei]], used[slots[li, ei]] = li, ei, True
    return layer, expert, used


def selection_experts(selection: dict[str, Any]) -> list[tuple[int, int]]:
    return [(int(e["layer"]), int(e["expert"])) for e in selection["experts"]]


def init_trainable(
    params: dict[str, Any],
    cfg: ModelConfig,
    experts: list[tuple[int, int]],
    extra_patterns: list[str] | tuple = (),
    originals: Callable[[str, str, np.ndarray, np.ndarray], Any] | None = None,
    expert_shards: int = 1,
) -> TrainableExperts:
    """fp32 copies of the selected experts' weights, gathered from ``params`` (plus the groups
    matching ``extra_patterns``, see :func:`select_extra`), and their slot tables (rows grouped
    by owner device for ``expert_shards`` > 1, unused rows zero; :func:`expert_slots`).

    ``originals(run, name, layers, experts)`` (``[K, ...]``) reads them instead — a quantized
    frozen base starts training from the checkpoint's own weights, not from their quantized copy."""
    weights: dict[str, Any] = {}
    slots_out: dict[str, Any] = {}
    if extra_patterns:
        weights[EXTRA] = select_extra(params, list(extra_patterns))
    for run, slots in expert_slots(cfg, experts, expert_shards).items():
        li, ei, used = slot_rows(slots, expert_shards)
        experts = params[run]["moe"]["experts"]
        weights[run] = {}
        for name in cfg.expert_param_names:
            if originals is not None:
                rows = np.asarray(originals(run, name, li[used], ei[used]), np.float32)
                full = np.zeros((len(used), *rows.shape[1:]), np.float32)
                full[used] = rows
                weights[run][name] = jnp.asarray(full)
            else:
                rows = experts[name][li, ei].astype(jnp.float32)
                weights[run][name] = jnp.where(used.reshape(-1, *[1] * (rows.ndim - 1)), rows, 0.0)
        slots_out[run] = jnp.asarray(slots)
    return TrainableExperts(weights, slots_out)


LORA_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


def init_lora(
    cfg: ModelConfig,
    experts: list[tuple[int, int]],
    rank: int,
    alpha: float,
    seed: int = 0,
    expert_shards: int = 1,
) -> TrainableExperts:
    """RISE+LoRA's trainable tree: per selected expert and projection PEFT-initialised adapters —
    ``lora_a [K, r, in]`` uniform in ±1/sqrt(in) (``kaiming_uniform_(a=sqrt(5))``), ``lora_b
    [K, out, r]`` zeros, so step 0 is exactly the base model — and ``slots`` with ``lora_scale``
    = alpha / r (:class:`~rise_jax.models.expert_weights.LoRAExperts`)."""
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    h, i = cfg.hidden_size, cfg.moe_intermediate_size
    shapes = {"gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}  # (in, out)
    key = jax.random.PRNGKey(seed)
    weights: dict[str, Any] = {}
    slots_out: dict[str, Any] = {}
    for run, slots in expert_slots(cfg, experts, expert_shards).items():
        k = len(slot_rows(slots, expert_shards)[2])
        entry = {}
        for name in LORA_PROJECTIONS:
            fan_in, fan_out = shapes[name]
            key, sub = jax.random.split(key)
            bound = 1.0 / np.sqrt(fan_in)
            entry[name] = {
                LORA_A: jax.random.uniform(sub, (k, rank, fan_in), jnp.float32, -bound, bound),
                LORA_B: jnp.zeros((k, fan_out, rank), jnp.float32),
            }
        weights[run] = entry
        slots_out[run] = jnp.asarray(slots)
    slots_out[LORA_SCALE] = jnp.float32(alpha / rank)
    return TrainableExperts(weights, slots_out)


LORA_DENSE = "lora_dense"  # key of the dense-layer adapters in the trainable tree (never a run name)
DEFAULT_LORA_TARGETS = r"attn/(q|k|v|o)_proj/kernel$"


def init_dense_lora(
    params: dict[str, Any], patterns: list[str], rank: int, alpha: float, seed: int = 0
) -> TrainableExperts:
    """The LoRA baseline's trainable tree: adapters on every dense kernel whose ``/``-joined path
    matches one of ``patterns`` (default: attention q/k/v/o) — for a kernel ``[..., in, out]``
    (scanned runs stack ``n`` layers in front) ``lora_a [..., r, in]`` uniform in ±1/sqrt(in) and
    ``lora_b [..., out, r]`` zeros (PEFT's init) — as a subtree shaped like ``params`` under
    :data:`LORA_DENSE`, and ``slots`` = {``lora_scale``: alpha / r}. Experts are never targets."""
    import re

    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    out: dict[str, Any] = {}
    hits = dict.fromkeys(patterns, 0)
    key = jax.random.PRNGKey(seed)
    for keys, leaf in jax.tree_util.tree_flatten_with_path(params, is_leaf=lambda x: isinstance(x, QuantizedArray))[0]:
        path = _path(keys)
        matched = [p for p in patterns if re.search(p, path)]
        if not matched:
            continue
        if "moe/experts" in path or not path.endswith("kernel"):
            raise ValueError(f"LoRA target pattern(s) {matched} match {path}: dense kernels only (experts: rise_lora)")
        for p in matched:
            hits[p] += 1
        *lead, fan_in, fan_out = leaf.shape
        key, sub = jax.random.split(key)
        bound = 1.0 / np.sqrt(fan_in)
        node = out
        for name in path.split("/"):
            node = node.setdefault(name, {})
        node[LORA_A] = jax.random.uniform(sub, (*lead, rank, fan_in), jnp.float32, -bound, bound)
        node[LORA_B] = jnp.zeros((*lead, fan_out, rank), jnp.float32)
    missing = [p for p, n in hits.items() if n == 0]
    if missing:
        raise ValueError(
            f"LoRA target pattern(s) {missing} match no parameter; paths look like layers/attn/q_proj/kernel"
        )
    return TrainableExperts({LORA_DENSE: out}, {LORA_SCALE: jnp.float32(alpha / rank)})


def dense_lora_kernels(params: dict[str, Any], adapters: dict[str, Any], scale: Any) -> dict[str, Any]:
    """``W + scale · (B A)ᵀ`` for every kernel with adapters, as a subtree for :func:`overlay`
    (fp32; ``overlay`` casts back to the base dtype): the merged weights an export writes."""
    if LORA_A in adapters:
        return jax.lax.stop_gradient(as_float32(params)) + lora_delta(adapters[LORA_A], adapters[LORA_B], scale)
    return {k: dense_lora_kernels(params[k], sub, scale) for k, sub in adapters.items()}


def with_dense_adapters(params: dict[str, Any], adapters: dict[str, Any], scale: Any) -> dict[str, Any]:
    """``params`` with each adapted layer's ``lora_a`` and ``scale · lora_b`` placed beside its
    ``kernel``, where :class:`~rise_jax.models.layers.Dense` adds ``B (A dropout(x))`` to ``x W``
    (the training step's path: unmerged as in PEFT, so adapter dropout acts per token)."""
    out = dict(params)
    for key, sub in adapters.items():
        if LORA_A in sub:  # the adapters of out[key] (a kernel): beside it, in its layer
            out[LORA_A], out[LORA_B] = sub[LORA_A], scale * sub[LORA_B]
        else:
            out[key] = with_dense_adapters(params[key], sub, scale)
    return out


def expert_weights(trainable: TrainableExperts) -> dict[str, Any]:
    """The per-run expert entries of ``trainable.weights`` (the path-rule groups left out)."""
    return {run: w for run, w in trainable.weights.items() if run not in (EXTRA, LORA_DENSE)}


def as_float32(w: Any) -> jax.Array:
    """A (possibly quantized) weight block in fp32."""
    return w.astype(jnp.float32) if isinstance(w, QuantizedArray) else jnp.asarray(w, jnp.float32)


def merge_experts(params: dict[str, Any], trainable: TrainableExperts) -> dict[str, Any]:
    """Base params with the trained experts written back (cast to the base dtype)."""
    merged = jax.tree_util.tree_map(lambda x: x, params)  # new containers, same leaves
    merged = overlay(merged, trainable.weights.get(EXTRA))
    lora_scale = trainable.slots.get(LORA_SCALE)
    if LORA_DENSE in trainable.weights:
        merged = overlay(merged, dense_lora_kernels(merged, trainable.weights[LORA_DENSE], float(lora_scale)))
    for run, entry in expert_weights(trainable).items():
        slots = np.asarray(trainable.slots[run])
        li, ei = np.nonzero(slots >= 0)
        rows = slots[li, ei]
        experts = dict(merged[run]["moe"]["experts"])
        delta = None
        if lora_scale is not None:
            delta = {
                n: lora_delta(jnp.asarray(ad[LORA_A]), jnp.asarray(ad[LORA_B]), float(lora_scale))
                for n, ad in entry.items()
            }
        for name in entry:
            base = experts[name]
            if delta is None:
                values = jnp.asarray(entry[name])[rows]
            else:  # W + scale (B A)^T, in fp32, of the selected experts
                values = as_float32(base[li, ei]) + delta[name][rows]
            if isinstance(base, QuantizedArray):  # a quantized frozen base: requantized per expert
                experts[name] = base.set((li, ei), values)
            else:
                experts[name] = base.at[li, ei].set(values.astype(base.dtype))
        merged[run] = {**merged[run], "moe": {**merged[run]["moe"], "experts": experts}}
    return merged


def count_trainable(weights: dict[str, Any], slots: dict[str, Any] | None = None) -> int:
    """Values in ``weights``; with the ``slots`` of a trainable tree, only the rows a selected
    expert uses (an owner-grouped layout's unused rows are not trained parameters)."""
    total = 0
    for key, sub in weights.items():
        rows = None
        if slots is not None and key in slots and key not in (EXTRA, LORA_DENSE):
            rows = int((np.asarray(slots[key]) >= 0).sum())
        for x in jax.tree_util.tree_leaves(sub):
            total += int(np.prod(x.shape)) if rows is None else rows * int(np.prod(x.shape[1:]))
    return total
