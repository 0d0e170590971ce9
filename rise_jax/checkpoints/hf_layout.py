"""Where each leaf of our params tree lives in an HF checkpoint, for both families.

A :class:`LeafSpec` says how one stacked leaf is assembled: from one tensor (global leaves), one
tensor per layer (``{l}`` in the name), or one tensor per layer and expert (hub layout,
``{l}``/``{e}``), or — for experts — from a fused per-layer tensor ``[E, ...]`` as newer
transformers versions hold them in memory (``gate_up_proj`` ``[E, 2I, H]``, ``down_proj``
``[E, H, I]``). HF linear weights are ``[out, in]``; our kernels are ``[in, out]``.
"""

from __future__ import annotations

import dataclasses

from rise_jax.models.config import ModelConfig
from rise_jax.models.layout import layer_runs


@dataclasses.dataclass(frozen=True)
class FusedSource:
    """An expert leaf read from a fused ``[E, rows, cols]`` tensor: rows ``[lo, hi)``, then transposed."""

    name: str  # with {l}
    row_lo: int
    row_hi: int


@dataclasses.dataclass(frozen=True)
class LeafSpec:
    path: tuple[str, ...]  # path in the params tree
    shape: tuple[int, ...]  # our shape (stacked)
    hf_name: str  # hub-layout tensor name, with {l} and {e} placeholders where stacked
    transpose: bool  # HF [out, in] -> our [in, out] (last two axes)
    layers: tuple[int, ...] | None = None  # decoder layers stacked on axis 0
    per_expert: bool = False
    fused: FusedSource | None = None

    def hf_shape(self) -> tuple[int, ...]:
        """Shape of one hub-layout HF tensor feeding this leaf."""
        inner = self.shape[(1 if self.layers is not None else 0) + (1 if self.per_expert else 0) :]
        return tuple(reversed(inner)) if self.transpose else tuple(inner)


_NAMES = {
    "qwen3_moe": {
        "moe_prefix": "mlp",
        "router": "mlp.gate.weight",
        "fused_router": "mlp.gate.weight",
        "experts": {"gate_proj": "gate_proj", "up_proj": "up_proj", "down_proj": "down_proj"},
    },
    "phimoe": {
        "moe_prefix": "block_sparse_moe",
        "router": "block_sparse_moe.gate.weight",
        "fused_router": "mlp.router.weight",
        "experts": {"gate_proj": "w1", "up_proj": "w3", "down_proj": "w2"},
    },
}


def leaf_specs(cfg: ModelConfig) -> list[LeafSpec]:
    """Every leaf of the params tree of ``cfg``, in HF checkpoint order."""
    names = _NAMES[cfg.model_type]
    h, v = cfg.hidden_size, cfg.vocab_size
    qd, kvd = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    specs = [LeafSpec(("embed_tokens", "embedding"), (v, h), "model.embed_tokens.weight", False)]
    norm_parts = [("scale", "weight"), ("bias", "bias")] if cfg.uses_layer_norm else [("scale", "weight")]
    for run in layer_runs(cfg):
        n, layers = run.length, tuple(range(run.start, run.start + run.length))
        pre = "model.layers.{l}."

        def stacked(path, shape, hf, transpose, _run=run, _layers=layers, _n=n):
            return LeafSpec((_run.name, *path), (_n, *shape), pre + hf, transpose, _layers)

        for ours, hf in (("input_norm", "input_layernorm"), ("post_attention_norm", "post_attention_layernorm")):
            specs += [stacked((ours, p), (h,), f"{hf}.{w}", False) for p, w in norm_parts]
        for proj, out in (("q_proj", qd), ("k_proj", kvd), ("v_proj", kvd), ("o_proj", h)):
            inp = qd if proj == "o_proj" else h
            specs.append(stacked(("attn", proj, "kernel"), (inp, out), f"self_attn.{proj}.weight", True))
            if cfg.attention_bias:
                specs.append(stacked(("attn", proj, "bias"), (out,), f"self_attn.{proj}.bias", False))
        if cfg.uses_qk_norm:
            for nm in ("q_norm", "k_norm"):
                specs.append(stacked(("attn", nm, "scale"), (cfg.head_dim,), f"self_attn.{nm}.weight", False))
        if run.is_moe:
            e, i = cfg.num_experts, cfg.moe_intermediate_size
            specs.append(stacked(("moe", "router"), (h, e), names["router"], True))
            for ours, hfw in names["experts"].items():
                shape = (e, i, h) if ours == "down_proj" else (e, h, i)
                if ours == "down_proj":
                    fused = FusedSource(pre + "mlp.experts.down_proj", 0, h)
                elif ours == "gate_proj":
                    fused = FusedSource(pre + "mlp.experts.gate_up_proj", 0, i)
                else:
                    fused = FusedSource(pre + "mlp.experts.gate_up_proj", i, 2 * i)
                specs.append(
                    LeafSpec(
                        (run.name, "moe", "experts", ours),
                        (n, *shape),
                        pre + f"{names['moe_prefix']}.experts.{{e}}.{hfw}.weight",
                        True,
                        layers,
                        per_expert=True,
                        fused=fused,
                    )
                )
        else:
            i = cfg.intermediate_size
            for proj, shape in (("gate_proj", (h, i)), ("up_proj", (h, i)), ("down_proj", (i, h))):
                specs.append(stacked(("mlp", proj, "kernel"), shape, f"mlp.{proj}.weight", True))
    specs += [LeafSpec(("final_norm", p), (h,), f"model.norm.{w}", False) for p, w in norm_parts]
    if not cfg.tie_word_embeddings:
        specs.append(LeafSpec(("lm_head", "kernel"), (h, v), "lm_head.weight", True))
        if cfg.lm_head_bias:
            specs.append(LeafSpec(("lm_head", "bias"), (v,), "lm_head.bias", False))
    return specs


def fused_router_name(cfg: ModelConfig) -> str:
    """Router name next to fused experts (transformers' in-memory naming)."""
    return "model.layers.{l}." + _NAMES[cfg.model_type]["fused_router"]
