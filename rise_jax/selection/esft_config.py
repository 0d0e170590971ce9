"""ESFT's expert-config JSON (``deepseek-ai/ESFT``: ``results/expert_configs/*.json``, read by its
``esft.to_esft`` and ``train.py``), read and written::

    {"experts": {"<layer>": [expert ids]}, "shared_experts": bool, "non_expert_modules": bool}

``<layer>`` is the **decoder layer index** (ESFT enumerates ``model.layers``; DeepSeek-V2-Lite's
layer 0 is dense, so its keys run "1".."26"), and ESFT reads ``experts[str(layer)]`` for every MoE
layer, so every MoE layer has a key (an empty list where nothing is trained). Ours number MoE
layers from 0 (``selection.json``): ``cfg.moe_layer_ids`` converts. ``shared_experts`` trains the
shared experts, ``non_expert_modules`` everything that is neither a routed nor a shared expert
(attention, norms, embeddings, routers, dense layers, lm_head; never DeepSeek-V3's load-balancing
``e_score_correction_bias``, a buffer in ESFT's model): :meth:`ExpertConfig.extra_trainable` is
the ``train.extra_trainable`` rule that says the same (see ``docs/ROUTING.md``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any

from rise_jax.errors import RiseError
from rise_jax.io_utils import write_json_atomic
from rise_jax.models.config import ModelConfig

SHARED_EXPERTS_RULE = "moe/shared_expert"
NON_EXPERT_RULE = "^(?!.*moe/(experts/|shared_expert|router_selection_bias))"


class ExpertConfigError(RiseError, ValueError):
    """An ESFT expert config that does not fit the model; the message names the file and key."""


@dataclasses.dataclass(frozen=True)
class ExpertConfig:
    """What ESFT trains: ``experts`` (MoE layer, expert) pairs sorted, and its two flags."""

    experts: tuple[tuple[int, int], ...]
    shared_experts: bool = False
    non_expert_modules: bool = False

    def extra_trainable(self) -> str:
        """The ``train.extra_trainable`` rule (comma list of path regexes) the flags mean ("" for none)."""
        rules = ([SHARED_EXPERTS_RULE] if self.shared_experts else []) + (
            [NON_EXPERT_RULE] if self.non_expert_modules else []
        )
        return ",".join(rules)


def from_pairs(
    pairs: Iterable[tuple[int, int]], shared_experts: bool = False, non_expert_modules: bool = False
) -> ExpertConfig:
    return ExpertConfig(tuple(sorted({(int(a), int(b)) for a, b in pairs})), shared_experts, non_expert_modules)


def from_selection(selection: dict[str, Any], **flags: bool) -> ExpertConfig:
    """The experts of a ``selection.json`` artefact (its ``layer`` is the MoE-layer index)."""
    return from_pairs(((e["layer"], e["expert"]) for e in selection["experts"]), **flags)


def to_esft_dict(cfg: ModelConfig, config: ExpertConfig) -> dict[str, Any]:
    """ESFT's JSON object for ``config`` on the model ``cfg`` (a key per MoE layer, ids sorted)."""
    per_layer: dict[str, list[int]] = {str(layer): [] for layer in cfg.moe_layer_ids}
    for moe_layer, expert in config.experts:
        _check_pair(cfg, moe_layer, expert, "expert config")
        per_layer[str(cfg.moe_layer_ids[moe_layer])].append(expert)
    return {
        "experts": {k: sorted(v) for k, v in per_layer.items()},
        "shared_experts": bool(config.shared_experts),
        "non_expert_modules": bool(config.non_expert_modules),
    }


def _check_pair(cfg: ModelConfig, moe_layer: int, expert: int, where: str) -> None:
    if not 0 <= moe_layer < cfg.num_moe_layers or not 0 <= expert < cfg.num_experts:
        raise ExpertConfigError(
            f"{where}: (MoE layer {moe_layer}, expert {expert}) is outside the model's "
            f"{cfg.num_moe_layers} MoE layers x {cfg.num_experts} experts"
        )


def from_esft_dict(d: Any, cfg: ModelConfig, source: str = "expert config") -> ExpertConfig:
    """Parse ESFT's JSON object for the model ``cfg``; errors name ``source`` and the key."""
    if not isinstance(d, dict) or not isinstance(d.get("experts"), dict):
        raise ExpertConfigError(f"{source}: not an ESFT expert config (expected an object with an 'experts' object)")
    flags = {}
    for key in ("shared_experts", "non_expert_modules"):
        value = d.get(key, False)
        if not isinstance(value, bool):
            raise ExpertConfigError(f"{source}: {key} = {value!r} must be true or false")
        flags[key] = value
    moe_index = {layer: i for i, layer in enumerate(cfg.moe_layer_ids)}
    pairs = []
    for key, ids in d["experts"].items():
        if not (isinstance(key, str) and key.isdigit() and int(key) in moe_index):
            raise ExpertConfigError(
                f"{source}: experts key {key!r} is not an MoE decoder layer of this {cfg.model_type} model "
                f"(ESFT numbers decoder layers; MoE layers: {cfg.moe_layer_ids[0]}..{cfg.moe_layer_ids[-1]})"
            )
        if not isinstance(ids, list) or not all(isinstance(e, int) and not isinstance(e, bool) for e in ids):
            raise ExpertConfigError(f"{source}: experts[{key!r}] = {ids!r} must be a list of expert ids")
        if len(set(ids)) != len(ids):
            raise ExpertConfigError(f"{source}: experts[{key!r}] lists an expert twice: {ids}")
        for e in ids:
            _check_pair(cfg, moe_index[int(key)], e, f"{source}: experts[{key!r}]")
            pairs.append((moe_index[int(key)], e))
    missing = [str(layer) for layer in cfg.moe_layer_ids if str(layer) not in d["experts"]]
    if missing:
        raise ExpertConfigError(
            f"{source}: experts has no key for MoE layer(s) {', '.join(missing)} (ESFT reads one per MoE layer)"
        )
    return from_pairs(pairs, **flags)


def read_by_layer_order(path: str, num_moe_layers: int, num_experts: int) -> ExpertConfig:
    """Read ``path`` without the model's config: ESFT lists every MoE layer, so its keys sorted by
    number are the MoE layers in order (the k-th smallest is MoE layer k); the count must match."""
    try:
        with open(path, encoding="utf-8") as fh:
            d = json.load(fh)
    except (OSError, json.JSONDecodeError) as err:
        raise ExpertConfigError(f"{path}: cannot read an ESFT expert config ({err})") from err
    experts = d.get("experts") if isinstance(d, dict) else None
    if not isinstance(experts, dict) or not all(isinstance(k, str) and k.isdigit() for k in experts):
        raise ExpertConfigError(f"{path}: not an ESFT expert config (expected 'experts' keyed by decoder layer)")
    layers = sorted(int(k) for k in experts)
    if len(layers) != num_moe_layers:
        raise ExpertConfigError(
            f"{path}: experts lists {len(layers)} layers ({layers[0] if layers else '-'}..{layers[-1] if layers else '-'}), "
            f"the model has {num_moe_layers} MoE layers"
        )
    cfg = _LayerOnly(tuple(layers), num_experts)
    return from_esft_dict(d, cfg, path)  # type: ignore[arg-type]


@dataclasses.dataclass(frozen=True)
class _LayerOnly:
    """The two things :func:`from_esft_dict` reads of a ModelConfig, when only the layers are known."""

    moe_layer_ids: tuple[int, ...]
    num_experts: int
    model_type: str = "MoE"

    @property
    def num_moe_layers(self) -> int:
        return len(self.moe_layer_ids)


def write_expert_config(path: str, cfg: ModelConfig, config: ExpertConfig) -> str:
    return write_json_atomic(path, to_esft_dict(cfg, config))


def read_expert_config(path: str, cfg: ModelConfig) -> ExpertConfig:
    try:
        with open(path, encoding="utf-8") as fh:
            d = json.load(fh)
    except (OSError, json.JSONDecodeError) as err:
        raise ExpertConfigError(f"{path}: cannot read an ESFT expert config ({err})") from err
    return from_esft_dict(d, cfg, path)


def main(argv: list[str] | None = None) -> int:
    """``python -m rise_jax.selection.esft_config SELECTION_JSON CHECKPOINT OUT_JSON [--shared-experts]
    [--non-expert-modules]``: a ``selection.json`` of ours as ESFT's expert config (for its trainer)."""
    import argparse

    from rise_jax.models.families import config_from_hf_dict

    ap = argparse.ArgumentParser(prog="python -m rise_jax.selection.esft_config", description=main.__doc__)
    ap.add_argument("selection", help="a selection.json written by the select stage")
    ap.add_argument("checkpoint", help="the HF checkpoint directory it was made on (its config.json)")
    ap.add_argument("out", help="where to write ESFT's expert-config JSON")
    ap.add_argument("--shared-experts", action="store_true", help="ESFT's shared_experts flag")
    ap.add_argument("--non-expert-modules", action="store_true", help="ESFT's non_expert_modules flag")
    args = ap.parse_args(argv)
    cfg_path = f"{args.checkpoint.rstrip('/')}/config.json"
    try:
        with open(cfg_path, encoding="utf-8") as fh:
            cfg = config_from_hf_dict(json.load(fh), cfg_path)
        with open(args.selection, encoding="utf-8") as fh:
            selection = json.load(fh)
    except (OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"error: {err}") from err
    config = from_selection(selection, shared_experts=args.shared_experts, non_expert_modules=args.non_expert_modules)
    print(write_expert_config(args.out, cfg, config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
