"""Load a sensor CSV into a regular, gap-marked time series.

Time comes from a timestamp column or from `year, month, day, hour` columns; rows are
sorted, a regular interval is detected and missing timestamps become explicit NaN rows.
Short gaps are interpolated, long ones stay NaN so that no window crosses them.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from edgecast_runtime.contract import CALENDAR_PERIODS, DIRECTION

from . import features as encodings_of
from .errors import DataError

TIMESTAMP_NAMES = ("timestamp", "datetime", "date_time", "time", "date")
TIME_PARTS = ("year", "month", "day", "hour")
FIRST_DATA_ROW = 2  # a CSV's first data row is line 2: messages use file line numbers


@dataclass
class Series:
    """A regular series: `frame` columns are the features, target first."""

    frame: pd.DataFrame
    target: str
    interval_seconds: float | None
    time_columns: list[str]
    source: str
    sha256: str
    rows_read: int
    values_interpolated: int
    values_missing: int
    encodings: list[dict] | None = None  # one per feature (trainer/features.py); None: all numeric
    clock: str | None = None  # the timestamps' clock (UTC, +08:00, a zone name); None: not known

    def __post_init__(self):
        if self.encodings is None:
            self.encodings = [encodings_of.numeric(name) for name in self.frame.columns]

    @property
    def features(self) -> list[str]:
        return list(self.frame.columns)

    def values(self) -> np.ndarray:
        return self.frame.to_numpy(dtype=np.float64)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_csv(
    path: str | Path,
    target: str,
    features: list[str] | tuple[str, ...] = (),
    time_column: str | None = None,
    max_gap: int = 6,
    clock: str | None = None,
) -> Series:
    """`clock`: the clock of timestamps written without a zone (the UCI Beijing data: +08:00),
    recorded in the spec so the runtime reads hub timestamps in it; timestamps with a
    zone are converted to it. Without it, zoned timestamps keep their own offset."""
    path = Path(path)
    raw = _read_table(path)
    columns = _ordered_columns(target, features)
    derived = [n for n in columns if n in CALENDAR_PERIODS and n not in raw.columns and n != target]
    read = [n for n in columns if n not in derived]
    _require_columns(path, raw, read + ([time_column] if time_column else []))
    times, time_columns = _parse_time(path, raw, time_column)
    times, clock = _on_clock(path, times, clock)
    if derived and times is None:
        raise DataError(f"{path}: {', '.join(derived)} come from timestamps, but the file has no time column")
    parsed = {name: _feature_column(path, raw, name, name == target) for name in read}
    frame, interval = _regularise(path, pd.DataFrame({name: parsed[name][0] for name in read}), times)
    for name in derived:
        frame[name] = encodings_of.calendar_values(name, frame.index)
    frame = frame[columns]
    for name in read:  # a column with no value at all would leave no window, and a misleading message
        if frame[name].isna().all():
            raise DataError(f"{path}: column '{name}' has no numeric values")
    encodings = [parsed[n][1] if n in parsed else encodings_of.calendar(n) for n in columns]
    series = _fill_gaps(frame, target, max_gap, interval, time_columns, path, len(raw), encodings)
    series.clock = clock
    return series


def parse_clock(text: str):
    """(name, tzinfo) of a clock: UTC, a fixed offset (+08:00, -0530, +8) or an IANA zone
    name. The runtime accepts the same forms (edgecast_runtime.encodings.parse_clock);
    the trainer may not import the runtime, hence this twin."""
    stripped = text.strip()
    if stripped.upper() in ("UTC", "Z", "GMT"):
        return "UTC", timezone.utc
    match = re.fullmatch(r"(?:UTC|GMT)?([+-])(\d{1,2})(?::?(\d{2}))?", stripped, re.IGNORECASE)
    if match and int(match.group(2)) <= 23 and int(match.group(3) or 0) <= 59:
        sign, hours, minutes = match.group(1), int(match.group(2)), int(match.group(3) or 0)
        offset = timedelta(hours=hours, minutes=minutes) * (-1 if sign == "-" else 1)
        return _offset_name(offset), timezone(offset)
    try:
        from zoneinfo import ZoneInfo

        return stripped, ZoneInfo(stripped)
    except Exception:  # ZoneInfoNotFoundError, ValueError
        raise DataError(f"--clock {text!r} is not UTC, an offset like +08:00, or a time zone name") from None


def _offset_name(offset) -> str:
    if not offset:
        return "UTC"
    minutes = int(abs(offset.total_seconds()) // 60)
    return f"{'-' if offset.total_seconds() < 0 else '+'}{minutes // 60:02d}:{minutes % 60:02d}"


def _on_clock(path: Path, times, clock: str | None):
    """Timestamps in the data's clock, and its name (None when nothing says it)."""
    if clock is None:
        zone = None if times is None else getattr(times.dt, "tz", None)
        if zone is None:
            return times, None
        offset = zone.utcoffset(None)
        return times, getattr(zone, "key", None) or (_offset_name(offset) if offset is not None else str(zone))
    if times is None:
        raise DataError(f"{path}: --clock {clock!r} was given, but the file has no timestamps")
    name, zone = parse_clock(clock)
    if getattr(times.dt, "tz", None) is not None:
        times = times.dt.tz_convert(zone)
    return times, name


def series_from_values(values: list[float], name: str, source: str, sha256: str) -> Series:
    """A series without timestamps (the embedded tutorial data): one step per value."""
    frame = pd.DataFrame({name: np.asarray(values, dtype=np.float64)})
    return Series(frame, name, None, [], source, sha256, len(frame), 0, 0)


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        raw = pd.read_csv(path, na_values=["NA", "NaN", "nan", ""], keep_default_na=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    if raw.empty:
        raise DataError(f"{path}: the file has a header but no data rows")
    raw.columns = [str(c).strip() for c in raw.columns]
    return raw


def _ordered_columns(target: str, features) -> list[str]:
    ordered = [target]
    for name in features:
        if name not in ordered:
            ordered.append(name)
    return ordered


def _require_columns(path: Path, raw: pd.DataFrame, names: list[str]) -> None:
    missing = [n for n in names if n not in raw.columns]
    if missing:
        shown = ", ".join(raw.columns[:20])
        hint = " (is the delimiter a comma?)" if len(raw.columns) == 1 else ""
        raise DataError(f"{path}: no column {', '.join(repr(m) for m in missing)}; columns are: {shown}{hint}")


def _parse_time(path: Path, raw: pd.DataFrame, time_column: str | None):
    if time_column is None:
        lowered = {c.lower(): c for c in raw.columns}
        time_column = next((lowered[n] for n in TIMESTAMP_NAMES if n in lowered), None)
    if time_column is not None:
        try:
            times = pd.to_datetime(raw[time_column], errors="coerce")
        except (ValueError, TypeError) as exc:  # e.g. offsets that change mid-file (daylight saving)
            raise DataError(
                f"{path}: column '{time_column}': timestamps cannot be put on one time line "
                f"({str(exc).splitlines()[0]}); write them all in one offset or in UTC"
            ) from None
        _reject_bad_times(path, raw[time_column], times, time_column)
        return times, [time_column]
    if all(part in raw.columns for part in TIME_PARTS):
        parts = raw[list(TIME_PARTS)].apply(pd.to_numeric, errors="coerce")
        times = pd.to_datetime(parts, errors="coerce")
        # pandas adds the hour as a duration, so hour 25 would silently become 1 o'clock the next day.
        times = times.where(parts["hour"].between(0, 23) & (parts["hour"] % 1 == 0))
        bad = np.flatnonzero(times.isna().to_numpy())
        if len(bad):
            row = int(bad[0])
            shown = "/".join(str(value) for value in raw[list(TIME_PARTS)].iloc[row])
            raise DataError(f"{path}: row {row + FIRST_DATA_ROW}: '{shown}' in year/month/day/hour is not a valid time")
        return times, list(TIME_PARTS)
    return None, []


def _reject_bad_times(path: Path, source: pd.Series, times: pd.Series, label: str) -> None:
    bad = np.flatnonzero(times.isna().to_numpy())
    if len(bad):
        row = int(bad[0])
        raise DataError(f"{path}: row {row + FIRST_DATA_ROW}: '{source.iloc[row]}' in {label} is not a valid time")


def _feature_column(path: Path, raw: pd.DataFrame, name: str, is_target: bool) -> tuple[pd.Series, dict]:
    """A column as float64 with its encoding: compass points become degrees (calm < 0)."""
    degrees = None if is_target else encodings_of.compass_degrees(raw[name])
    if degrees is not None:
        return degrees, encodings_of.direction(name)
    return _numeric_column(path, raw, name), encodings_of.numeric(name)


def _numeric_column(path: Path, raw: pd.DataFrame, name: str) -> pd.Series:
    original = raw[name]
    numbers = pd.to_numeric(original, errors="coerce")
    bad = np.flatnonzero((numbers.isna() & original.notna()).to_numpy())
    if len(bad):
        row = int(bad[0])
        raise DataError(
            f"{path}: column '{name}' row {row + FIRST_DATA_ROW}: '{original.iloc[row]}' is not a number"
            f" ({len(bad)} such value{'s' if len(bad) > 1 else ''})"
        )
    # Infinities are readings a sensor could not have made: treat them as missing.
    return numbers.astype(np.float64).replace([np.inf, -np.inf], np.nan)


def _regularise(path: Path, frame: pd.DataFrame, times) -> tuple[pd.DataFrame, float | None]:
    if times is None:
        return frame.reset_index(drop=True), None
    frame = frame.set_axis(pd.DatetimeIndex(times.to_numpy(), name="time"))
    duplicated = frame.index.duplicated()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated)[0])
        raise DataError(f"{path}: row {row + FIRST_DATA_ROW}: timestamp {frame.index[row]} appears more than once")
    frame = frame.sort_index(kind="stable")
    if len(frame) < 2:
        return frame, None
    steps = frame.index.to_series().diff().dropna()
    step = steps.mode().iloc[0]
    off_grid = ((frame.index - frame.index[0]) % step) != pd.Timedelta(0)
    if off_grid.any():
        at = frame.index[np.flatnonzero(off_grid)[0]]
        raise DataError(f"{path}: timestamp {at} is off the detected sampling interval of {step}")
    grid = pd.date_range(frame.index[0], frame.index[-1], freq=step, name="time")
    return frame.reindex(grid), step.total_seconds()


def _fill_gaps(frame, target, max_gap, interval, time_columns, path, rows_read, encodings) -> Series:
    before = int(frame.isna().sum().sum())
    # Angles and calm codes do not interpolate linearly (350 and 10 degrees are neighbours).
    hold = {e["feature"] for e in encodings if e["kind"] == DIRECTION}
    filled = frame.apply(lambda column: fill_short_gaps(column, max_gap, hold=column.name in hold))
    after = int(filled.isna().sum().sum())
    return Series(
        filled, target, interval, time_columns, str(path), file_sha256(path), rows_read, before - after, after, encodings
    )


def fill_short_gaps(column: pd.Series, max_gap: int, hold: bool = False) -> pd.Series:
    """Interpolate runs of at most `max_gap` missing values; longer runs stay missing.

    pandas' `limit=` would fill the first `max_gap` values of a long gap too, which
    invents data; here a run is filled whole or not at all. `hold` repeats the last
    value before the run instead of interpolating (for directions).
    """
    missing = column.isna()
    if not missing.any() or max_gap <= 0:
        return column
    run_id = (missing != missing.shift()).cumsum()
    run_length = missing.groupby(run_id).transform("sum")
    positional = column.reset_index(drop=True)
    if hold:
        interpolated = positional.ffill().where(positional.bfill().notna())
    else:
        interpolated = positional.interpolate(method="linear", limit_area="inside")
    interpolated.index = column.index
    fillable = missing & (run_length <= max_gap) & interpolated.notna()
    return column.where(~fillable, interpolated)
