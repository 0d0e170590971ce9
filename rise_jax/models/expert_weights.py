"""Expert weight sources: where the routed experts' weights come from.

Every MoE dispatch implementation (:mod:`rise_jax.models.dispatch`) computes the expert MLP
(:func:`~rise_jax.models.expert_mlp.expert_mlp`: ``down(act(x @ gate + b, x @ up + b)) + b``) for
each token's experts and never asks how those weights are held: it calls a *source*. A source is
a pytree (``flax.struct``) with

* :meth:`ExpertWeights.take` ``(experts, dtype) ->``
  :class:`~rise_jax.models.expert_mlp.ExpertTensors` (gate ``[..., H, I]``, up, down
  ``[..., I, H]``, biases or None) for an int array of expert ids of any shape (a scalar inside
  the ``grouped_scan`` walk, one id per row block in ``blocked``), cast to the compute ``dtype``.
  Only the requested experts are read, so a source may hold its weights in any form and
  materialise them here;
* :attr:`ExpertWeights.activation`: the gated nonlinearity (silu, or GPT-OSS's clamped SwiGLU);
* :meth:`ExpertWeights.take_all` ``(dtype)``: every expert (``dense`` and ``ragged`` multiply all
  of them; the ``grouped_scan`` backward pass transposes them);
* :meth:`ExpertWeights.params` / :meth:`ExpertWeights.with_params`: the differentiable leaves and
  the source rebuilt from new ones. The ``grouped_scan`` custom VJP differentiates
  ``with_params(p).take_all(dtype)`` with respect to ``p`` to turn per-expert weight gradients
  into gradients of those leaves, so a new source needs no VJP of its own;
* :meth:`ExpertWeights.trainable` (bool ``[E]`` or None): the experts whose weights can receive
  a gradient, so kernels skip the weight-gradient work of the others.

The sources today:

* :class:`StackedExperts` — one layer's ``[E, ...]`` parameters (plain forward, pretraining);
* :class:`SubstitutedExperts` — subnetwork training: expert ``e`` uses a trainable fp32 copy
  ``trained[slots[e]]`` when ``slots[e] >= 0``, else the gradient-stopped base source;
* :class:`StackLayerExperts` — decoding: layer ``layer`` of the un-sliced ``[L, E, ...]``
  parameters, read expert by expert instead of copying the layer's whole slice (forward only).

Quantized frozen weights need no source of their own: a
:class:`~rise_jax.models.quantized.QuantizedArray` (int8 / fp8 values and per-output-channel
scales) stands where an array stood and supports what the stored sources do with their weights —
``w[experts]`` and ``w[layer, experts]`` index the packed values and scales, ``.astype(dtype)``
dequantises — so ``StackedExperts`` / ``StackLayerExperts`` over quantized stacks dequantise only
the experts a walk step or block reads, and such a stack is the ``base`` of
:class:`SubstitutedExperts`, whose trainable copies stay fp32.

* :class:`LoRAExperts` — RISE+LoRA: per selected expert low-rank adapters ``A [K, r, in]``,
  ``B [K, out, r]`` (PEFT's layout) on gate/up/down with the same slot table; ``take`` returns
  ``W + (alpha / r) · (B A)ᵀ`` for experts with a slot and the gradient-stopped base otherwise;
  ``params()`` are the adapters, so gradients reach only them (no kernel knows about LoRA).
"""

from __future__ import annotations

import abc
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from jax.sharding import PartitionSpec

from rise_jax.models.expert_mlp import PARAM_NAMES, SILU, ExpertTensors, GatedActivation

Array = jax.Array


class ExpertWeights(struct.PyTreeNode, abc.ABC):
    """The interface every source implements (see the module docstring); ``num_experts``,
    ``dtype`` and ``take`` are required, the rest have defaults for frozen sources."""

    @property
    @abc.abstractmethod
    def num_experts(self) -> int: ...

    @property
    @abc.abstractmethod
    def dtype(self) -> Any:
        """The dtype the weights are stored in (trained copies are rounded through it)."""

    @abc.abstractmethod
    def take(self, experts: Array, dtype: Any) -> ExpertTensors: ...

    def take_all(self, dtype: Any) -> ExpertTensors:
        return self.take(jnp.arange(self.num_experts, dtype=jnp.int32), dtype)

    @property
    def activation(self) -> GatedActivation:
        return SILU

    def params(self) -> Any:
        """The leaves gradients flow to (``()`` for a frozen source)."""
        return ()

    def with_params(self, params: Any) -> ExpertWeights:
        del params
        return self

    def trainable(self) -> Array | None:
        """bool ``[E]``: experts whose weights can get a gradient; None means every expert."""
        return None

    def expert_specs(self, axis: str) -> ExpertWeights:
        """This source with every leaf replaced by its :class:`PartitionSpec` for expert
        parallelism (:mod:`rise_jax.models.expert_parallel`): the axis that indexes experts (or
        the rows of trainable copies, grouped by owner) split over mesh axis ``axis``, the rest
        replicated. Default: every leaf indexes experts on its first axis."""
        return _specs(self, 0, axis)

    def localize(self, shard: Array) -> ExpertWeights:
        """Inside an expert-parallel ``shard_map``: this device's part of the source (its leaves
        are already the local blocks; sources with slot tables turn global rows into local ones).
        ``shard`` is the device's index along the expert axis."""
        del shard
        return self


def _specs(tree: Any, expert_axis: int, axis: str) -> Any:
    """Every leaf of ``tree`` split over ``axis`` on its ``expert_axis``."""
    return jax.tree_util.tree_map(lambda _: PartitionSpec(*([None] * expert_axis), axis), tree)


def _cast(ws: ExpertTensors, dtype: Any) -> ExpertTensors:
    return ExpertTensors(*(None if w is None else w.astype(dtype) for w in ws))


def _stopped(ws: ExpertTensors, dtype: Any) -> ExpertTensors:
    """Frozen weights: gradient-stopped, cast to ``dtype``."""
    return _cast(jax.tree_util.tree_map(jax.lax.stop_gradient, ws), dtype)


class _Stored(ExpertWeights):
    """A source holding the projections as arrays (stored dtype = theirs); ``bias`` (GPT-OSS) is
    (gate ``[E, I]``, up ``[E, I]``, down ``[E, H]``) and ``act`` the expert activation."""

    gate: Array
    up: Array
    down: Array

    @property
    def dtype(self) -> Any:
        return self.gate.dtype

    @property
    def activation(self) -> GatedActivation:
        return self.act

    def _tensors(self) -> ExpertTensors:
        return ExpertTensors(self.gate, self.up, self.down, *(self.bias or ()))


class StackedExperts(_Stored):
    """One layer's stacked weights: gate/up ``[E, H, I]``, down ``[E, I, H]`` (+ biases).

    ``need_grad`` (bool ``[E]``, optional) limits weight gradients to those experts: the others'
    weights are gradient-stopped here, and ``grouped_scan`` also skips their weight-gradient work."""

    need_grad: Array | None = None
    bias: tuple[Array, Array, Array] | None = None
    act: GatedActivation = struct.field(pytree_node=False, default=SILU)

    @property
    def num_experts(self) -> int:
        return self.gate.shape[0]

    def _frozen_stopped(self, ws: ExpertTensors, need: Array | None) -> ExpertTensors:
        if need is None:
            return ws

        def stop(w):
            if w is None:
                return None
            mask = need.reshape(need.shape + (1,) * (w.ndim - need.ndim))
            return jnp.where(mask, w, jax.lax.stop_gradient(w))

        return ExpertTensors(*(stop(w) for w in ws))

    def take(self, experts: Array, dtype: Any) -> ExpertTensors:
        ws = ExpertTensors(*(None if w is None else w[experts].astype(dtype) for w in self._tensors()))
        return self._frozen_stopped(ws, None if self.need_grad is None else self.need_grad[experts])

    def take_all(self, dtype: Any) -> ExpertTensors:
        return self._frozen_stopped(_cast(self._tensors(), dtype), self.need_grad)

    def params(self) -> ExpertTensors:
        return self._tensors()

    def with_params(self, params: ExpertTensors) -> StackedExperts:
        gate, up, down, *bias = params
        return self.replace(gate=gate, up=up, down=down, bias=None if bias[0] is None else tuple(bias))

    def trainable(self) -> Array | None:
        return self.need_grad


class _OverBase(ExpertWeights):
    """A source that changes the experts with a slot (``slots[e] >= 0``) of a ``base`` source and
    passes the others through gradient-stopped; subclasses declare the fields ``base`` and
    ``slots`` and say in ``_combine`` what a slotted expert becomes."""

    @property
    def num_experts(self) -> int:
        return self.base.num_experts

    @property
    def dtype(self) -> Any:
        return self.base.dtype

    @property
    def activation(self) -> GatedActivation:
        return self.base.activation

    @abc.abstractmethod
    def _combine(self, base: ExpertTensors, s: Array, dtype: Any) -> ExpertTensors: ...

    def take(self, experts: Array, dtype: Any) -> ExpertTensors:
        base, s = self.base.take(experts, self.base.dtype), self.slots[experts]
        if jnp.ndim(experts) == 0:  # one expert (a grouped_scan walk step): build its change only if slotted
            return jax.lax.cond(s >= 0, lambda: self._combine(base, s, dtype), lambda: _stopped(base, dtype))
        return self._combine(base, s, dtype)

    def take_all(self, dtype: Any) -> ExpertTensors:
        return self._combine(self.base.take_all(self.base.dtype), self.slots, dtype)

    def trainable(self) -> Array:
        return self.slots >= 0

    def expert_specs(self, axis: str) -> _OverBase:
        # Slot tables split with their experts; the trainable rows split in owner-grouped blocks
        # (rise_jax.training.partition.expert_slots with ``shards``); scalars replicated.
        specs = _specs(self, 0, axis).replace(base=self.base.expert_specs(axis))
        return specs.replace(**{f: PartitionSpec() for f in self._replicated})

    def localize(self, shard: Array) -> _OverBase:
        """Global rows ``slots[e]`` -> rows of this device's block (``rows`` per device)."""
        rows = jax.tree_util.tree_leaves(self.params())[0].shape[0]
        local = jnp.where(self.slots >= 0, self.slots - shard * rows, -1)
        return self.replace(base=self.base.localize(shard), slots=local)

    _replicated = ()  # fields replicated on every device (a class attribute, not a field)


class SubstitutedExperts(_OverBase):
    """Subnetwork training: expert ``e`` takes ``trained[·][slots[e]]`` (fp32 masters ``[K, ...]``)
    when ``slots[e] >= 0`` and the gradient-stopped ``base`` otherwise. Trained copies pass through
    the base's storage dtype first, so a bf16 model computes with bf16-rounded masters; gradients
    reach ``trained`` only, and only the K substituted experts get any."""

    base: ExpertWeights
    trained: ExpertTensors  # fp32 [K, ...] (biases None when the family has none)
    slots: Array  # int32 [E]

    def _combine(self, base: ExpertTensors, s: Array, dtype: Any) -> ExpertTensors:
        safe = jnp.maximum(s, 0)

        def one(b, t):
            if b is None:
                return None
            use = (s >= 0).reshape(s.shape + (1,) * (b.ndim - s.ndim))
            return jnp.where(use, t[safe].astype(self.base.dtype).astype(dtype), jax.lax.stop_gradient(b).astype(dtype))

        return ExpertTensors(*(one(b, t) for b, t in zip(base, ExpertTensors(*self.trained), strict=True)))

    def params(self) -> ExpertTensors:
        return ExpertTensors(*self.trained)

    def with_params(self, params: ExpertTensors) -> SubstitutedExperts:
        return self.replace(trained=ExpertTensors(*params))


LORA_A, LORA_B = "lora_a", "lora_b"


def lora_delta(a: Array, b: Array, scale: Any) -> Array:
    """``scale · (B A)ᵀ`` ``[..., in, out]`` from PEFT-layout adapters ``A [..., r, in]``,
    ``B [..., out, r]``: what LoRA adds to one of our ``[in, out]`` kernels."""
    return scale * jnp.einsum("...ri,...or->...io", a, b)


class LoRAExperts(_OverBase):
    """RISE+LoRA: expert ``e`` with ``slots[e] >= 0`` uses ``W_e + scale · (B A)ᵀ`` with its
    adapters ``adapters[proj] = {lora_a: [K, r, in], lora_b: [K, out, r]}`` (fp32; our weights are
    ``[in, out]``, PEFT's ``[out, in]``, hence the transpose); the others use the gradient-stopped
    ``base``. With B = 0 (PEFT's init) this is exactly the base model.

    Cost: a walk step (one expert) forms ``(B A)ᵀ`` only when that expert has a slot; a call for
    more experts than there are adapter rows (``take_all``, whose pull-back gives the adapters'
    gradients) forms it once per row and gathers, so its VJP contracts K rows, not all E experts
    (measured: a mid-size layer's fwd + bwd went from 1.2× to 0.9× of full-expert training)."""

    base: ExpertWeights
    adapters: dict[str, dict[str, Array]]
    slots: Array  # int32 [E]
    scale: Array  # alpha / r

    _replicated = ("scale",)

    def _combine(self, base: ExpertTensors, s: Array, dtype: Any) -> ExpertTensors:
        safe, use = jnp.maximum(s, 0), s >= 0
        rows = jax.tree_util.tree_leaves(self.adapters)[0].shape[0]
        out = []
        for name, w in zip(PARAM_NAMES, base, strict=True):
            if w is None or name not in self.adapters:  # biases stay frozen
                out.append(None if w is None else jax.lax.stop_gradient(w).astype(dtype))
                continue
            a, b = self.adapters[name][LORA_A], self.adapters[name][LORA_B]
            if s.size > rows:  # more experts asked for than adapter rows: form each row's product once
                delta = lora_delta(a, b, self.scale)[safe]
            else:
                delta = lora_delta(a[safe], b[safe], self.scale)
            frozen = jax.lax.stop_gradient(w).astype(jnp.float32)
            mask = use.reshape(use.shape + (1,) * (w.ndim - use.ndim))
            out.append(jnp.where(mask, frozen + delta, frozen).astype(dtype))
        return ExpertTensors(*out)

    def params(self) -> dict[str, dict[str, Array]]:
        return self.adapters

    def with_params(self, params: dict[str, dict[str, Array]]) -> LoRAExperts:
        return self.replace(adapters=params)


class StackLayerExperts(_Stored):
    """Layer ``layer`` of the un-sliced stacked ``[L, E, ...]`` parameters, forward only.

    Inside a scan over layers, ``nn.scan`` would hand each layer a copy of its ``[E, ...]`` slice;
    in a forward that is never differentiated (decoding, replay, evaluation) that copy is wasted
    work, so this source indexes ``[layer, expert]`` straight out of the stack, casting per
    expert. Its weights are gradient-stopped: nothing trains through it."""

    layer: Array  # int32 scalar
    bias: tuple[Array, Array, Array] | None = None  # [L, E, ...] like the weights
    act: GatedActivation = struct.field(pytree_node=False, default=SILU)

    @property
    def num_experts(self) -> int:
        return self.gate.shape[1]

    def take(self, experts: Array, dtype: Any) -> ExpertTensors:
        ws = ExpertTensors(*(None if w is None else w[self.layer, experts] for w in self._tensors()))
        return _stopped(ws, dtype)

    def expert_specs(self, axis: str) -> StackLayerExperts:
        return _specs(self, 1, axis).replace(layer=PartitionSpec())

    def take_all(self, dtype: Any) -> ExpertTensors:
        return _stopped(ExpertTensors(*(None if w is None else w[self.layer] for w in self._tensors())), dtype)

    def trainable(self) -> Array:
        return jnp.zeros((self.num_experts,), bool)
