"""The routed expert's function: ``down(act(x·gate + b_g, x·up + b_u)) + b_d``.

:class:`ExpertTensors` is what a weight source hands a dispatch kernel (biases None when the
family has none); :class:`GatedActivation` the gated nonlinearity:

* ``silu`` (Qwen, PhiMoE, OLMoE, Mixtral): ``silu(g) · u``;
* ``clamped_swiglu`` (GPT-OSS ``GptOssExperts._apply_gate``): ``g' = min(g, L)``,
  ``u' = clip(u, -L, L)``, ``g' · sigmoid(α · g') · (u' + 1)``;
* ``gelu_tanh`` (Gemma-4, ``gelu_pytorch_tanh``): ``gelu_tanh(g) · u`` with the tanh
  approximation ``0.5·g·(1 + tanh(sqrt(2/π)·(g + 0.044715·g³)))``.

:func:`dense_activation` is the same function for a family's dense MLPs (``hidden_act``).

Every dispatch implementation computes the expert through :func:`expert_mlp`, so a new expert
function is a new activation here, never a new kernel.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rise_jax.models.config import ModelConfig

Array = jax.Array


class ExpertTensors(NamedTuple):
    """One or more experts' weights: gate/up ``[..., H, I]``, down ``[..., I, H]``, and (GPT-OSS)
    biases gate/up ``[..., I]``, down ``[..., H]``; ``...`` is whatever expert axes the caller asked for."""

    gate: Array
    up: Array
    down: Array
    gate_bias: Array | None = None
    up_bias: Array | None = None
    down_bias: Array | None = None


# The params-tree names of the ExpertTensors fields, in field order (``moe/experts/<name>``).
PARAM_NAMES = ("gate_proj", "up_proj", "down_proj", "gate_bias", "up_bias", "down_bias")


@dataclasses.dataclass(frozen=True)
class GatedActivation:
    kind: str = "silu"
    alpha: float = 1.702
    limit: float = 7.0

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> GatedActivation:
        if cfg.expert_act == "clamped_swiglu":
            return cls("clamped_swiglu", cfg.swiglu_alpha, cfg.swiglu_limit)
        return cls(cfg.expert_act)

    def __call__(self, g: Array, u: Array) -> Array:
        if self.kind == "silu":
            return jax.nn.silu(g) * u
        if self.kind == "gelu_tanh":
            return jax.nn.gelu(g, approximate=True) * u
        g = jnp.minimum(g, self.limit)
        u = jnp.clip(u, -self.limit, self.limit)
        return g * jax.nn.sigmoid(g * self.alpha) * (u + 1)

    def vjp(self, g: Array, u: Array, dh: Array) -> tuple[Array, Array]:
        """(d g, d u) in fp32, from the pre-activations and the output cotangent ``dh``."""
        _, pull = jax.vjp(self, g.astype(jnp.float32), u.astype(jnp.float32))
        return pull(dh.astype(jnp.float32))


SILU = GatedActivation()

# HF ``hidden_act`` / ``hidden_activation`` names -> the gated activation of a dense MLP.
DENSE_ACTIVATIONS = {"silu": "silu", "gelu_pytorch_tanh": "gelu_tanh"}


def dense_activation(cfg: ModelConfig) -> GatedActivation:
    """The gated activation of the family's dense MLPs (shared experts, dense layers)."""
    return GatedActivation(DENSE_ACTIVATIONS[cfg.hidden_act])


def linear(x: Array, w: Array, b: Array | None) -> Array:
    """``x @ w (+ b)``; ``x`` ``[..., R, in]``, ``w`` ``[..., in, out]``, ``b`` ``[..., out]``."""
    y = x @ w
    return y if b is None else y + b[..., None, :].astype(y.dtype)


def expert_mlp(x: Array, w: ExpertTensors, act: GatedActivation) -> Array:
    """The expert MLP on rows ``x`` ``[..., R, H]`` with weights ``w`` (batched over leading axes)."""
    h = act(linear(x, w.gate, w.gate_bias), linear(x, w.up, w.up_bias))
    return linear(h, w.down, w.down_bias)
