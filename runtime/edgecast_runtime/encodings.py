"""What a hub sends for each feature of a schema-2 model (docs/graph-contract.md,
*Input encodings*): the graph encodes, the runtime only fills the raw columns.

  numeric    the reading in its own units
  direction  degrees clockwise from north (where the wind comes from); calm is any
             negative value (-1 by convention). Compass points (N, NNE, ... NNW) and
             calm codes (cv, calm, c) are turned into degrees here.
  cyclic     a calendar value of the row's own timestamp in the data's clock:
             hour_of_day (0..23) and day_of_week (0..6, Monday 0); the runtime fills
             them from a reading's timestamp.
  masked     (schema 3) a neighbouring station's reading, NaN when it did not arrive:
             the graph stands in for it (edgecast_runtime.neighbours).
"""

from __future__ import annotations

import math
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any, List, Optional

import numpy as np

from edgecast_runtime.clock import TimeFormat, clock_name, to_clock
from edgecast_runtime.contract import (
    CALM_CODES,
    CALM_DEGREES,
    COMPASS_DEGREES,
    CYCLIC,
    DIRECTION,
    MASKED,
    NUMERIC,
)
from edgecast_runtime.errors import EdgecastRuntimeError, InputValueError
from edgecast_runtime.formatting import seconds_text
from edgecast_runtime.inputs import require_finite, to_float32

if TYPE_CHECKING:
    from collections.abc import Iterable


class InputLayout:
    """The raw columns of a model's `window`, from its spec: which features are
    directions, which are calendar values, which are held over a missing value."""

    def __init__(self, features: List[str], kinds: Optional[List[str]] = None,
                 hold_last: Iterable[str] = (), time_columns: Iterable[str] = (),
                 time_format: Optional[TimeFormat] = None) -> None:
        self.features = list(features)
        self.kinds = list(kinds) if kinds is not None else [NUMERIC] * len(self.features)
        self.hold_last = [name for name in hold_last if name in self.features]
        self.directions = [i for i, kind in enumerate(self.kinds) if kind == DIRECTION]
        self.calendar = [i for i, kind in enumerate(self.kinds) if kind == CYCLIC]
        self.calendar_names = [self.features[i] for i in self.calendar]
        self.masked = [i for i, kind in enumerate(self.kinds) if kind == MASKED]
        # per raw column: True where NaN means "did not arrive" and is no error
        self.may_be_missing = np.isin(np.arange(len(self.features)), self.masked)
        self.hold_indices = [self.features.index(name) for name in self.hold_last]
        # How the training file wrote its times: its time columns and their format, so
        # that a hub may send lines in the training file's own layout.
        self.time_columns = list(time_columns)
        self.time_format = time_format or TimeFormat()

    @property
    def plain(self) -> bool:
        return not self.directions and not self.calendar

    def require_finite(self, array: np.ndarray, what: str) -> None:
        """Every value finite, except NaN (not arrived) in a neighbour's column."""
        if self.masked and array.shape[-1:] == self.may_be_missing.shape:
            array = np.where(np.isnan(array) & self.may_be_missing, np.float32(0), array)
        require_finite(array, what)

    def is_direction(self, index: int) -> bool:
        return self.kinds[index] == DIRECTION

    def is_calendar(self, index: int) -> bool:
        return self.kinds[index] == CYCLIC

    # --- directions and missing neighbours ------------------------------------------

    def to_float32(self, data: Any, what: str) -> np.ndarray:
        """Windows ([look_back][n_features] or a batch of them) as float32, compass strings
        in direction columns as degrees and JSON null in a neighbour's column as NaN (not
        arrived, as NaN itself says). Nested lists are walked for directions only: nulls
        are looked for when the values do not convert, so a full window costs no walk."""
        try:
            return to_float32(self._converted(data, what, bool(self.directions)), what)
        except InputValueError:
            if not self.masked or not isinstance(data, list):
                raise
            return to_float32(self._converted(data, what, True), what)

    def _converted(self, data: Any, what: str, walk: bool) -> Any:
        return self._convert(data, what, ()) if walk and isinstance(data, list) else data

    def _convert(self, data: list, what: str, position: tuple[int, ...]) -> list:
        if data and all(isinstance(item, list) for item in data):
            if all(len(item) == len(self.features) and not any(isinstance(v, list) for v in item)
                   for item in data):
                return [self._convert_row(row, what, position + (index,))
                        for index, row in enumerate(data)]
            return [self._convert(item, what, position + (index,)) if isinstance(item, list)
                    else item for index, item in enumerate(data)]
        return data

    def _convert_row(self, row: list, what: str, position: tuple[int, ...]) -> list:
        converted = list(row)
        for index in self.directions:
            if isinstance(converted[index], str):
                where = list(position + (index,))
                converted[index] = direction_degrees(converted[index],
                                                     f"{what} at {where} ({self.features[index]})")
        for index in self.masked:
            if converted[index] is None:
                converted[index] = math.nan
        return converted

    # --- calendar -----------------------------------------------------------------

    def calendar_row(self, seconds: float, clock: Optional[tzinfo]) -> dict:
        """{feature index: value} for the calendar features at `seconds` (epoch) in
        the data's clock."""
        moment = to_clock(seconds, clock)
        return {index: calendar_value(self.features[index], moment) for index in self.calendar}

    def fill_calendar(self, values: List[float], timestamp: Optional[float],
                      clock: Optional[tzinfo]) -> List[float]:
        """A reading's values with its calendar features (NaN where left out) taken
        from its own timestamp in the data's clock; a value given for one must agree."""
        if not self.calendar:
            return values
        if timestamp is None:
            absent = [self.features[i] for i in self.calendar if not math.isfinite(values[i])]
            if absent:
                raise InputValueError(f"reading has no timestamp, so {', '.join(absent)} cannot be "
                                      f"derived; send a timestamp (or the value of "
                                      f"{', '.join(self.calendar_names)})")
            return values
        filled = list(values)
        for index, value in self.calendar_row(timestamp, clock).items():
            given, name = filled[index], self.features[index]
            if math.isfinite(given) and given != value:
                raise InputValueError(
                    f"{name} {given:g} disagrees with the timestamp {seconds_text(timestamp)} "
                    f"({name} {value:g} in the data's clock, {clock_name(clock)}); leave it "
                    f"out or fix the clock")
            filled[index] = value
        return filled


def direction_degrees(value: str, what: str) -> float:
    """A compass point, calm code or number (as text) as degrees; calm is -1."""
    token = value.strip()
    upper = token.upper()
    if upper in COMPASS_DEGREES:
        return COMPASS_DEGREES[upper]
    if token.lower() in CALM_CODES:
        return CALM_DEGREES
    try:
        return float(token)
    except ValueError:
        raise InputValueError(
            f"{what}: {token[:20]!r} is not a wind direction (degrees, a compass point "
            f"N, NNE, ... NNW, or cv for calm)") from None


def calendar_value(name: str, moment: datetime) -> float:
    if name == "hour_of_day":
        return float(moment.hour)
    if name == "day_of_week":
        return float(moment.weekday())
    raise EdgecastRuntimeError(f"unknown calendar feature {name!r}")
