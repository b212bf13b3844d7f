"""Value types of the runtime CLI's options: each turns a bad value into argparse's
one-line usage error naming what was expected."""
from __future__ import annotations

import argparse
from typing import Callable, TypeVar

from .clock import parse_clock
from .errors import EdgecastRuntimeError
from .skill import parse_window

Number = TypeVar("Number", int, float)


def positive_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 1, "a positive integer")


def non_negative_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 0, "an integer >= 0")


def positive_float(text: str) -> float:
    return _number(text, float, lambda v: 0 < v < float("inf"), "a positive number")


def non_negative_float(text: str) -> float:
    return _number(text, float, lambda v: 0 <= v < float("inf"), "a number >= 0")


def clock(text: str) -> str:
    try:
        parse_clock(text)
    except EdgecastRuntimeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def window(text: str) -> float:
    try:
        return parse_window(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a span like 72h, 30d or 3600, "
                                         f"got {text!r}") from None


def port(text: str) -> int:
    return _number(text, int, lambda v: 0 <= v <= 65535, "a port number (0-65535)")


def _number(text: str, kind: Callable[[str], Number], ok: Callable[[Number], bool], wanted: str) -> Number:
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not ok(value):
        raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
    return value
