"""Load a sensor CSV into a regular, gap-marked time series.

The file's dialect is sniffed (trainer/dialect.py), its time columns become one time
line (trainer/times.py), and impossible readings become missing (trainer/validity.py);
rows are sorted, a regular interval is detected and missing timestamps become explicit
NaN rows. Short gaps are interpolated, long ones stay NaN so that no window crosses them.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from edgecast_runtime.clock import TimeFormat
from edgecast_runtime.contract import CALENDAR_PERIODS, DIRECTION
from edgecast_runtime.manifest import file_sha256
from edgecast_runtime.spec import Encoding

from . import features as encodings_of
from . import validity
from .dialect import Dialect, decimal_mark, option_character, sniff
from .errors import DataError
from .times import FIRST_DATA_ROW, TimeLine, TimeOptions, read_times


@dataclass(frozen=True)
class ReadOptions:
    """How to read a station file, beyond its columns (the CLI's train options)."""

    time_column: str | None = None  # a name, or names joined by commas: date,time or year,month,day,hour
    time_unit: str | None = None  # s or ms for epoch numbers (default: by magnitude)
    time_format: str | None = None  # strptime format of the time (date and time joined by a space)
    dayfirst: bool = False
    clock: str | None = None  # clock of times without an offset (UTC, +08:00, Europe/Berlin)
    delimiter: str | None = None  # default: sniffed
    decimal: str | None = None  # default: sniffed
    valid_ranges: dict = field(default_factory=dict)  # {column: (min or None, max or None)}

    def time(self) -> TimeOptions:
        return TimeOptions(self.time_column, self.time_unit, self.time_format, self.dayfirst, self.clock)


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
    encodings: list[Encoding] | None = None  # one per feature (trainer/features.py); None: all numeric
    clock: str | None = None  # the timestamps' clock (UTC, +08:00, a zone name); None: not known
    time_format: TimeFormat | None = None  # how the file wrote its times (the spec's optional `time_format`)
    valid_ranges: dict = field(default_factory=dict)  # {feature: (min or None, max or None)}
    invalid: dict = field(default_factory=dict)  # {column: {reason: count}} of readings made missing
    notices: list[str] = field(default_factory=list)  # what the reader decided on its own
    neighbours: dict | None = None  # trainer/neighbours.py NeighbourRecord.as_dict(), when added
    files: list[str] = field(default_factory=list)  # the files read, in time order (several: joined)

    def __post_init__(self) -> None:
        if self.encodings is None:
            self.encodings = [encodings_of.numeric(name) for name in self.frame.columns]

    @property
    def features(self) -> list[str]:
        return list(self.frame.columns)

    def values(self) -> np.ndarray:
        return self.frame.to_numpy(dtype=np.float64)

    def notes(self) -> list[str]:
        """The notices and the invalid-reading counts, one line each, for the user."""
        counts = validity.describe(self.invalid)
        return self.notices + ([counts] if counts else [])


def load_csv(
    path: str | Path | Sequence[str | Path],
    target: str,
    features: list[str] | tuple[str, ...] = (),
    time_column: str | None = None,
    max_gap: int = 6,
    clock: str | None = None,
    options: ReadOptions | None = None,
) -> Series:
    """`clock`: the clock of timestamps written without a zone (the UCI Beijing data: +08:00),
    recorded in the spec so the runtime reads hub timestamps in it; timestamps with a
    zone are converted to it. Without it, zoned timestamps keep their own offset.
    `time_column` and `clock` override the same fields of `options`.

    `path` may be several files of one station (yearly exports): each is read the same way,
    and they are joined in time order (trainer/joining.py), identical overlapping rows once,
    conflicting ones refused."""
    paths = [Path(p) for p in ([path] if isinstance(path, (str, Path)) else path)]
    if not paths:
        raise DataError("no data file given")
    options = options or ReadOptions()
    options = replace(options, time_column=time_column or options.time_column, clock=clock or options.clock)
    if len(paths) > 1:
        from .joining import join_files

        files = [read_file(one, target, features, options) for one in paths]
        joined = join_files(files)
        return _finish(joined.read, max_gap, joined.source, joined.sha256, joined.rows_read, joined.frame,
                       joined.interval, joined.files)
    read = read_file(paths[0], target, features, options)
    frame, interval = _regularise(read.path, read.frame, read.line.times)
    return _finish(read, max_gap, str(read.path), file_sha256(read.path), read.rows_read, frame, interval)


@dataclass
class FileRead:
    """One file's readings, before they are put on a regular grid."""

    path: Path
    frame: pd.DataFrame  # the read columns (the target's and features' spellings of the first file)
    line: TimeLine
    columns: list[str]  # target first, then features, derived calendar ones included
    derived: list[str]
    encodings: dict[str, Encoding]  # of the read columns
    ranges: dict
    invalid: dict
    notices: list[str]
    rows_read: int


def read_file(path: Path, target: str, features: list[str] | tuple[str, ...], options: ReadOptions) -> FileRead:
    """A file's dialect sniffed, its time line read and its columns parsed, impossible readings missing."""
    delimiter = option_character(options.delimiter, "delimiter")
    decimal = decimal_mark(options.decimal, delimiter)
    dialect = sniff(path, delimiter, decimal) if path.is_file() else Dialect()
    raw, blank_lines = _with_blank_lines(path, dialect, _read_table(path, dialect))

    def resolve(name: str) -> str:
        return _resolve(path, raw, name, delimiter)

    target = resolve(target) if target not in CALENDAR_PERIODS else target
    columns = _ordered_columns(target, [n if n in CALENDAR_PERIODS and _find(raw, n) is None
                                        else resolve(n) for n in features])
    derived = [n for n in columns if n in CALENDAR_PERIODS and n not in raw.columns and n != target]
    read = [n for n in columns if n not in derived]
    line = read_times(path, raw, options.time(), set(read), resolve)
    if derived and line.times is None:
        raise DataError(f"{path}: {', '.join(derived)} come from timestamps, but the file has no time column")
    ranges = validity.ranges_for(read, options.valid_ranges, resolve)
    parsed = {name: _feature_column(path, raw, name, name == target) for name in read}
    invalid = {}
    for name in read:
        values, counts = validity.invalid_to_missing(parsed[name][0], ranges.get(name))
        parsed[name] = (values, parsed[name][1])
        if counts:
            invalid[name] = counts
    frame = pd.DataFrame({name: parsed[name][0] for name in read})
    notices = ([dialect.describe()] if dialect.sniffed else []) + line.notices
    if blank_lines:
        notices.append(f"{blank_lines} blank line(s) read as missing readings (one column, so a blank line is one)")
    return FileRead(path, frame, line, columns, derived, {n: parsed[n][1] for n in read}, ranges, invalid, notices,
                    len(raw))


def _finish(read: FileRead, max_gap: int, source: str, sha256: str, rows_read: int, frame: pd.DataFrame,
            interval: float | None, files: list[str] | None = None) -> Series:
    """The regular frame's calendar columns derived, gaps filled, and the series described."""
    for name in read.derived:
        frame[name] = encodings_of.calendar_values(name, frame.index)
    frame = frame[read.columns]
    for name in read.columns:  # a column with no value at all would leave no window, and a misleading message
        if name not in read.derived and frame[name].isna().all():
            raise DataError(f"{source}: column '{name}' has no numeric values")
    encodings = [read.encodings[n] if n in read.encodings else encodings_of.calendar(n) for n in read.columns]
    series = _fill_gaps(frame, read.columns[0], max_gap, interval, read.line.columns, source, sha256, rows_read,
                        encodings)
    series.clock, series.time_format = read.line.clock, read.line.time_format
    series.valid_ranges = {name: [low, high] for name, (low, high) in read.ranges.items()}
    series.invalid = read.invalid
    series.notices = read.notices
    series.files = files or [source]
    return series


def series_from_values(values: list[float], name: str, source: str, sha256: str) -> Series:
    """A series without timestamps (the embedded tutorial data): one step per value."""
    frame = pd.DataFrame({name: np.asarray(values, dtype=np.float64)})
    return Series(frame, name, None, [], source, sha256, len(frame), 0, 0)


def _read_table(path: Path, dialect: Dialect) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        raw = pd.read_csv(path, sep=dialect.delimiter, decimal=dialect.decimal, encoding="utf-8-sig",
                          na_values=["NA", "NaN", "nan", ""], keep_default_na=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    if raw.empty:
        raise DataError(f"{path}: the file has a header but no data rows")
    raw.columns = [str(c).strip() for c in raw.columns]
    return raw


def _with_blank_lines(path: Path, dialect: Dialect, raw: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """In a one-column file a blank line is a missing reading: pandas skips it, and with
    no time column every later reading would move one step earlier. Kept as a missing
    row (trailing ones dropped: nothing follows them); with the number kept."""
    if len(raw.columns) != 1:
        return raw, 0
    kept = pd.read_csv(path, sep=dialect.delimiter, decimal=dialect.decimal, encoding="utf-8-sig",
                       na_values=["NA", "NaN", "nan", ""], keep_default_na=True, skip_blank_lines=False)
    kept.columns = raw.columns
    trailing = _trailing_missing(kept.iloc[:, 0]) - _trailing_missing(raw.iloc[:, 0])  # blank lines at the end
    kept = kept.iloc[: len(kept) - trailing]
    return kept, len(kept) - len(raw)


def _trailing_missing(values: pd.Series) -> int:
    present = np.flatnonzero(values.notna().to_numpy())
    return len(values) - (int(present[-1]) + 1 if len(present) else 0)


def _ordered_columns(target: str, features: list[str]) -> list[str]:
    ordered = [target]
    for name in features:
        if name not in ordered:
            ordered.append(name)
    return ordered


def _find(raw: pd.DataFrame, name: str) -> str | None:
    """The column spelled `name`: exactly, else the one column spelled so in another case."""
    if name in raw.columns:
        return name
    matches = [column for column in raw.columns if column.lower() == name.lower()]
    return matches[0] if len(matches) == 1 else None


def _resolve(path: Path, raw: pd.DataFrame, name: str, delimiter: str | None = None) -> str:
    found = _find(raw, name)
    same = [column for column in raw.columns if column.lower() == name.lower()]
    if found is None and len(same) > 1:
        raise DataError(f"{path}: column {name!r} is ambiguous: {', '.join(same)} differ only in case")
    if found is None:
        shown = ", ".join(raw.columns[:20])
        hint = ""
        if len(raw.columns) == 1:
            hint = (f" (the file reads as one column with delimiter {delimiter!r}: is that its delimiter?)" if delimiter
                    else " (the file reads as one column: pass delimiter if its fields are separated by something "
                    "other than , ; tab or |)")
        raise DataError(f"{path}: no column {name!r}; columns are: {shown}{hint}", settings=("delimiter",) if hint else ())
    return found


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


def _regularise(path: Path, frame: pd.DataFrame, times: pd.Series | None) -> tuple[pd.DataFrame, float | None]:
    if times is None:
        return frame.reset_index(drop=True), None
    frame = frame.set_axis(pd.DatetimeIndex(times, name="time"))
    duplicated = frame.index.duplicated()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated)[0])
        hint = "" if frame.index.tz is not None else " (local times with daylight saving? pass clock ZONE)"
        raise DataError(f"{path}: row {row + FIRST_DATA_ROW}: timestamp {frame.index[row]} appears more than once{hint}",
                        settings=("clock",) if hint else ())
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


def _fill_gaps(frame: pd.DataFrame, target: str, max_gap: int, interval: float | None, time_columns: list[str],
               source: str, sha256: str, rows_read: int, encodings: list[Encoding]) -> Series:
    before = int(frame.isna().sum().sum())
    # Angles and calm codes do not interpolate linearly (350 and 10 degrees are neighbours).
    hold = {e.feature for e in encodings if e.kind == DIRECTION}
    filled = frame.apply(lambda column: fill_short_gaps(column, max_gap, hold=column.name in hold))
    after = int(filled.isna().sum().sum())
    return Series(
        filled, target, interval, time_columns, source, sha256, rows_read, before - after, after, encodings
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
