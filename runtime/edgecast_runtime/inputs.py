"""Turning caller data (numpy arrays, JSON-decoded lists, command-line strings) into
float32 arrays, with errors that say what was wrong and where."""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecast_runtime.errors import InputShapeError, InputValueError

if TYPE_CHECKING:
    from collections.abc import Callable

MISSING_WORDS = frozenset({"", "na", "nan", "null", "none"})


def to_float32(data: Any, what: str = "window") -> np.ndarray:
    """A C-contiguous float32 array. A C-contiguous float32 array passed in is returned
    as is (no copy); anything else is converted once. Finiteness is checked apart
    (`require_finite`) so that a caller can report a wrong shape first."""
    if isinstance(data, np.ndarray):
        return _convert_ndarray(data, what)
    return _convert_nested(data, what)


def _convert_ndarray(data: np.ndarray, what: str) -> np.ndarray:
    if data.dtype.kind not in "fiu":
        raise InputValueError(f"{what} must hold numbers, got an array of dtype {data.dtype}")
    if data.dtype == np.float32 and data.flags.c_contiguous:
        return data
    with np.errstate(over="ignore", invalid="ignore"):
        # (ascontiguousarray would make a 0-d array 1-d, misreporting its shape)
        return np.array(data, dtype=np.float32, order="C")


def _convert_nested(data: Any, what: str) -> np.ndarray:
    if isinstance(data, (str, bytes)):
        raise InputValueError(f"{what} must hold numbers, got a string {_short(data)}")
    try:
        raw = np.asarray(data)
    except (ValueError, TypeError):
        raise InputShapeError(f"{what} must be a list of equal-length rows of numbers "
                              f"(got rows of different lengths or depths)") from None
    # numpy silently turns true/false into 1/0 beside numbers; JSON booleans are a bug.
    if raw.dtype.kind not in "fiu" or _contains_bool(data):
        _raise_first_bad_value(data, what)
        raise InputValueError(f"{what} must hold numbers, got values of type {raw.dtype}")
    with np.errstate(over="ignore", invalid="ignore"):
        return np.array(raw, dtype=np.float32, order="C")


def _contains_bool(data: Any) -> bool:
    if isinstance(data, (list, tuple)):
        if data and isinstance(data[0], (list, tuple)):
            return any(_contains_bool(item) for item in data)
        return any(type(item) is bool for item in data)
    return type(data) is bool


def _raise_first_bad_value(data: Any, what: str, position: tuple[int, ...] = ()) -> None:
    """Find the first leaf that is not a number (or overflows) and raise an error naming it."""
    if isinstance(data, (list, tuple)):
        for index, item in enumerate(data):
            _raise_first_bad_value(item, what, position + (index,))
        return
    where = f" at {list(position)}" if position else ""
    if isinstance(data, bool) or not isinstance(data, numbers.Real):
        kind = "missing value (null)" if data is None else f"non-numeric value {_short(data)}"
        raise InputValueError(f"{what} has a {kind}{where}")
    try:
        float(data)
    except OverflowError:
        raise InputValueError(f"{what} has a number beyond float32 range{where}") from None


def require_finite(array: np.ndarray, what: str) -> None:
    finite = np.isfinite(array)
    if not finite.all():
        position = [int(i) for i in np.argwhere(~finite)[0]]
        raise InputValueError(
            f"{what} has a non-finite value at {position} (NaN, inf, or beyond float32 range)"
        )


def nested_shape(data: Any) -> tuple[int, ...] | None:
    """The shape of an array or of nested lists whatever their leaves hold (numbers,
    text, null), or None when rows differ in length or depth."""
    if isinstance(data, np.ndarray):
        return tuple(data.shape)
    if not isinstance(data, (list, tuple)):
        return ()
    inner = {nested_shape(item) for item in data}
    if None in inner or len(inner) > 1:
        return None
    return (len(data),) + (inner.pop() if inner else ())


def require_shape(data: Any, shape_ok: Callable[[tuple[int, ...]], bool], expected: str, prefix: str = "") -> None:
    """InputShapeError naming `expected` and the shape got, when `data` is a regular
    array or nest of lists and `shape_ok(shape)` is false (a lone value is left to
    the value checks, which say what it is)."""
    shape = nested_shape(data)
    if shape and not shape_ok(shape):
        raise InputShapeError(f"{prefix}expected {expected}, got shape {shape_text(shape)}")


def parse_number(text: str, what: str) -> float | None:
    """A command-line or CSV field as a float; None when it spells a missing value."""
    stripped = text.strip()
    if stripped.lower() in MISSING_WORDS:
        return None
    try:
        return float(stripped)
    except ValueError:
        raise InputValueError(f"{what} is not a number: {_short(stripped)}") from None


def reading_value(value: Any, what: str) -> float:
    """One reading's field (from JSON or CSV) as a float, NaN for a missing value."""
    if value is None:
        return math.nan
    if isinstance(value, str):
        parsed = parse_number(value, what)
        return math.nan if parsed is None else parsed
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputValueError(f"{what} is not a number: {_short(value)}")
    try:
        return float(value)
    except OverflowError:
        return math.inf


def shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
