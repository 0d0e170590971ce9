"""Parsing and checking config values, once: comma-separated lists, integer ranges, dotted fields.

Config fields that hold lists are strings (``"en,bn,sw"``) so they override cleanly from the
command line (``--config.data.languages=en,sw``); every parser of such a field goes through
:func:`comma_list`. Errors are :class:`~rise_jax.errors.SettingError` naming the field.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rise_jax.errors import SettingError


def comma_list(spec: str | Iterable[str] | None) -> list[str]:
    """``"a, b,,c"`` (or a list/tuple) -> ``["a", "b", "c"]``: stripped, empties dropped, order kept."""
    if spec is None:
        return []
    items = spec.split(",") if isinstance(spec, str) else spec
    return [str(s).strip() for s in items if str(s).strip()]


def int_ranges(spec: str | int) -> list[int]:
    """``"3,5"`` or ``"0-11"`` (inclusive ranges) -> ints."""
    out: list[int] = []
    for part in comma_list(str(spec)):
        if "-" in part:
            lo, hi = part.split("-")
            out.extend(range(int(lo), int(hi) + 1))
        else:
            out.append(int(part))
    return out


def get_field(config: Any, dotted: str) -> Any:
    """``config["a"]["b"]`` for ``"a.b"``; a missing key is a :class:`SettingError` naming it."""
    node = config
    for key in dotted.split("."):
        if key not in node:
            raise SettingError(f"config.{dotted}: no such field")
        node = node[key]
    return node


def positive_ints(config: Any, *fields: str) -> None:
    """Every named field is an int >= 1 (booleans are not ints here)."""
    for name in fields:
        value = get_field(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SettingError(f"config.{name} = {value!r}: must be a whole number >= 1")


def booleans(config: Any, *fields: str) -> None:
    """Every named field is True or False (not 0/1, not a string such as ``"false"``)."""
    for name in fields:
        value = get_field(config, name)
        if not isinstance(value, bool):
            raise SettingError(f"config.{name} = {value!r}: must be True or False")
