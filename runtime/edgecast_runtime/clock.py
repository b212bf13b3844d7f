"""Clocks and timestamps: the one parser the trainer and the hub share.

A clock is UTC, a fixed offset (+08:00, -0530, UTC+8) or an IANA zone name
(Europe/Berlin; needs the system's zone files). A timestamp is seconds since the
epoch, read from a number (seconds or milliseconds), ISO 8601 text, text in a
recorded format or day-first/month-first layout, or year/month/day/hour parts.
Times written without a zone are read in the data's clock; in a zone with daylight
saving, the repeated autumn hour is read as its first occurrence and a time in the
skipped spring hour with the offset before the change (PEP 495, fold 0).
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any, Optional

from edgecast_runtime.errors import EdgecastRuntimeError, InputValueError

UTC = timezone.utc
_OFFSET = re.compile(r"^(?:UTC|GMT)?([+-])(\d{1,2})(?::?(\d{2}))?$", re.IGNORECASE)
UNITS = ("s", "ms")
# Epoch numbers from 1e11 up are milliseconds: as seconds they would be after the year 5000.
MILLISECONDS_FROM = 1e11
_DATE_SEPARATORS = "/.-"
_TIMES_OF_DAY = (" %H:%M:%S", " %H:%M", "T%H:%M:%S", "T%H:%M", "")
# The calendar's range (years 1 to 9999): a timestamp outside it has no hour or weekday,
# and differences of timestamps inside it stay finite.
EARLIEST_SECONDS = -62_135_596_800.0  # 0001-01-01T00:00:00Z
LATEST_SECONDS = 253_402_300_799.0  # 9999-12-31T23:59:59Z


class ClockError(EdgecastRuntimeError):
    """A clock name that is not UTC, an offset or a known zone."""


def parse_clock(text: str) -> tzinfo:
    """The tzinfo of a clock name: UTC, a fixed offset (+08:00, -0530, UTC+8) or an IANA zone."""
    stripped = text.strip()
    if stripped.upper() in ("UTC", "Z", "GMT"):
        return UTC
    match = _OFFSET.match(stripped)
    if match:
        sign, hours, minutes = match.group(1), int(match.group(2)), int(match.group(3) or 0)
        if hours > 23 or minutes > 59:
            raise ClockError(f"clock {text!r}: offset out of range")
        delta = timedelta(hours=hours, minutes=minutes)
        return UTC if not delta else timezone(-delta if sign == "-" else delta)
    try:
        from zoneinfo import ZoneInfo
        return ZoneInfo(stripped)
    except Exception:  # ZoneInfoNotFoundError, ValueError
        raise ClockError(
            f"clock {text!r} is not UTC, an offset like +08:00, or a time zone name "
            f"known to this system") from None


def clock_name(clock: Optional[tzinfo]) -> str:
    """The name a spec records for a clock: UTC, +08:00 style, or the zone's key."""
    if clock is None or clock is UTC:
        return "UTC"
    key = getattr(clock, "key", None)
    if key:
        return key
    offset = clock.utcoffset(None)
    return offset_name(offset) if offset is not None else str(clock)


def offset_name(offset: timedelta) -> str:
    if not offset:
        return "UTC"
    minutes = int(abs(offset.total_seconds()) // 60)
    return f"{'-' if offset.total_seconds() < 0 else '+'}{minutes // 60:02d}:{minutes % 60:02d}"


def to_clock(seconds: float, clock: Optional[tzinfo]) -> datetime:
    try:
        return datetime.fromtimestamp(seconds, clock or UTC)
    except (OverflowError, OSError, ValueError):
        raise InputValueError(f"timestamp {seconds!r} is out of range for a calendar") from None


@dataclass(frozen=True)
class TimeFormat:
    """How a file writes its times, beyond ISO 8601: the epoch unit (None: by
    magnitude), a strptime format, and whether numeric dates are day-first (None:
    only ISO dates are read)."""

    unit: Optional[str] = None
    format: Optional[str] = None
    dayfirst: Optional[bool] = None


def epoch_unit(magnitude: float) -> str:
    """The unit of an epoch number by its size (see MILLISECONDS_FROM)."""
    return "ms" if abs(magnitude) >= MILLISECONDS_FROM else "s"


def epoch_seconds(number: float, unit: Optional[str] = None) -> float:
    return number / 1000.0 if (unit or epoch_unit(number)) == "ms" else number


def local_seconds(moment: datetime, clock: Optional[tzinfo]) -> float:
    """Epoch seconds of a time written without a zone, read in `clock` (fold 0)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=clock or UTC)
    try:
        return moment.timestamp()
    except (OverflowError, OSError, ValueError):
        raise InputValueError(f"timestamp {moment!r} is out of range") from None


def parse_timestamp(value: Any, clock: Optional[tzinfo] = None,
                    time_format: Optional[TimeFormat] = None) -> float:
    """Seconds since the epoch from a number or text (see the module's docstring)."""
    time_format = time_format or TimeFormat()
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
        raise InputValueError(f"timestamp must be a number or ISO 8601 text, got {value!r}")
    if isinstance(value, numbers.Real):
        try:
            seconds = epoch_seconds(float(value), time_format.unit)
        except OverflowError:  # an integer beyond float range
            seconds = checked_seconds(LATEST_SECONDS * 2, value)  # out of range, said so
    else:
        seconds = _seconds_from_text(value.strip(), clock, time_format)
    return checked_seconds(seconds, value)


def checked_seconds(seconds: Any, shown: Any = None) -> float:
    """`seconds` as a float when it is a finite timestamp within the calendar's range
    (years 1 to 9999); InputValueError otherwise, showing `shown` (default: seconds)."""
    shown = seconds if shown is None else shown
    text = repr(shown) if len(repr(shown)) <= 40 else repr(shown)[:37] + "..."
    if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real):
        raise InputValueError(f"timestamp must be a number of seconds, got {text}")
    try:
        seconds = float(seconds)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds):
        raise InputValueError(f"timestamp must be finite, got {text}")
    if not EARLIEST_SECONDS <= seconds <= LATEST_SECONDS:
        raise InputValueError(f"timestamp {text} is out of range (years 1 to 9999)")
    return seconds


def _seconds_from_text(text: str, clock: tzinfo | None, time_format: TimeFormat) -> float:
    try:
        return epoch_seconds(float(text), time_format.unit)
    except ValueError:
        pass
    moment = _iso(text)
    if moment is None and time_format.format:
        try:
            moment = datetime.strptime(text, time_format.format)
        except ValueError:
            raise InputValueError(
                f"timestamp {text[:40]!r} does not match the model's time format "
                f"{time_format.format!r}") from None
    if moment is None and time_format.dayfirst is not None:
        moment = _numeric_date(text, time_format.dayfirst)
    if moment is None:
        raise InputValueError(
            f"timestamp {text[:40]!r} is neither seconds since the epoch nor ISO 8601") from None
    return local_seconds(moment, clock)


def _iso(text: str) -> Optional[datetime]:
    try:
        return datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        return None


def _numeric_date(text: str, dayfirst: bool) -> Optional[datetime]:
    """A day-first (13/03/2013 00:00) or month-first date, as the training file wrote them."""
    for separator in _DATE_SEPARATORS:
        if separator not in text:
            continue
        for year in ("%Y", "%y"):
            order = ("%d", "%m") if dayfirst else ("%m", "%d")
            date = separator.join(order + (year,))
            for time_of_day in _TIMES_OF_DAY:
                try:
                    return datetime.strptime(text, date + time_of_day)
                except ValueError:
                    continue
    return None


def seconds_from_parts(parts: dict, clock: Optional[tzinfo]) -> float:
    """Epoch seconds of year/month/day/hour (and optional minute) values in `clock`."""
    try:
        numbers = {key: float(value) for key, value in parts.items()}
        if any(not number.is_integer() for number in numbers.values()):
            raise ValueError
        moment = datetime(int(numbers["year"]), int(numbers["month"]), int(numbers["day"]),
                          int(numbers["hour"]), int(numbers.get("minute", 0)))
    except (ValueError, OverflowError):
        shown = "/".join(str(value) for value in parts.values())
        raise InputValueError(f"'{shown}' in {'/'.join(parts)} is not a valid time") from None
    return local_seconds(moment, clock)
