"""A reading message as the archive keeps it: (station, timestamp, {name: value}).

The payload is the JSON object a hub publishes on the readings topic (`edgecast-runtime
mqtt --publish-readings`, neighbours.py: {"station", "timestamp", NAME: value, ...}): the
timestamp in epoch seconds or milliseconds or ISO 8601 (without an offset: UTC), any
of the runtime's timestamp keys (timestamp, datetime, ts, time, ...); values are
numbers, numeric text or null (missing). The station is the topic level the filter's
`+` stands for (edgecast/readings/+: the hub's authenticated topic) or, for a filter
without `+`, the payload's "station"; given both, they must agree. Ids are normalised
as everywhere in the toolkit (trainer/stations.py: lower case, safe as a folder name).
Anything else is a BadReading: counted and logged by the collector, never stored.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

from edgecast.base import EdgecastError
from edgecast.trainer.stations import safe_station_id
from edgecast_runtime.clock import UTC, parse_timestamp
from edgecast_runtime.errors import InputValueError
from edgecast_runtime.mqtt.policy import DEFAULT_MAX_READING_BYTES
from edgecast_runtime.readings import TIMESTAMP_KEYS

STATION_KEY = "station"
MAX_FIELDS = 256  # a reading is a station's sensors, not a document
MAX_NAME_CHARACTERS = 128


class BadReading(Exception):
    """A message that is not a reading; the text says why (it goes to the log)."""


@dataclass(frozen=True)
class ArchivedReading:
    station: str
    milliseconds: int  # since the epoch, UTC: the key with the station
    values: dict  # name -> float (NaN: missing)

    def journal_line(self) -> bytes:
        # NaN is written as null: JSON has no NaN and the journal must stay strict JSON.
        values = {k: (None if math.isnan(v) else v) for k, v in self.values.items()}
        return (json.dumps({"s": self.station, "t": self.milliseconds, "v": values},
                           separators=(",", ":"), allow_nan=False) + "\n").encode()

    @classmethod
    def from_journal(cls, line: bytes) -> ArchivedReading:
        record = json.loads(line)
        return cls(record["s"], int(record["t"]),
                   {k: (math.nan if v is None else float(v)) for k, v in record["v"].items()})


def station_level(topic_filter: str) -> int | None:
    """The level of the filter's first `+` (the station's), or None."""
    levels = topic_filter.split("/")
    return levels.index("+") if "+" in levels else None


def parse_reading(topic: str, payload: bytes, level: int | None) -> ArchivedReading:
    """The reading in `payload`, received on `topic` (BadReading when it is none)."""
    if len(payload) > DEFAULT_MAX_READING_BYTES:
        raise BadReading(f"{len(payload)} bytes, above the {DEFAULT_MAX_READING_BYTES}-byte limit of a reading")
    try:
        document = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadReading(f"not a JSON reading ({str(exc)[:120]})") from None
    if not isinstance(document, dict):
        raise BadReading("a reading must be a JSON object with a timestamp")
    station = _station(topic, document, level)
    time_key = next((k for k in document if isinstance(k, str) and k.lower() in TIMESTAMP_KEYS), None)
    if time_key is None:
        raise BadReading(f"no timestamp ({', '.join(TIMESTAMP_KEYS[:3])}, ...)")
    try:
        seconds = parse_timestamp(document[time_key], UTC)
    except InputValueError as exc:
        raise BadReading(str(exc)) from None
    names = [k for k in document if k not in (STATION_KEY, time_key)]
    if not names:
        raise BadReading("no values beside the timestamp")
    if len(names) > MAX_FIELDS:
        raise BadReading(f"{len(names)} values, above the limit of {MAX_FIELDS}")
    return ArchivedReading(station, round(seconds * 1000), {name: _value(name, document[name]) for name in names})


def _station(topic: str, document: dict, level: int | None) -> str:
    given = document.get(STATION_KEY)
    if given is not None and not isinstance(given, str):
        raise BadReading(f"'station' must be a station id, got {str(given)[:40]!r}")
    levels = topic.split("/")
    from_topic = levels[level] if level is not None and level < len(levels) else None
    text = from_topic or given
    if not text:
        raise BadReading("no station: neither the topic nor the payload names one")
    try:
        station = safe_station_id(text, topic)
        if given is not None and from_topic is not None and safe_station_id(given, topic) != station:
            raise BadReading(f"the payload's station {given[:40]!r} is not the topic's {from_topic[:40]!r}")
    except EdgecastError as exc:
        raise BadReading(str(exc)) from None
    return station


def _value(name: str, value: object) -> float:
    if not name or len(name) > MAX_NAME_CHARACTERS:
        raise BadReading(f"a value name must have 1 to {MAX_NAME_CHARACTERS} characters")
    if value is None:
        return math.nan
    if isinstance(value, bool):
        raise BadReading(f"{name}: true/false is not a reading")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadReading(f"{name}: {str(value)[:40]!r} is not a number") from None
    if math.isinf(number):
        raise BadReading(f"{name}: {value!r} is not finite")
    return number  # NaN (text "nan") is a missing value, like null
