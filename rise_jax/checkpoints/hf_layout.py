"""Where each leaf of our params tree lives in an HF checkpoint, for every family.

A :class:`LeafSpec` says how one stacked leaf is assembled: from one tensor (global leaves), one
tensor per layer (``{l}`` in the name), or one tensor per layer and expert (hub layout,
``{l}``/``{e}``), or — for experts — from a fused per-layer tensor ``[E, ...]``
(:class:`FusedSource`) as newer transformers versions hold them in memory and as GPT-OSS's hub
checkpoints store them. HF linear weights are ``[out, in]``; our kernels are ``[in, out]``.
The tensor names come from the family's :class:`~rise_jax.models.families.HFNames`.
"""

from __future__ import annotations

import dataclasses

from rise_jax.models.config import ModelConfig
from rise_jax.models.families import get_family
from rise_jax.models.layout import layer_runs


@dataclasses.dataclass(frozen=True)
class FusedSource:
    """An expert leaf read from a fused ``[E, *shape]`` tensor: expert ``e``'s leaf is
    ``fused[e][index]``, transposed when ``transpose`` (HF ``[out, in]`` -> ours ``[in, out]``)."""

    name: str  # with {l}
    shape: tuple[int, ...]  # one expert's slice of the fused tensor
    index: tuple[slice, ...]
    transpose: bool


@dataclasses.dataclass(frozen=True)
class LeafSpec:
    path: tuple[str, ...]  # path in the params tree
    shape: tuple[int, ...]  # our shape (stacked)
    hf_name: str | None  # hub-layout tensor name ({l}/{e} placeholders); None: fused only
    transpose: bool  # HF [out, in] -> our [in, out] (last two axes)
    layers: tuple[int, ...] | None = None  # decoder layers stacked on axis 0
    per_expert: bool = False
    fused: FusedSource | None = None
    alt_name: str | None = None  # another name the same per-layer tensor is saved under
    dtype: str | None = None  # kept in this dtype whatever the model's (transformers keeps it fp32)

    def hf_shape(self) -> tuple[int, ...]:
        """Shape of one hub-layout HF tensor feeding this leaf."""
        inner = self.shape[(1 if self.layers is not None else 0) + (1 if self.per_expert else 0) :]
        return tuple(reversed(inner)) if self.transpose else tuple(inner)


def _fused_sources(cfg: ModelConfig, pre: str) -> dict[str, FusedSource]:
    """Our expert leaf -> its place in the fused ``gate_up_proj`` / ``down_proj`` (and biases)."""
    h, i = cfg.hidden_size, cfg.moe_intermediate_size
    names = get_family(cfg.model_type).names
    gu, dn = f"{pre}{names.fused_prefix}.gate_up_proj", f"{pre}{names.fused_prefix}.down_proj"
    every = slice(None)
    if names.fused == "halves":  # [E, H, 2I]: gate columns then up columns (Llama-4)
        return {
            "gate_proj": FusedSource(gu, (h, 2 * i), (every, slice(0, i)), False),
            "up_proj": FusedSource(gu, (h, 2 * i), (every, slice(i, 2 * i)), False),
            "down_proj": FusedSource(dn, (i, h), (), False),
        }
    if names.fused == "interleaved":  # [E, H, 2I], gate even / up odd columns
        return {
            "gate_proj": FusedSource(gu, (h, 2 * i), (every, slice(0, None, 2)), False),
            "up_proj": FusedSource(gu, (h, 2 * i), (every, slice(1, None, 2)), False),
            "down_proj": FusedSource(dn, (i, h), (), False),
            "gate_bias": FusedSource(gu + "_bias", (2 * i,), (slice(0, None, 2),), False),
            "up_bias": FusedSource(gu + "_bias", (2 * i,), (slice(1, None, 2),), False),
            "down_bias": FusedSource(dn + "_bias", (h,), (), False),
        }
    return {  # [E, 2I, H]: gate rows then up rows
        "gate_proj": FusedSource(gu, (2 * i, h), (slice(0, i),), True),
        "up_proj": FusedSource(gu, (2 * i, h), (slice(i, 2 * i),), True),
        "down_proj": FusedSource(dn, (h, i), (), True),
        "gate_bias": FusedSource(gu + "_bias", (2 * i,), (slice(0, i),), False),
        "up_bias": FusedSource(gu + "_bias", (2 * i,), (slice(i, 2 * i),), False),
        "down_bias": FusedSource(dn + "_bias", (h,), (), False),
    }


def expert_leaf_shape(cfg: ModelConfig, name: str) -> tuple[int, ...]:
    """One expert's shape of leaf ``name`` (``gate_proj`` ``[H, I]``, ``down_bias`` ``[H]`` ...)."""
    h, i = cfg.hidden_size, cfg.moe_intermediate_size
    return {
        "gate_proj": (h, i),
        "up_proj": (h, i),
        "down_proj": (i, h),
        "gate_bias": (i,),
        "up_bias": (i,),
        "down_bias": (h,),
    }[name]


def _mla_specs(cfg: ModelConfig, stacked) -> list[LeafSpec]:
    """Multi-head Latent Attention's leaves (:class:`~rise_jax.models.layers.MLAttention`) and the
    DeepSeek tensor names under ``self_attn.``."""
    h, n, r = cfg.hidden_size, cfg.num_heads, cfg.kv_lora_rank
    qk, dn, dv = cfg.qk_head_dim, cfg.qk_nope_head_dim, cfg.v_head_dim
    a = "self_attn."
    out = []
    if cfg.q_lora_rank is None:
        out.append(stacked(("attn", "q_proj", "kernel"), (h, n * qk), a + "q_proj.weight", True))
    else:
        qr = cfg.q_lora_rank
        out.append(stacked(("attn", "q_a_proj", "kernel"), (h, qr), a + "q_a_proj.weight", True))
        if cfg.qkv_bias:
            out.append(stacked(("attn", "q_a_proj", "bias"), (qr,), a + "q_a_proj.bias", False))
        out.append(stacked(("attn", "q_a_norm", "scale"), (qr,), a + "q_a_layernorm.weight", False))
        out.append(stacked(("attn", "q_b_proj", "kernel"), (qr, n * qk), a + "q_b_proj.weight", True))
    out.append(stacked(("attn", "kv_a_proj", "kernel"), (h, r + cfg.head_dim), a + "kv_a_proj_with_mqa.weight", True))
    if cfg.qkv_bias:
        out.append(stacked(("attn", "kv_a_proj", "bias"), (r + cfg.head_dim,), a + "kv_a_proj_with_mqa.bias", False))
    out.append(stacked(("attn", "kv_a_norm", "scale"), (r,), a + "kv_a_layernorm.weight", False))
    out.append(stacked(("attn", "kv_b_proj", "kernel"), (r, n * (dn + dv)), a + "kv_b_proj.weight", True))
    out.append(stacked(("attn", "o_proj", "kernel"), (n * dv, h), a + "o_proj.weight", True))
    if cfg.o_bias:
        out.append(stacked(("attn", "o_proj", "bias"), (h,), a + "o_proj.bias", False))
    return out


def _linear_attention_specs(cfg: ModelConfig, stacked) -> list[LeafSpec]:
    """Gated DeltaNet's leaves (:class:`~rise_jax.models.linear_attention.GatedDeltaNet`) and
    their tensors under ``linear_attn.`` (Qwen3-Next's fused ``in_proj_qkvz`` / ``in_proj_ba`` or
    Qwen3.5's four projections; ``conv1d.weight`` kept in torch's ``[conv_dim, 1, K]``)."""
    lin, h = cfg.linear, cfg.hidden_size
    a = "linear_attn."
    if lin.projection == "qkvz":
        widths = {"in_proj_qkvz": 2 * lin.key_dim + 2 * lin.value_dim, "in_proj_ba": 2 * lin.num_v_heads}
    else:
        widths = {
            "in_proj_qkv": lin.conv_dim,
            "in_proj_z": lin.value_dim,
            "in_proj_b": lin.num_v_heads,
            "in_proj_a": lin.num_v_heads,
        }
    out = [stacked(("linear_attn", p, "kernel"), (h, w), f"{a}{p}.weight", True) for p, w in widths.items()]
    conv = (lin.conv_dim, 1, lin.conv_kernel)
    out.append(stacked(("linear_attn", "conv_weight"), conv, a + "conv1d.weight", False))
    out.append(stacked(("linear_attn", "A_log"), (lin.num_v_heads,), a + "A_log", False))
    out.append(stacked(("linear_attn", "dt_bias"), (lin.num_v_heads,), a + "dt_bias", False))
    out.append(stacked(("linear_attn", "norm", "scale"), (lin.v_head_dim,), a + "norm.weight", False))
    out.append(stacked(("linear_attn", "out_proj", "kernel"), (lin.value_dim, h), a + "out_proj.weight", True))
    return out


# Our norm -> its HF name in every layer (Gemma-4's layer has five more: Gemma4TextDecoderLayer).
LAYER_NORMS = {"input_norm": "input_layernorm", "post_attention_norm": "post_attention_layernorm"}
GEMMA4_NORMS = {
    **LAYER_NORMS,
    "pre_feedforward_norm": "pre_feedforward_layernorm",
    "post_feedforward_norm": "post_feedforward_layernorm",
    "post_feedforward_norm_1": "post_feedforward_layernorm_1",
    "pre_feedforward_norm_2": "pre_feedforward_layernorm_2",
    "post_feedforward_norm_2": "post_feedforward_layernorm_2",
}


def leaf_specs(cfg: ModelConfig) -> list[LeafSpec]:
    """Every leaf of the params tree of ``cfg``, in HF checkpoint order."""
    names = get_family(cfg.model_type).names
    h, v = cfg.hidden_size, cfg.vocab_size
    model = names.text_prefix
    specs = [LeafSpec(("embed_tokens", "embedding"), (v, h), model + "embed_tokens.weight", False)]
    norm_parts = [("scale", "weight"), ("bias", "bias")] if cfg.norm == "layer" else [("scale", "weight")]
    gemma4 = cfg.decoder_layer == "gemma4"
    for run in layer_runs(cfg):
        n, layers = run.length, tuple(range(run.start, run.start + run.length))
        pre = model + "layers.{l}."
        attn_cfg = cfg.attention_config(run.sliding)  # the run's head width and kv heads
        qd, kvd = cfg.num_heads * attn_cfg.head_dim, attn_cfg.num_kv_heads * attn_cfg.head_dim

        def stacked(path, shape, hf, transpose, alt=None, _run=run, _layers=layers, _n=n):
            return LeafSpec((_run.name, *path), (_n, *shape), pre + hf, transpose, _layers, alt_name=alt)

        for ours, hf in (GEMMA4_NORMS if gemma4 else LAYER_NORMS).items():
            specs += [stacked((ours, p), (h,), f"{hf}.{w}", False) for p, w in norm_parts]
        if run.linear:
            specs += _linear_attention_specs(cfg, stacked)
        elif cfg.attention == "mla":
            specs += _mla_specs(cfg, stacked)
        else:
            q_width = 2 * qd if cfg.attn_output_gate else qd  # [query, gate] per head
            projections = (("q_proj", q_width), ("k_proj", kvd), ("v_proj", kvd), ("o_proj", h))
            for proj, out in (p for p in projections if not (attn_cfg.k_eq_v and p[0] == "v_proj")):
                inp = qd if proj == "o_proj" else h
                specs.append(stacked(("attn", proj, "kernel"), (inp, out), f"self_attn.{proj}.weight", True))
                if cfg.o_bias if proj == "o_proj" else cfg.qkv_bias:
                    specs.append(stacked(("attn", proj, "bias"), (out,), f"self_attn.{proj}.bias", False))
        if cfg.attention_sinks and not run.linear:
            specs.append(stacked(("attn", "sinks"), (cfg.num_heads,), "self_attn.sinks", False))
        if cfg.qk_norm in ("per_head", "full") and not run.linear:  # "l2" (Llama-4) has no weight
            widths = (
                {"q_norm": qd, "k_norm": kvd}
                if cfg.qk_norm == "full"
                else dict.fromkeys(("q_norm", "k_norm"), attn_cfg.head_dim)
            )
            for nm, width in widths.items():
                specs.append(stacked(("attn", nm, "scale"), (width,), f"self_attn.{nm}.weight", False))
        if run.is_moe:
            e = cfg.num_experts
            alt = None if names.router_alt is None else pre + names.router_alt
            specs.append(stacked(("moe", "router"), (h, e), names.router, True, alt))
            if cfg.router_bias:
                specs.append(stacked(("moe", "router_bias"), (e,), names.router[: -len("weight")] + "bias", False))
            if cfg.router_input_norm:
                specs.append(stacked(("moe", "router_scale"), (h,), names.router_scale, False))
            if cfg.router_expert_scale:
                specs.append(stacked(("moe", "router_expert_scale"), (e,), names.router_expert_scale, False))
            if cfg.router_selection_bias:
                spec = stacked(("moe", "router_selection_bias"), (e,), names.router_selection_bias, False)
                specs.append(dataclasses.replace(spec, dtype="float32"))
            fused = _fused_sources(cfg, pre)
            for ours in cfg.expert_param_names:
                is_bias = ours.endswith("_bias")
                hub = None
                if names.experts is not None:
                    hub_proj = names.experts[ours.replace("_bias", "_proj")]
                    hub = pre + f"{names.moe_prefix}.experts.{{e}}.{hub_proj}.{'bias' if is_bias else 'weight'}"
                specs.append(
                    LeafSpec(
                        (run.name, "moe", "experts", ours),
                        (n, e, *expert_leaf_shape(cfg, ours)),
                        hub,
                        not is_bias,
                        layers,
                        per_expert=True,
                        fused=fused[ours],
                    )
                )
            if cfg.shared_expert_size:
                s, prefix = cfg.shared_expert_size, names.shared_expert
                for proj, shape in (("gate_proj", (h, s)), ("up_proj", (h, s)), ("down_proj", (s, h))):
                    specs.append(
                        stacked(("moe", "shared_expert", proj, "kernel"), shape, f"{prefix}.{proj}.weight", True)
                    )
                if cfg.shared_expert_gate:
                    gate = stacked(("moe", "shared_expert_gate", "kernel"), (h, 1), f"{prefix}_gate.weight", True)
                    specs.append(gate)
        if gemma4:
            specs.append(stacked(("layer_scalar",), (1,), "layer_scalar", False))
        if not run.is_moe or gemma4:  # Gemma-4: the dense MLP beside the experts
            i = cfg.intermediate_size
            for proj, shape in (("gate_proj", (h, i)), ("up_proj", (h, i)), ("down_proj", (i, h))):
                specs.append(stacked(("mlp", proj, "kernel"), shape, f"{names.dense_mlp}.{proj}.weight", True))
    specs += [LeafSpec(("final_norm", p), (h,), f"{model}norm.{w}", False) for p, w in norm_parts]
    if not cfg.tie_word_embeddings:
        specs.append(LeafSpec(("lm_head", "kernel"), (h, v), "lm_head.weight", True))
        if cfg.lm_head_bias:
            specs.append(LeafSpec(("lm_head", "bias"), (v,), "lm_head.bias", False))
    if names.prefix:  # a multimodal checkpoint's text model
        specs = [_prefixed(s, names.prefix) for s in specs]
    return specs


def _prefixed(spec: LeafSpec, prefix: str) -> LeafSpec:
    """``spec`` with ``prefix`` before each of its HF names."""
    fused = spec.fused if spec.fused is None else dataclasses.replace(spec.fused, name=prefix + spec.fused.name)
    return dataclasses.replace(
        spec,
        hf_name=None if spec.hf_name is None else prefix + spec.hf_name,
        alt_name=None if spec.alt_name is None else prefix + spec.alt_name,
        fused=fused,
    )


def fused_key(spec: LeafSpec) -> tuple[str, str]:
    """(run, fused tensor name): the fused tensor an expert leaf is written into, per run (the name
    holds ``{l}``, so runs of one model share it)."""
    return spec.path[0], spec.fused.name


def fused_groups(specs: list[LeafSpec]) -> dict[tuple[str, str], list[LeafSpec]]:
    """:func:`fused_key` -> the expert leaves written into it (for leaves with no hub layout)."""
    groups: dict[tuple[str, str], list[LeafSpec]] = {}
    for spec in specs:
        if spec.per_expert and spec.hf_name is None:
            groups.setdefault(fused_key(spec), []).append(spec)
    return groups
