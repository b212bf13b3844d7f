"""A station file's time columns as one time line, the way pandas and people read them.

Layouts, looked for in this order unless --time-column names the columns: a single
timestamp column (timestamp, datetime, date_time, ts, epoch), separate date and time
columns, a time or date column, then year/month/day/hour (and minute). A single
column holds epoch seconds or milliseconds (by magnitude, or --time-unit), ISO 8601
text, text in --time-format, or numeric dates, which must be read day-first or
month-first without guessing: when the file says which (a day above 12 in first
place, or the only regular reading), it must be said with --dayfirst or --time-format.

Offsets: timestamps with offsets are put on one time line whatever their offsets
(daylight saving makes Europe/Berlin write +01:00 and +02:00). Times without an
offset are read in --clock; in a zone with daylight saving the repeated autumn hour
is read summer time first, winter time second (a lone one as summer time: the zone's
fold 0), and a time in the skipped spring hour with the offset before the change.
"""
from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path

import numpy as np
import pandas as pd

from edgecast_runtime.clock import (
    MILLISECONDS_FROM,
    UNITS,
    ClockError,
    TimeFormat,
    clock_name,
    epoch_unit,
    local_seconds,
    offset_name,
    parse_clock,
)
from edgecast_runtime.readings import TIME_PARTS, TIMESTAMP_KEYS, choose_time_columns

from .errors import DataError

FIRST_DATA_ROW = 2  # a CSV's first data row is line 2: messages use file line numbers
SECONDS_FROM = 1e8  # smaller epoch numbers (before 1973) are more likely counters than times
_NUMERIC_DATE = re.compile(r"^\s*\d{1,2}([./-])\d{1,2}\1\d{2,4}\b")
_DATE = re.compile(r"^\s*(\d{4}[./-]\d{1,2}[./-]\d{1,2}|\d{1,2}[./-]\d{1,2}[./-]\d{2,4})(?![\d./-])")
DATE_SAMPLE = 5  # values of a column looked at to tell whether it holds dates
_TIME_OF_DAY = re.compile(r"^\s*\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?\s*$")


@dataclass(frozen=True)
class TimeOptions:
    column: str | None = None  # one name, or names joined by commas (date,time; year,month,day,hour)
    unit: str | None = None  # s or ms for epoch numbers
    format: str | None = None  # strptime format (of date and time joined by a space)
    dayfirst: bool = False
    clock: str | None = None


@dataclass
class TimeLine:
    times: pd.Series | None  # datetime64, on one clock
    columns: list[str] = field(default_factory=list)
    clock: str | None = None
    time_format: TimeFormat | None = None  # how the times were written (the spec's optional `time_format`)
    notices: list[str] = field(default_factory=list)


def read_times(path: Path, raw: pd.DataFrame, options: TimeOptions, data_columns: set[str],
               resolve: Callable[[str], str]) -> TimeLine:
    if options.unit is not None and options.unit not in UNITS:
        raise DataError(f"time_unit must be one of {', '.join(UNITS)}, got {options.unit!r}", settings=("time_unit",))
    columns = [resolve(name.strip()) for name in options.column.split(",")] if options.column else _detect(raw, data_columns)
    line = TimeLine(None, columns)
    if len(columns) == 1:
        line.times, line.time_format = _single(path, raw[columns[0]], columns[0], options, line.notices)
    elif len(columns) == 2:
        joined = raw[columns[0]].astype("string").str.strip() + " " + raw[columns[1]].astype("string").str.strip()
        line.times, line.time_format = _single(path, joined, ",".join(columns), options, line.notices)
    elif columns:
        line.times = _from_parts(path, raw, columns)
    unused = [c for c in raw.columns if c not in columns and c not in data_columns
              and (_time_like(c) or _holds_dates(raw[c]))]
    if unused and not columns:
        _refuse_file_order(path, raw, unused)
    if unused:
        line.notices.append(f"time from {', '.join(columns)}; time-like column(s) {', '.join(unused)} not used "
                            f"(name them with --time-column)")
    _on_clock(path, line, options.clock)
    return line


def _time_like(name: str) -> bool:
    lowered = name.lower()
    return (lowered in TIMESTAMP_KEYS or lowered in TIME_PARTS or lowered == "minute"
            or re.search(r"(?:^|[^a-z])(?:date|time)", lowered) is not None)  # Date (UTC), time_utc; not update


def _holds_dates(column: pd.Series) -> bool:
    """Text whose first values are dates (ISO or numeric, with or without a time of day)."""
    if pd.api.types.is_numeric_dtype(column):
        return False
    first = column.dropna().head(DATE_SAMPLE).astype(str)
    return len(first) > 0 and bool(first.str.match(_DATE).all())


def _refuse_file_order(path: Path, raw: pd.DataFrame, unused: list[str]) -> None:
    """No time column was found, but one looks like it: never train in file order in silence."""
    present = raw[unused[0]].dropna()
    sample = f" ('{str(present.iloc[0]).strip()}')" if len(present) else ""
    named = ", ".join(f"'{name}'" for name in unused)
    raise DataError(
        f"{path}: column{'s' if len(unused) > 1 else ''} {named} look{'' if len(unused) > 1 else 's'} like "
        f"timestamps{sample}, but none was recognised as the time column, so rows would be taken in file order; "
        f"pass time_column '{unused[0]}' (and dayfirst or time_format when its dates need them)",
        settings=("time_column", "dayfirst", "time_format"))


def _detect(raw: pd.DataFrame, data_columns: set[str]) -> list[str]:
    """As the hub finds them in a header: edgecast_runtime.readings.choose_time_columns."""
    return choose_time_columns([column for column in raw.columns if column not in data_columns])


def _from_parts(path: Path, raw: pd.DataFrame, columns: list[str]) -> pd.Series:
    names = {column.lower(): column for column in columns}
    if not set(TIME_PARTS) <= set(names) or not set(names) <= {*TIME_PARTS, "minute"}:
        raise DataError(f"{path}: time_column {','.join(columns)}: expected one column, date,time, "
                        f"or {','.join(TIME_PARTS)}[,minute]", settings=("time_column",))
    parts = raw[columns].apply(pd.to_numeric, errors="coerce").set_axis([c.lower() for c in columns], axis=1)
    times = pd.to_datetime(parts, errors="coerce")
    # pandas adds the hour as a duration, so hour 25 would silently become 1 o'clock the next day.
    valid = parts["hour"].between(0, 23) & (parts["hour"] % 1 == 0)
    if "minute" in parts:
        valid &= parts["minute"].between(0, 59) & (parts["minute"] % 1 == 0)
    times = times.where(valid)
    bad = np.flatnonzero(times.isna().to_numpy())
    if len(bad):
        row = int(bad[0])
        shown = "/".join(str(value) for value in raw[columns].iloc[row])
        raise DataError(f"{path}: row {row + FIRST_DATA_ROW}: '{shown}' in {'/'.join(names)} is not a valid time")
    return times


def _single(
    path: Path, source: pd.Series, label: str, options: TimeOptions, notices: list[str]
) -> tuple[pd.Series, TimeFormat]:
    """Timestamps and how they were written, from one column (or date and time joined)."""
    numbers = _epoch_numbers(source)
    if numbers is not None:
        return _from_epoch(path, numbers, label, options.unit, notices)
    present = source.dropna()
    first = str(present.iloc[0]).strip() if len(present) else ""
    if _TIME_OF_DAY.match(first) and not options.format:
        raise DataError(f"{path}: column '{label}' holds times of day without a date ('{first}'); "
                        f"pass time_column DATE_COLUMN,{label}", settings=("time_column",))
    dayfirst, text = None, source  # (text as pandas read it: a string copy of a million rows costs a second)
    if options.format is None and _NUMERIC_DATE.match(first):
        text = source.astype("string").str.strip()
        dayfirst = options.dayfirst or _month_first_is_safe(path, text, label)
    times = _to_datetime(path, text, label, options.format, bool(dayfirst), notices)
    _reject_bad_times(path, source, times, label)
    return times, TimeFormat(None, options.format, dayfirst)


def _epoch_numbers(source: pd.Series) -> pd.Series | None:
    present = source.notna()
    if not present.any():
        return None
    if not pd.api.types.is_numeric_dtype(source):
        try:  # the first value decides cheaply for the common case of text times
            float(source[present].iloc[0])
        except (TypeError, ValueError):
            return None
    numbers = pd.to_numeric(source, errors="coerce")
    return None if numbers[present].isna().any() else numbers


def _from_epoch(
    path: Path, numbers: pd.Series, label: str, unit: str | None, notices: list[str]
) -> tuple[pd.Series, TimeFormat]:
    magnitude = float(numbers.abs().median())
    if unit is None:
        if magnitude < SECONDS_FROM:
            raise DataError(
                f"{path}: column '{label}' holds numbers ({numbers.min():g} .. {numbers.max():g}) too small for "
                f"epoch seconds or milliseconds; pass time_unit s or ms if they are", settings=("time_unit",))
        unit = epoch_unit(magnitude)
        notices.append(f"column '{label}': epoch {'milliseconds' if unit == 'ms' else 'seconds'} "
                       f"(by magnitude: {'at least' if unit == 'ms' else 'below'} {MILLISECONDS_FROM:g})")
    elif magnitude >= SECONDS_FROM and unit != epoch_unit(magnitude):
        # Read in the other unit, hourly readings would be 3.6 s apart in 1970 or 1000 h apart
        # beyond the year 5000: a model would train on that without complaint.
        named = {"s": "seconds", "ms": "milliseconds"}
        raise DataError(f"{path}: column '{label}' holds numbers around {magnitude:.4g}, epoch "
                        f"{named[epoch_unit(magnitude)]} by their size, but time_unit says {unit}",
                        settings=("time_unit",))
    times = pd.to_datetime(numbers, unit=unit, utc=True, errors="coerce")
    _reject_bad_times(path, numbers, times, label)
    return times, TimeFormat(unit)


def _to_datetime(path: Path, text: pd.Series, label: str, time_format: str | None, dayfirst: bool,
                 notices: list[str] | None = None) -> pd.Series:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas' format-inference chatter; failures are reported below
        try:
            return pd.to_datetime(text, errors="coerce", format=time_format, dayfirst=dayfirst)
        except (ValueError, TypeError):
            pass  # offsets that change mid-file (daylight saving): one time line in UTC
        try:
            times = pd.to_datetime(text, errors="coerce", format=time_format, dayfirst=dayfirst, utc=True)
        except (ValueError, TypeError) as exc:
            raise DataError(f"{path}: column '{label}': timestamps cannot be put on one time line "
                            f"({str(exc).splitlines()[0]}); pass time_format", settings=("time_format",)) from None
    if notices is not None:
        notices.append(f"column '{label}': several UTC offsets (daylight saving?), put on one time line; "
                       f"calendar features follow --clock (default UTC)")
    return times


def _month_first_is_safe(path: Path, text: pd.Series, label: str) -> bool:
    """False (read month-first) when that is the only sound reading; refuses otherwise.

    pandas guesses the order from the first value alone, so the whole column decides
    here: a first number above 12 anywhere means day-first, a second one above 12
    month-first; when neither occurs, the reading with the more regular time line wins."""
    numbers = text.str.extract(r"^\s*(\d{1,2})[./-](\d{1,2})").apply(pd.to_numeric, errors="coerce")
    first_big, second_big = (numbers[0] > 12).to_numpy(), (numbers[1] > 12).to_numpy()
    if second_big.any() and not first_big.any():
        return False
    if first_big.any() and second_big.any():
        return False  # neither order reads the whole column: the usual row error follows
    if first_big.any():
        row = int(np.flatnonzero(first_big)[0])
        what = f"dates are day-first ('{text.iloc[row]}' in row {row + FIRST_DATA_ROW})"
    else:
        month_first = _to_datetime(path, text, label, None, False)
        day_first = _to_datetime(path, text, label, None, True)
        if month_first.equals(day_first):
            return False
        coverage = _coverage(month_first), _coverage(day_first)
        if coverage[0] > coverage[1]:
            return False
        why = "only day-first gives a regular series" if coverage[1] > coverage[0] else "both give a regular series"
        what = f"dates like '{text.dropna().iloc[0]}' could be day-first or month-first ({why})"
    separator = _NUMERIC_DATE.match(text.dropna().iloc[0]).group(1)
    raise DataError(f"{path}: column '{label}': {what}; pass dayfirst or time_format "
                    f"(e.g. '%d{separator}%m{separator}%Y %H:%M')", settings=("dayfirst", "time_format"))


def _coverage(times: pd.Series) -> float:
    """Rows per step of the time line they span: 1.0 for a regular series without gaps."""
    ordered = times.dropna().sort_values()
    if len(ordered) < 2:
        return 1.0
    step = ordered.diff().dropna().mode().iloc[0]
    if step <= pd.Timedelta(0):
        return 0.0
    return len(ordered) / ((ordered.iloc[-1] - ordered.iloc[0]) / step + 1)


def _reject_bad_times(path: Path, source: pd.Series, times: pd.Series, label: str) -> None:
    bad = np.flatnonzero((times.isna() & source.notna()).to_numpy() | source.isna().to_numpy())
    if len(bad):
        row = int(bad[0])
        raise DataError(f"{path}: row {row + FIRST_DATA_ROW}: '{source.iloc[row]}' in {label} is not a valid time")


def clock_of(text: str) -> tzinfo:
    """The clock setting as a tzinfo; a bad one is a one-line DataError."""
    try:
        return parse_clock(text)
    except ClockError as exc:  # "clock 'X': ..."
        raise DataError(str(exc), settings=("clock",)) from None


def _on_clock(path: Path, line: TimeLine, clock: str | None) -> None:
    """Timestamps on the data's clock, and its name (None when nothing says it)."""
    times = line.times
    zone = None if times is None else getattr(times.dt, "tz", None)
    if clock is None:
        if zone is not None:
            line.clock = getattr(zone, "key", None) or _fixed_name(zone)
        return
    if times is None:
        raise DataError(f"{path}: clock {clock!r} was given, but the file has no timestamps", settings=("clock",))
    target = clock_of(clock)
    line.clock = clock_name(target)
    line.times = times.dt.tz_convert(target) if zone is not None else _localize(times, target, line.notices)


def _fixed_name(zone: tzinfo) -> str:
    offset = zone.utcoffset(None)
    return offset_name(offset) if offset is not None else str(zone)


def _localize(times: pd.Series, zone: tzinfo, notices: list[str]) -> pd.Series:
    """Wall-clock times in `zone` (see the module's docstring for the changes of clock)."""
    try:
        return times.dt.tz_localize(zone, ambiguous="raise", nonexistent="raise")
    except ValueError:  # an ambiguous or non-existent wall time
        pass
    first = ~times.duplicated(keep="first")
    localized = times.dt.tz_localize(zone, ambiguous=first.to_numpy(), nonexistent="NaT")
    repeated = times[times.duplicated(keep=False) & localized.notna()]
    skipped = np.flatnonzero((localized.isna() & times.notna()).to_numpy())
    for row in skipped:  # few: the rows written in a skipped hour, read with the offset before the change
        seconds = local_seconds(times.iloc[row].to_pydatetime().replace(tzinfo=None), zone)
        localized.iloc[row] = pd.Timestamp(datetime.fromtimestamp(seconds, zone))
    name = clock_name(zone)
    if len(repeated):
        notices.append(f"{name}: {len(repeated)} rows in a repeated autumn hour ({repeated.iloc[0]:%Y-%m-%d %H:%M}...) "
                       f"read as summer time first, winter time second")
    if len(skipped):
        notices.append(f"{name}: {len(skipped)} rows in a skipped spring hour ({times.iloc[skipped[0]]:%Y-%m-%d %H:%M}...) "
                       f"read with the offset before the change")
    return localized
