"""Readings for the streaming forecaster: one value per feature and an optional
timestamp, parsed from a JSON object, a JSON array or number, or a CSV line (with
or without a header). Shared by `stream`, POST /v1/observe and `mqtt`."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Collection, Dict, Iterable, List, Optional

from edgecast_runtime.clock import parse_timestamp, seconds_from_parts
from edgecast_runtime.encodings import InputLayout, direction_degrees
from edgecast_runtime.errors import InputShapeError, InputValueError
from edgecast_runtime.inputs import MISSING_WORDS, reading_value

if TYPE_CHECKING:
    from datetime import tzinfo

# Names of a single timestamp column or key, in the order they are looked for (any case).
TIMESTAMP_KEYS = ("timestamp", "datetime", "date_time", "ts", "time", "date", "epoch")
TIME_PARTS = ("year", "month", "day", "hour")  # the Beijing stations' own layout; minute optional
DATE_AND_TIME = ("date", "time")
BOM = "\ufeff"


@dataclass(frozen=True)
class Reading:
    values: List[float]  # one per feature, in the model's order; NaN where missing
    timestamp: Optional[float] = None  # seconds since the epoch
    # (calendar features not given are NaN: the streaming forecaster fills them
    # from the timestamp)


@dataclass(frozen=True)
class Header:
    columns: List[str]
    time_columns: List[str] = ()  # the columns the timestamp is read from
    ignored_time_columns: List[str] = ()  # time-like columns left unread: another one is used


def choose_time_columns(names: Iterable[str], recorded: Iterable[str] = ()) -> List[str]:
    """The columns (any case) a time is read from, in this order: the training file's
    own (`recorded`, from the spec), a single timestamp (timestamp, datetime,
    date_time, ts, epoch), date and time, a time or date column, year/month/day/hour
    (and minute). The trainer detects a file's time columns with this too."""
    lowered = {}
    for name in names:
        lowered.setdefault(name.lower(), name)
    keys = [name.lower() for name in recorded]
    if not (keys and all(key in lowered for key in keys)):
        keys = _default_time_keys(lowered)
    return [lowered[key] for key in keys]


def _default_time_keys(lowered: Dict[str, str]) -> List[str]:
    for key in TIMESTAMP_KEYS[:4] + ("epoch",):
        if key in lowered:
            return [key]
    if all(key in lowered for key in DATE_AND_TIME):
        return list(DATE_AND_TIME)
    for key in ("time", "date"):
        if key in lowered:
            return [key]
    if all(key in lowered for key in TIME_PARTS):
        return list(TIME_PARTS) + (["minute"] if "minute" in lowered else [])
    return []


class TimeColumns:
    """Where a reading's time is, among a header's columns or an object's keys (any
    case): the training file's own time columns (recorded in the spec), a single
    timestamp, separate date and time, or year/month/day/hour (and minute)."""

    def __init__(self, names: Iterable[str], layout: InputLayout) -> None:
        features = {name.lower() for name in layout.features}
        candidates = [name for name in names if name.lower() not in features]
        self.layout = layout
        self.used = choose_time_columns(candidates, layout.time_columns)
        self.kind = ("parts" if {k.lower() for k in self.used} >= set(TIME_PARTS)
                     else "pair" if len(self.used) == 2 else "single" if self.used else None)
        time_like = set(TIMESTAMP_KEYS) | set(TIME_PARTS) | {"minute"}
        self.ignored = [name for name in candidates if name.lower() in time_like and name not in self.used]
        if self.kind is None and self.ignored:
            raise InputShapeError(
                f"time column(s) {self.ignored} cannot be read as a timestamp: give one of "
                f"{', '.join(TIMESTAMP_KEYS)}, date and time, or {','.join(TIME_PARTS)}")

    def seconds(self, value_of: Callable[[str], object], clock: Optional[tzinfo]) -> Optional[float]:
        """The timestamp, from `value_of(column name)`; None when its field is empty."""
        values = [value_of(name) for name in self.used]
        if not values or any(value is None or value == "" for value in values):
            return None
        time_format = self.layout.time_format
        if self.kind == "parts":
            return seconds_from_parts({name.lower(): value for name, value in zip(self.used, values)},
                                      clock)
        if self.kind == "pair":
            return parse_timestamp(" ".join(str(value).strip() for value in values), clock, time_format)
        return parse_timestamp(values[0], clock, time_format)


def as_layout(features_or_layout: InputLayout | Iterable[str]) -> InputLayout:
    if isinstance(features_or_layout, InputLayout):
        return features_or_layout
    return InputLayout(list(features_or_layout))


def reading_from_json(document: object, features: InputLayout | Iterable[str],
                      clock: Optional[tzinfo] = None) -> Reading:
    """A reading from decoded JSON: a number (one-feature models), a list of values,
    or an object with "values" (list), "value" (number) or one key per feature
    name, and optionally "timestamp" (or "ts", "time"). `features` is the model's
    feature list or its InputLayout; calendar features may be left out (they come
    from the timestamp) and directions may be compass points."""
    layout = as_layout(features)
    timestamp = None
    if isinstance(document, dict):
        document = {key.lstrip(BOM) if isinstance(key, str) else key: value
                    for key, value in document.items()}
        timestamp = TimeColumns([k for k in document if isinstance(k, str)], layout).seconds(
            document.get, clock)
        raw = _values_from_object(document, layout)
    else:
        raw = document
    if not isinstance(raw, list):
        raw = [raw]
    return Reading(_values(raw, layout), timestamp)


def _values_from_object(document: dict, layout: InputLayout) -> object:
    if "values" in document:
        return document["values"]
    if "value" in document:
        return document["value"]
    features = layout.features
    # calendar values come from the timestamp; a neighbour's reading may be missing
    wanted = [name for index, name in enumerate(features)
              if name not in layout.calendar_names and index not in layout.masked]
    keys = _matching_names(document, features)
    if all(name in keys for name in wanted):
        return [document.get(keys.get(name)) for name in features]
    missing = [name for name in wanted if name not in keys]
    raise InputShapeError(f"reading needs \"values\" (a list), \"value\", or a key per feature "
                          f"{wanted}; missing {missing}")


def _matching_names(given: Collection[str], features: Iterable[str]) -> Dict[str, str]:
    """{feature: the given name that spells it}: exact first, then without regard to case."""
    lowered = {}
    for name in given:
        if isinstance(name, str):
            lowered.setdefault(name.lower(), name)
    return {feature: feature if feature in given else lowered[feature.lower()]
            for feature in features if feature in given or feature.lower() in lowered}


def _values(raw: list, layout: InputLayout) -> List[float]:
    features = layout.features
    if layout.calendar and len(raw) == len(features) - len(layout.calendar):
        raw = _with_calendar_gaps(raw, layout)
    if len(raw) != len(features):
        raise InputShapeError(f"reading needs {_value_count_text(layout)} value(s) "
                              f"({', '.join(features)}), got {len(raw)}")
    values = []
    for index, (name, value) in enumerate(zip(features, raw)):
        if isinstance(value, (list, dict)):
            raise InputValueError(f"value for {name} must be a number, got {type(value).__name__}")
        if (layout.is_direction(index) and isinstance(value, str)
                and value.strip().lower() not in MISSING_WORDS):
            values.append(direction_degrees(value, f"value for {name}"))
        else:
            values.append(reading_value(value, f"value for {name}"))
    return values


def reading_values(raw: list, layout: InputLayout) -> List[float]:
    """A reading's values (numbers, None, numeric text, compass points for
    directions; calendar features may be left out) as floats, NaN where missing."""
    return _values([v.item() if hasattr(v, "item") else v for v in raw], layout)


def _with_calendar_gaps(raw: list, layout: InputLayout) -> list:
    """Values for the non-calendar features, in order: the calendar ones as missing."""
    given = iter(raw)
    return [None if layout.is_calendar(i) else next(given) for i in range(len(layout.features))]


def _value_count_text(layout: InputLayout) -> str:
    count = len(layout.features)
    if not layout.calendar:
        return str(count)
    return f"{count - len(layout.calendar)} (calendar features from the timestamp) or {count}"


class LineParser:
    """Parses the lines of one input stream. JSON lines start with '{' or '['; any
    other line is CSV: `v1,...,vF` or `timestamp,v1,...,vF`, or, after a header line
    naming the features (any case) and the time columns (see TimeColumns), columns
    in any order. A byte-order mark before the first line is dropped."""

    def __init__(self, features: InputLayout | Iterable[str], clock: Optional[tzinfo] = None) -> None:
        self.layout = as_layout(features)
        self.features = list(self.layout.features)
        self.clock = clock
        self._columns = None  # header column -> index, once a header was read
        self._time = None  # the header's TimeColumns
        self._time_index = {}  # time column -> index
        self._width = 0  # fields per line, as in the header
        self._seen_data = False

    def parse(self, line: str) -> Reading | Header:
        text = line.strip().lstrip(BOM).strip()
        if not text:
            raise InputValueError("empty line: expected a reading")
        if text[0] in "{[":
            return self._parse_json(text)
        return self._parse_csv(text)

    def _parse_json(self, text: str) -> Reading:
        try:
            document = json.loads(text)
        except RecursionError:
            raise InputValueError("malformed JSON: nested too deeply") from None
        except ValueError as exc:
            raise InputValueError(f"malformed JSON: {exc}") from None
        self._seen_data = True
        return reading_from_json(document, self.layout, self.clock)

    def _parse_csv(self, text: str) -> Reading | Header:
        try:
            fields = [field.strip() for field in next(csv.reader([text]))]
        except csv.Error as exc:
            raise InputValueError(f"malformed CSV line: {exc}") from None
        if self._columns is None and not self._seen_data and self._looks_like_header(fields):
            return self._read_header(fields)
        self._seen_data = True
        if self._columns is not None:
            return self._by_header(fields)
        return self._by_position(fields)

    def _looks_like_header(self, fields: List[str]) -> bool:
        names = ({name.lower() for name in self.features + self.layout.time_columns}
                 | set(TIMESTAMP_KEYS) | set(TIME_PARTS))
        return any(field.lower() in names for field in fields)

    def _read_header(self, fields: List[str]) -> Header:
        keys = _matching_names(fields, self.features)
        missing = [name for name in self.features
                   if name not in keys and name not in self.layout.calendar_names]
        if missing:
            raise InputShapeError(f"CSV header {fields} lacks the feature column(s) {missing}")
        self._time = TimeColumns(fields, self.layout)
        index = {name: position for position, name in enumerate(fields)}
        self._columns = {feature: index[name] for feature, name in keys.items()}
        self._width = len(fields)
        self._time_index = {name: index[name] for name in self._time.used}
        return Header(fields, list(self._time.used), list(self._time.ignored))

    def _by_header(self, fields: List[str]) -> Reading:
        if len(fields) != self._width:
            raise InputShapeError(f"expected {self._width} CSV fields as in the header, "
                                  f"got {len(fields)}")
        timestamp = self._time.seconds(lambda name: fields[self._time_index[name]], self.clock)
        raw = [fields[self._columns[name]] if name in self._columns else None
               for name in self.features]
        return Reading(_values(raw, self.layout), timestamp)

    def _timestamp(self, text: str) -> float:
        return parse_timestamp(text, self.clock, self.layout.time_format)

    def _by_position(self, fields: List[str]) -> Reading:
        count = len(self.features)
        calendar = len(self.layout.calendar)
        if calendar and len(fields) == count - calendar + 1:
            # timestamp first, the calendar features left to the timestamp
            return Reading(_values(fields[1:], self.layout), self._timestamp(fields[0]))
        if len(fields) == count:
            return Reading(_values(fields, self.layout))
        if len(fields) == count + 1:
            return Reading(_values(fields[1:], self.layout), self._timestamp(fields[0]))
        if calendar:
            count = f"{count - calendar} or {count}"
        raise InputShapeError(f"expected {count} CSV value(s) ({', '.join(self.features)}), "
                              f"optionally after a timestamp, got {len(fields)} field(s)")
