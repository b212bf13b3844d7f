"""The stream's policy for missing values and timestamp gaps, and its application
to the next state: hold the last value, reset the buffer, or refuse the reading.
Values outside the model's valid ranges are missing values too; every value the
stream treats as missing is counted by reason."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional

import numpy as np

from edgecast_runtime.errors import EdgecastRuntimeError, InputValueError
from edgecast_runtime.state import StreamState
from edgecast_runtime.validity import ValidRanges

if TYPE_CHECKING:
    from collections.abc import Callable

MISSING_POLICIES = ("reset", "hold", "refuse")
GAP_POLICIES = ("reset", "hold")
DEFAULT_ON_MISSING = "reset"
DEFAULT_ON_GAP = "reset"
DEFAULT_MAX_HOLD = 3
# A state file written for a model that reads other inputs: refuse to start (exit 5,
# someone decides), or start afresh with a logged notice (unattended hubs, releases).
STATE_MISMATCH_POLICIES = ("refuse", "fresh")
DEFAULT_ON_STATE_MISMATCH = "refuse"
# Why a value was treated as missing (the keys of StreamState.missing_values), besides
# validity.BELOW and validity.ABOVE.
MISSING, NON_FINITE = "missing", "non_finite"


@dataclass(frozen=True)
class StreamPolicy:
    """What to do when a reading has a missing or non-finite value, and when the
    time since the previous reading spans one or more missed sampling steps.

    The default resets the buffer in both cases: no forecast is ever made from a
    window with a hole in it, at the cost of waiting look_back readings again.
    "hold" repeats the last value for at most `max_hold` consecutive steps, then
    resets. "refuse" (missing values only) rejects the reading and leaves the
    state as it was; a later reading then shows the hole as a timestamp gap.
    `interval_seconds` overrides the model's sampling interval for gap detection.
    `max_future_seconds`: how far ahead of the hub's clock a timestamp may be (None:
    one sampling interval plus 15 minutes; see timeguard).
    """

    on_missing: str = DEFAULT_ON_MISSING
    on_gap: str = DEFAULT_ON_GAP
    max_hold: int = DEFAULT_MAX_HOLD
    interval_seconds: Optional[float] = None
    on_state_mismatch: str = DEFAULT_ON_STATE_MISMATCH
    max_future_seconds: Optional[float] = None

    def __post_init__(self) -> None:
        if self.on_state_mismatch not in STATE_MISMATCH_POLICIES:
            raise EdgecastRuntimeError(f"on_state_mismatch must be one of {STATE_MISMATCH_POLICIES}, "
                                       f"got {self.on_state_mismatch!r}")
        if self.on_missing not in MISSING_POLICIES:
            raise EdgecastRuntimeError(f"on_missing must be one of {MISSING_POLICIES}, "
                                       f"got {self.on_missing!r}")
        if self.on_gap not in GAP_POLICIES:
            raise EdgecastRuntimeError(f"on_gap must be one of {GAP_POLICIES}, got {self.on_gap!r}")
        if isinstance(self.max_hold, bool) or not isinstance(self.max_hold, int) or self.max_hold < 0:
            raise EdgecastRuntimeError(f"max_hold must be an integer >= 0, got {self.max_hold!r}")
        interval = self.interval_seconds
        if interval is not None and not (isinstance(interval, (int, float))
                                         and math.isfinite(interval) and interval > 0):
            raise EdgecastRuntimeError(f"interval_seconds must be a positive number, got {interval!r}")
        ahead = self.max_future_seconds
        if ahead is not None and not (isinstance(ahead, (int, float)) and not isinstance(ahead, bool)
                                      and math.isfinite(ahead) and ahead >= 0):
            raise EdgecastRuntimeError(f"max_future_seconds must be a number >= 0, got {ahead!r}")


def screen_ranges(state: StreamState, values: List[float], ranges: Optional[ValidRanges],
                  features: List[str], notices: list) -> List[float]:
    """The values with those outside their valid range replaced by NaN (counted)."""
    if not ranges:
        return values
    screened = list(values)
    for index, reason, phrase in ranges.outside(values):
        screened[index] = math.nan
        count_missing(state, reason, features[index])
        notices.append(f"{phrase}: treated as missing")
    return screened


def count_missing(state: StreamState, reason: str, feature: str) -> None:
    by_feature = state.missing_values.setdefault(reason, {})
    by_feature[feature] = by_feature.get(feature, 0) + 1


def apply_gap(state: StreamState, timestamp: Optional[float], interval: Optional[float],
              policy: StreamPolicy, calendar_at: Callable[[float], dict[int, float]], notices: list) -> None:
    """Fill or reset for the sampling steps missed since the last reading.
    `calendar_at(seconds)` gives {feature index: value} of a held step's calendar."""
    if not interval or timestamp is None or state.last_timestamp is None:
        return
    # Readings are consecutive steps while less than 1.5 intervals apart.
    try:
        missed = int(round((timestamp - state.last_timestamp) / interval)) - 1
    except (OverflowError, ValueError):  # a span no count of steps can hold
        raise InputValueError(f"the time since the last reading spans too many sampling "
                              f"intervals of {interval:g} s to count") from None
    if missed < 1:
        return
    if policy.on_gap == "hold" and len(state.buffer) and state.held + missed <= policy.max_hold:
        last = state.buffer.last()
        for step in range(1, missed + 1):
            row = last.copy()
            # A held step keeps the last readings, but its calendar is its own.
            for index, value in calendar_at(state.last_timestamp + step * interval).items():
                row[index] = value
            state.buffer.append(row)
        state.held += missed
        notices.append(f"gap of {missed} missed step(s): last value held")
    else:
        _reset(state)
        notices.append(f"gap of {missed} missed step(s): buffer reset")


def apply_missing(state: StreamState, row: np.ndarray, finite: np.ndarray, features: List[str],
                  hold_indices: List[int], policy: StreamPolicy, notices: list) -> None:
    """Hold the last value, refuse the reading or reset the buffer for a row with
    missing values. Features listed in the spec's gap_policy.hold_last (wind
    directions, never interpolated) repeat the last value whatever on_missing says,
    up to max_hold steps."""
    names = ", ".join(name for name, ok in zip(features, finite) if not ok)
    can_hold = len(state.buffer) and state.held < policy.max_hold
    only_hold_last = all(i in hold_indices for i, ok in enumerate(finite) if not ok)
    if can_hold and only_hold_last:
        how = "last value held (hold_last)"
    elif policy.on_missing == "refuse":
        raise InputValueError(f"missing or non-finite value for {names}; "
                              f"reading refused (policy on_missing=refuse)")
    elif can_hold and policy.on_missing == "hold":
        how = "last value held"
    else:
        _reset(state)
        notices.append(f"missing value for {names}: buffer reset")
        return
    state.buffer.append(np.where(finite, row, state.buffer.last()))
    state.held += 1
    notices.append(f"missing value for {names}: {how}")


def _reset(state: StreamState) -> None:
    state.buffer.clear()
    state.held = 0
