"""Readings for the streaming forecaster: one value per feature and an optional
timestamp, parsed from a JSON object, a JSON array or number, or a CSV line (with
or without a header). Shared by `stream`, POST /v1/observe and `mqtt`."""

import csv
import json
import math
import numbers
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import List, Optional

from .encodings import InputLayout, direction_degrees
from .errors import InputShapeError, InputValueError
from .inputs import MISSING_WORDS, reading_value

TIMESTAMP_KEYS = ("timestamp", "ts", "time")


@dataclass(frozen=True)
class Reading:
    values: List[float]  # one per feature, in the model's order; NaN where missing
    timestamp: Optional[float] = None  # seconds since the epoch
    # (calendar features not given are NaN: the streaming forecaster fills them
    # from the timestamp)


@dataclass(frozen=True)
class Header:
    columns: List[str]


def as_layout(features_or_layout) -> InputLayout:
    if isinstance(features_or_layout, InputLayout):
        return features_or_layout
    return InputLayout(list(features_or_layout))


def parse_timestamp(value, clock=None) -> float:
    """Seconds since the epoch from a number or an ISO 8601 string; an ISO time
    without a zone is read in `clock` (the data's clock, UTC by default)."""
    if isinstance(value, bool):
        raise InputValueError(f"timestamp must be a number or ISO 8601 text, got {value!r}")
    if isinstance(value, numbers.Real):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _timestamp_from_text(value.strip(), clock)
    else:
        raise InputValueError(f"timestamp must be a number or ISO 8601 text, got {value!r}")
    if not math.isfinite(seconds):
        raise InputValueError(f"timestamp must be finite, got {value!r}")
    return seconds


def _timestamp_from_text(text: str, clock=None) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        raise InputValueError(
            f"timestamp {text[:40]!r} is neither seconds since the epoch nor ISO 8601") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=clock or timezone.utc)
    try:
        return moment.timestamp()
    except (OverflowError, ValueError):
        raise InputValueError(f"timestamp {text[:40]!r} is out of range") from None


def reading_from_json(document, features, clock=None) -> Reading:
    """A reading from decoded JSON: a number (one-feature models), a list of values,
    or an object with "values" (list), "value" (number) or one key per feature
    name, and optionally "timestamp" (or "ts", "time"). `features` is the model's
    feature list or its InputLayout; calendar features may be left out (they come
    from the timestamp) and directions may be compass points."""
    layout = as_layout(features)
    timestamp = None
    if isinstance(document, dict):
        for key in TIMESTAMP_KEYS:
            if document.get(key) is not None:
                timestamp = parse_timestamp(document[key], clock)
                break
        raw = _values_from_object(document, layout)
    else:
        raw = document
    if not isinstance(raw, list):
        raw = [raw]
    return Reading(_values(raw, layout), timestamp)


def _values_from_object(document: dict, layout: InputLayout):
    if "values" in document:
        return document["values"]
    if "value" in document:
        return document["value"]
    features = layout.features
    wanted = [name for name in features if name not in layout.calendar_names]
    if all(name in document for name in wanted):
        return [document.get(name) for name in features]
    missing = [name for name in wanted if name not in document]
    raise InputShapeError(f"reading needs \"values\" (a list), \"value\", or a key per feature "
                          f"{wanted}; missing {missing}")


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
    naming the features (and optionally a timestamp column), columns in any order."""

    def __init__(self, features, clock=None):
        self.layout = as_layout(features)
        self.features = list(self.layout.features)
        self.clock = clock
        self._columns = None  # header column -> index, once a header was read
        self._seen_data = False

    def parse(self, line: str):
        text = line.strip()
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

    def _parse_csv(self, text: str):
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

    def _looks_like_header(self, fields) -> bool:
        names = set(self.features) | set(TIMESTAMP_KEYS) | {"date", "datetime"}
        return any(field in names for field in fields)

    def _read_header(self, fields) -> Header:
        missing = [name for name in self.features
                   if name not in fields and name not in self.layout.calendar_names]
        if missing:
            raise InputShapeError(f"CSV header {fields} lacks the feature column(s) {missing}")
        self._columns = {name: index for index, name in enumerate(fields)}
        return Header(fields)

    def _by_header(self, fields) -> Reading:
        if len(fields) != len(self._columns):
            raise InputShapeError(f"expected {len(self._columns)} CSV fields as in the header, "
                                  f"got {len(fields)}")
        timestamp = None
        for key in TIMESTAMP_KEYS + ("date", "datetime"):
            if key in self._columns and fields[self._columns[key]]:
                timestamp = parse_timestamp(fields[self._columns[key]], self.clock)
                break
        raw = [fields[self._columns[name]] if name in self._columns else None
               for name in self.features]
        return Reading(_values(raw, self.layout), timestamp)

    def _by_position(self, fields) -> Reading:
        count = len(self.features)
        calendar = len(self.layout.calendar)
        if calendar and len(fields) == count - calendar + 1:
            # timestamp first, the calendar features left to the timestamp
            return Reading(_values(fields[1:], self.layout), parse_timestamp(fields[0], self.clock))
        if len(fields) == count:
            return Reading(_values(fields, self.layout))
        if len(fields) == count + 1:
            return Reading(_values(fields[1:], self.layout), parse_timestamp(fields[0], self.clock))
        if calendar:
            count = f"{count - calendar} or {count}"
        raise InputShapeError(f"expected {count} CSV value(s) ({', '.join(self.features)}), "
                              f"optionally after a timestamp, got {len(fields)} field(s)")

