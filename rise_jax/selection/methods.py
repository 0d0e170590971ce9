"""The selection-method registry: ``config.select.method`` names one entry of :data:`METHODS`.

A method turns the routing statistics (:class:`SelectionInputs`, arrays only, so this room needs
no routing import) and the ``config.select`` section into a :class:`Choice`: the experts, the
parameters ``selection.json`` records and, for zone-budgeted methods, the budgets. Adding one is a
function here (or in a module of its own) and one :class:`Method` entry in :data:`METHODS`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from rise_jax.config_values import comma_list
from rise_jax.selection import algorithms as alg


@dataclasses.dataclass(frozen=True)
class SelectionInputs:
    """What a method may read: ``freq`` ``[Λ, L, E]`` activation frequencies, ``target`` the target
    language's row, ``top_k`` the router's k, ``gate_scores`` ``[Λ, L, E]`` (read on demand)."""

    freq: np.ndarray
    target: int
    top_k: int
    gate_scores: Callable[[], np.ndarray]
    zone_ratios: tuple[float, float]

    @property
    def num_layers(self) -> int:
        return self.freq.shape[1]

    @property
    def num_experts(self) -> int:
        return self.freq.shape[2]


@dataclasses.dataclass(frozen=True)
class Choice:
    """A method's result: experts sorted by (layer, expert), ``selection.json``'s ``params`` and
    the per-zone budgets (None for methods without them)."""

    experts: list[alg.Selected]
    params: dict[str, Any]
    budgets: dict[str, int] | None = None


@dataclasses.dataclass(frozen=True)
class Method:
    """One selection method. ``select(inputs, c)`` with ``c`` = ``config.select``; ``takes_k``:
    it chooses ``c.k`` experts from the L x E pool (validation checks K against the checkpoint
    before the replay); ``validate(c)``: its own cheap config checks (raise ``SelectionError``)."""

    name: str
    select: Callable[[SelectionInputs, Any], Choice]
    takes_k: bool = True
    validate: Callable[[Any], None] | None = None


def _ratios(c: Any) -> tuple[float, ...]:
    return tuple(float(r) for r in c.ratios)


def _rise(x: SelectionInputs, c: Any) -> Choice:
    zones_used = tuple(comma_list(c.zones))
    chosen, budgets = alg.rise_select(x.freq, x.target, int(c.k), _ratios(c), float(c.alpha), zones_used, x.zone_ratios)
    params = {"k": int(c.k), "ratios": list(_ratios(c)), "alpha": float(c.alpha), "zones_used": list(zones_used)}
    return Choice(chosen, params, budgets)


def _check_rise(c: Any) -> None:
    try:
        alg.check_budget_ratios(_ratios(c))
    except (TypeError, ValueError) as err:
        raise alg.SelectionError(f"config.select.ratios: {err}") from err


def _random(x: SelectionInputs, c: Any) -> Choice:
    chosen = alg.random_select(x.num_layers, x.num_experts, int(c.k), int(c.seed), x.zone_ratios)
    return Choice(chosen, {"k": int(c.k), "seed": int(c.seed)})


def _topk(x: SelectionInputs, c: Any) -> Choice:
    return Choice(alg.topk_select(x.freq[x.target], int(c.k), x.zone_ratios), {"k": int(c.k)})


def _esft_gate(x: SelectionInputs, c: Any) -> Choice:
    chosen = alg.esft_select(x.gate_scores()[x.target], float(c.p_gate), "gate", x.zone_ratios)
    return Choice(chosen, {"p": float(c.p_gate)})


def _esft_token(x: SelectionInputs, c: Any) -> Choice:
    chosen = alg.esft_select(x.freq[x.target] / x.top_k, float(c.p_token), "token", x.zone_ratios)
    return Choice(chosen, {"p": float(c.p_token)})


def _esft_json(x: SelectionInputs, c: Any) -> Choice:
    """The experts an ESFT expert-config JSON lists (``c.esft_config``; e.g. a config ESFT released):
    its decoder-layer keys in order are the MoE layers (:func:`esft_config.read_by_layer_order`)."""
    from rise_jax.selection import esft_config

    read = esft_config.read_by_layer_order(str(c.esft_config), x.num_layers, x.num_experts)
    chosen = [alg.Selected(m, e, alg.zone_of(m, x.num_layers, x.zone_ratios), {}) for m, e in read.experts]
    params = {
        "esft_config": str(c.esft_config),
        "shared_experts": read.shared_experts,
        "non_expert_modules": read.non_expert_modules,
    }
    return Choice(chosen, params)


def _check_esft_json(c: Any) -> None:
    path = str(c.get("esft_config", "") or "")
    if not path:
        raise alg.SelectionError(
            "config.select.esft_config: method esft_json needs the path of an ESFT expert-config JSON"
        )
    if not os.path.isfile(path):
        raise alg.SelectionError(f"config.select.esft_config = {path!r}: no such file")


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("rise", _rise, validate=_check_rise),
        Method("random", _random),
        Method("topk", _topk),
        Method("esft_gate", _esft_gate, takes_k=False),
        Method("esft_token", _esft_token, takes_k=False),
        Method("esft_json", _esft_json, takes_k=False, validate=_check_esft_json),
    )
}


def get_method(name: str, source: str = "config.select.method") -> Method:
    """The registered method ``name``; the error lists the registered ones."""
    if name not in METHODS:
        raise alg.SelectionError(f"unknown selection method {name!r} ({source}); choose one of {', '.join(METHODS)}")
    return METHODS[name]
