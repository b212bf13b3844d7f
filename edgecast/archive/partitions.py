"""The archive on disk: one Parquet file per station and month,

    ARCHIVE/station=ID/month=YYYY-MM/readings.parquet    (hive layout: pyarrow.dataset, DuckDB, Spark read it)

with a `timestamp` column (UTC, milliseconds) and one float64 column per reading name,
sorted by time, one row per timestamp. The month is the timestamp's UTC month.

Compaction moves the journals' readings in: per partition, the old file and the new
readings are merged and written to a temporary file that is fsynced and renamed over
the old one (edgecast_runtime.durable.atomic_write), and only once every partition is
written are the journals deleted. The key is (station, timestamp): a reading repeated
with the same values (a redelivery, a duplicate) adds no row; one with other values
replaces the row (last write wins: the latest word of the hub, e.g. a corrected value),
and is counted as `replaced`. Retention removes whole months (renamed out of the way,
then deleted), and a reading arriving for a month already past retention is dropped
and counted as `expired`.
"""
from __future__ import annotations

import io
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from edgecast_runtime.durable import atomic_write

from .journal import fsync_folder, journal_folder, replay
from .payloads import ArchivedReading

FILE_NAME = "readings.parquet"
TIME = "timestamp"
STATION_PREFIX, MONTH_PREFIX = "station=", "month="
KEY = "_ms"  # the key column while merging: milliseconds since the epoch


@dataclass
class CompactStats:
    readings: int = 0  # read from the journals
    added: int = 0  # new rows in the archive
    duplicates: int = 0  # same key, same values: no row added
    replaced: int = 0  # same key, other values: the row replaced (last write wins)
    expired: int = 0  # for a month past retention: dropped
    torn: int = 0  # journal lines cut by a kill (never acknowledged)
    partitions: int = 0  # files written

    def add(self, other: CompactStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def partition_path(archive: Path, station: str, month: str) -> Path:
    return Path(archive) / f"{STATION_PREFIX}{station}" / f"{MONTH_PREFIX}{month}" / FILE_NAME


def month_of(milliseconds: pd.Series) -> pd.Series:
    return pd.to_datetime(milliseconds, unit="ms", utc=True).dt.strftime("%Y-%m")


def month_end(month: str) -> datetime:
    """The first instant after the month (UTC)."""
    year, number = map(int, month.split("-"))
    return datetime(year + number // 12, number % 12 + 1, 1, tzinfo=timezone.utc)


def compact(archive: Path, journals: list[Path], retain_after: datetime | None = None) -> CompactStats:
    """Move the readings of `journals` into the partitions, then delete the journals.
    `retain_after`: months ending at or before it are past retention."""
    replayed = replay(journals)
    stats = CompactStats(readings=len(replayed.readings), torn=replayed.torn)
    if replayed.readings:
        frame = _frame(replayed.readings)
        frame["_month"] = month_of(frame[KEY])
        if retain_after is not None:
            expired = frame["_month"].map(lambda m: month_end(m) <= retain_after)
            stats.expired = int(expired.sum())
            frame = frame[~expired]
        for (station, month), rows in frame.groupby(["_station", "_month"], sort=True):
            stats.add(_merge(archive, station, month, rows.drop(columns=["_station", "_month"])))
    for path in journals:
        path.unlink()
    if journals:
        fsync_folder(journal_folder(archive))
    return stats


def _frame(readings: list[ArchivedReading]) -> pd.DataFrame:
    records = [{"_station": r.station, KEY: r.milliseconds, **r.values} for r in readings]
    frame = pd.DataFrame.from_records(records)
    values = [c for c in frame.columns if c not in ("_station", KEY)]
    frame[values] = frame[values].astype("float64")
    return frame


def _merge(archive: Path, station: str, month: str, new: pd.DataFrame) -> CompactStats:
    path = partition_path(archive, station, month)
    old = read_partition(path) if path.is_file() else new.iloc[:0]
    merged = pd.concat([old, new], ignore_index=True, sort=False)  # old first: a new value wins
    identical = merged.duplicated(keep="first")  # NaN equals NaN here, as a missing value should
    merged = merged[~identical]
    conflicting = merged.duplicated(subset=[KEY], keep="last")
    merged = merged[~conflicting].sort_values(KEY, kind="stable")
    stats = CompactStats(duplicates=int(identical.sum()), replaced=int(conflicting.sum()),
                         added=len(merged) - len(old), partitions=1)
    _write(path, merged)
    return stats


def _write(path: Path, frame: pd.DataFrame) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    created = [folder for folder in (path.parent.parent, path.parent) if not folder.is_dir()]
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame({TIME: pd.to_datetime(frame[KEY], unit="ms", utc=True).astype("datetime64[ms, UTC]")})
    for column in frame.columns:
        if column != KEY:
            table[column] = frame[column].to_numpy(dtype="float64")
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), buffer, compression="zstd")
    atomic_write(path, buffer.getvalue())
    for folder in created:  # the new folders' entries, so the journal may go
        fsync_folder(folder.parent)


def read_partition(path: Path) -> pd.DataFrame:
    """A partition with its time as KEY (milliseconds)."""
    import pyarrow.parquet as pq

    frame = pq.read_table(path).to_pandas()
    times = pd.to_datetime(frame.pop(TIME), utc=True)
    frame.insert(0, KEY, times.astype("datetime64[ms, UTC]").astype("int64"))
    return frame


def partitions(archive: Path) -> dict[str, dict[str, Path]]:
    """{station: {month: file}} of every partition."""
    found: dict[str, dict[str, Path]] = {}
    for path in sorted(Path(archive).glob(f"{STATION_PREFIX}*/{MONTH_PREFIX}*/{FILE_NAME}")):
        station = path.parent.parent.name[len(STATION_PREFIX):]
        found.setdefault(station, {})[path.parent.name[len(MONTH_PREFIX):]] = path
    return found


def apply_retention(archive: Path, retain_after: datetime) -> list[str]:
    """Remove the months that end at or before `retain_after`; their names (station/month)."""
    removed = []
    for station, months in partitions(archive).items():
        for month, path in months.items():
            if month_end(month) <= retain_after:
                doomed = Path(archive) / f".removing-{uuid.uuid4().hex[:12]}"
                os.replace(path.parent, doomed)  # gone from the archive at once, whole
                shutil.rmtree(doomed, ignore_errors=True)
                removed.append(f"{station}/{month}")
        station_folder = Path(archive) / f"{STATION_PREFIX}{station}"
        if station_folder.is_dir() and not any(station_folder.iterdir()):
            station_folder.rmdir()
    for leftover in Path(archive).glob(".removing-*"):  # left by a kill mid-delete
        shutil.rmtree(leftover, ignore_errors=True)
    return removed
