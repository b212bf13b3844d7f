"""The building blocks of the typed spec (spec.py): the JSON of each part kept exactly as
read (key order, extras), frozen values and the spec's error."""

from __future__ import annotations

from dataclasses import field
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Optional, Tuple

from .errors import ModelError

Keys = Optional[Tuple[str, ...]]
_NOTHING: Mapping[str, Any] = MappingProxyType({})


class SpecError(ModelError):
    """The spec breaks the graph contract; the message names the problem, not the file."""


def _keys() -> Any:
    return field(default=None, compare=False, repr=False)


def _extras() -> Any:
    return field(default_factory=lambda: _NOTHING, repr=False)


def freeze(value: Any) -> Any:
    """JSON as read, made immutable: objects as read-only mappings, lists as tuples."""
    if isinstance(value, dict):
        return MappingProxyType({key: freeze(item) for key, item in value.items()})
    if isinstance(value, list):
        return tuple(freeze(item) for item in value)
    return value


def thaw(value: Any) -> Any:
    """The JSON of a frozen value or of a part of the spec."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [thaw(item) for item in value]
    return value


def emit(entries: Iterable[Tuple[str, Any, bool]], key_order: Keys, extras: Mapping[str, Any]) -> dict:
    """A part's JSON from (key, value, always written) in the toolkit's order. A part read
    from JSON writes the keys it was read with, in that order (a key set since follows)."""
    out = {}
    for key, value, always in entries:
        present = (key in key_order or value is not None) if key_order is not None else (always or value is not None)
        if present:
            out[key] = thaw(value)
    out.update((key, thaw(value)) for key, value in extras.items())
    if key_order is None:
        return out
    ordered = {key: out.pop(key) for key in key_order if key in out}
    ordered.update(out)
    return ordered
