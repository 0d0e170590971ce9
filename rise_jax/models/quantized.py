"""Frozen weights stored in int8 or fp8, dequantised where they are used (weight-only quantization).

RISE never updates the frozen weights, so they need not be held at training precision: a
:class:`QuantizedArray` stores a kernel ``w [..., in, out]`` as ``qvalue`` (int8 or
``float8_e4m3fn``) and one scale per output channel, ``scale [..., 1, out]`` (the absolute
maximum over the contraction axis divided by the format's largest value: 127 for int8, 448 for
e4m3fn). ``w ≈ qvalue · scale``; for int8 the error of every element is at most half a step,
``max|w| / 254`` of its channel.

A ``QuantizedArray`` sits in the params tree where the array was, and behaves like one for the
two things the model does with a frozen weight: index leading axes (``w[layer]``,
``w[experts]``: the expert weight sources of :mod:`rise_jax.models.expert_weights` read only the
experts a dispatch step uses) and ``astype(dtype)``, which dequantises. So every dispatch,
the decode path and the dense layers (:class:`~rise_jax.models.layers.Dense` calls
:func:`promote_dtype`) run unchanged, and a quantized stack is just the ``base`` of
:class:`~rise_jax.models.expert_weights.SubstitutedExperts` in training.

Which leaves are quantized (:func:`is_quantizable`, by group): the routed experts' gate/up/down,
the dense and shared-expert MLP kernels and the LM head by default, the attention q/k/v/o on
request. Embeddings, norms, biases, routers and the shared-expert gate stay as loaded (router
logits stay fp32, so routing changes only through the hidden states).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import struct
from flax.linen import dtypes as flax_dtypes

FROZEN_DTYPES = ("int8", "float8_e4m3fn")
_QMAX = {"int8": 127.0, "float8_e4m3fn": float(ml_dtypes.finfo(ml_dtypes.float8_e4m3fn).max)}


class QuantizedArray(struct.PyTreeNode):
    """``qvalue [..., in, out]`` (int8 / fp8) and ``scale [..., 1, out]`` (fp32); ``dtype`` is the
    dtype it dequantises to by default (the model's parameter dtype)."""

    qvalue: jax.Array
    scale: jax.Array
    dtype: Any = struct.field(pytree_node=False, default=jnp.bfloat16)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.qvalue.shape)

    @property
    def ndim(self) -> int:
        return len(self.qvalue.shape)

    @property
    def nbytes(self) -> int:
        return int(self.qvalue.size * self.qvalue.dtype.itemsize + self.scale.size * self.scale.dtype.itemsize)

    def __getitem__(self, index: Any) -> QuantizedArray:
        """Index leading axes (layers, experts); the last two axes are never indexed."""
        index = index if isinstance(index, tuple) else (index,)
        if len(index) > self.ndim - 2:
            raise IndexError(f"a QuantizedArray indexes its leading {self.ndim - 2} axes only, got {len(index)}")
        return self.replace(qvalue=self.qvalue[index], scale=self.scale[index])

    def astype(self, dtype: Any) -> jax.Array:
        """The dequantised weight ``qvalue · scale`` in ``dtype``."""
        return (self.qvalue.astype(jnp.float32) * self.scale.astype(jnp.float32)).astype(dtype)

    def dequantize(self) -> jax.Array:
        return self.astype(self.dtype)

    def set(self, index: Any, values: jax.Array) -> QuantizedArray:
        """A copy with ``values`` (full precision) quantized into ``self[index]`` (their own scales):
        how trained experts are merged into a quantized base for evaluation."""
        q, s = quantize(values, jnp.dtype(self.qvalue.dtype).name)
        return self.replace(qvalue=self.qvalue.at[index].set(q), scale=self.scale.at[index].set(s))


def promote_dtype(*args: Any, dtype: Any = None, inexact: bool = True) -> list[Any]:
    """Flax's ``promote_dtype`` that first dequantises :class:`QuantizedArray` kernels (called by
    :class:`~rise_jax.models.layers.Dense`, so the dense layers take quantized kernels unchanged)."""
    args = tuple(a.astype(dtype or a.dtype) if isinstance(a, QuantizedArray) else a for a in args)
    return flax_dtypes.promote_dtype(*args, dtype=dtype, inexact=inexact)


def quantize(w: Any, frozen_dtype: str) -> tuple[Any, Any]:
    """``(qvalue, scale)`` of a kernel ``[..., in, out]``: symmetric, one scale per output channel
    (absolute max over axis -2 / the format's max; an all-zero channel gets scale 1). NumPy in
    (the loader, per layer), NumPy out; a JAX array in (merging trained experts), JAX out."""
    if frozen_dtype not in _QMAX:
        raise ValueError(f"unknown frozen dtype {frozen_dtype!r}; choose one of {', '.join(FROZEN_DTYPES)}")
    xp = np if isinstance(w, np.ndarray) else jnp
    w = xp.asarray(w, np.float32)
    qmax = _QMAX[frozen_dtype]
    amax = xp.max(xp.abs(w), axis=-2, keepdims=True)
    scale = xp.where(amax > 0, amax / qmax, 1.0).astype(np.float32)
    x = w / scale
    if frozen_dtype == "int8":
        return xp.clip(xp.rint(x), -127, 127).astype(np.int8), scale
    return xp.clip(x, -qmax, qmax).astype(ml_dtypes.float8_e4m3fn), scale


QUANTIZED_GROUPS = ("experts", "mlp", "lm_head", "attention")
DEFAULT_GROUPS = ("experts", "mlp", "lm_head")


ATTENTION_KERNELS = (
    *("q_proj", "k_proj", "v_proj", "o_proj", "q_a_proj", "q_b_proj", "kv_a_proj", "kv_b_proj"),
    *("in_proj_qkvz", "in_proj_ba", "in_proj_qkv", "in_proj_z", "in_proj_b", "in_proj_a", "out_proj"),
)


def is_quantizable(path: tuple[str, ...], groups: tuple[str, ...] = DEFAULT_GROUPS) -> bool:
    """Whether the params leaf at ``path`` is a frozen kernel stored quantized, by group: the routed
    ``experts``' gate/up/down; ``mlp``: dense-layer and shared-expert MLP kernels; ``lm_head``;
    ``attention``: q/k/v/o, MLA's q_a/q_b/kv_a/kv_b and Gated DeltaNet's input / output projections
    (not by default: on the demo model int8 attention flips 1-2 % of the
    top-k sets per layer, as many as bf16 rounding does, for 3 % of Qwen3-30B-A3B's weights)."""
    name = path[-1]
    if "moe" in path and "experts" in path:
        return "experts" in groups and name in ("gate_proj", "up_proj", "down_proj")
    if name != "kernel" or len(path) < 2:
        return False
    if path[-2] == "lm_head":
        return "lm_head" in groups
    if path[-2] in ATTENTION_KERNELS:
        return "attention" in groups
    return path[-2] in ("gate_proj", "up_proj", "down_proj") and "mlp" in groups


def resolve_frozen_groups(value: str) -> tuple[str, ...]:
    """``config.model.frozen_groups`` (comma list) -> the groups :func:`is_quantizable` takes."""
    groups = tuple(g.strip() for g in value.split(",") if g.strip())
    unknown = [g for g in groups if g not in QUANTIZED_GROUPS]
    if unknown or not groups:
        raise ValueError(f"config.model.frozen_groups = {value!r}; choose from {', '.join(QUANTIZED_GROUPS)}")
    return groups


def resolve_frozen_dtype(value: str, param_dtype: str) -> str | None:
    """``config.model.frozen_dtype`` -> the quantized format, or None for "as loaded": ``""`` or
    the parameter dtype's own name (``bfloat16`` for a bf16 model) keep today's behaviour."""
    if value in ("", param_dtype):
        return None
    if value not in FROZEN_DTYPES:
        raise ValueError(
            f"config.model.frozen_dtype = {value!r}; choose {param_dtype!r} (or empty: as loaded), "
            f"{' or '.join(repr(f) for f in FROZEN_DTYPES)}"
        )
    return value


def check_backend(frozen_dtype: str) -> None:
    """Raise if this backend cannot dequantise ``frozen_dtype`` (fp8 needs the dtype in XLA)."""
    if frozen_dtype not in _QMAX:
        raise ValueError(f"unknown frozen dtype {frozen_dtype!r}; choose one of {', '.join(FROZEN_DTYPES)}")
    try:
        probe = jnp.asarray(np.ones((2, 2), np.float32)).astype(jnp.dtype(frozen_dtype))
        jax.block_until_ready(probe.astype(jnp.float32) @ probe.astype(jnp.float32))
    except Exception as err:  # noqa: BLE001 - any backend refusal means: no path for this dtype
        raise ValueError(
            f"frozen dtype {frozen_dtype} has neither a native nor an emulated path on the "
            f"{jax.default_backend()} backend ({type(err).__name__}: {err})"
        ) from err
