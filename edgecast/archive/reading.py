"""Reading the archive back: a station's readings in a time range, as a frame or as the
station file the trainer reads (`edgecast fleet train ARCHIVE --since ... --until ...`).

A station's series is written as a CSV with a `timestamp` column in ISO 8601 with its
UTC offset (+00:00) and the reading columns, so the trainer's own reader (dialect,
time line, gaps, valid ranges: trainer/data.py) reads it like any station file, and
`--clock` puts it in the station's local time when the calendar features need it.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from edgecast_runtime.durable import atomic_write

from .errors import ArchiveError
from .journal import journal_files
from .partitions import KEY, STATION_PREFIX, TIME, month_end, partitions, read_partition

ARCHIVE_MARKER = "_edgecast-archive.json"  # by the collector; "_": Parquet readers skip it


@dataclass(frozen=True)
class TimeRange:
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive

    def holds_month(self, month: str) -> bool:
        start = month_end(_previous(month))
        return (self.until is None or start < self.until) and (self.since is None or month_end(month) > self.since)


def _previous(month: str) -> str:
    year, number = map(int, month.split("-"))
    return f"{year - (number == 1)}-{(number - 2) % 12 + 1:02d}"


def parse_time(text: str | None, setting: str) -> datetime | None:
    """2016-01-01 or any ISO 8601 time; without an offset, UTC."""
    if text is None:
        return None
    try:
        moment = pd.Timestamp(text)
    except (ValueError, TypeError):
        raise ArchiveError(f"{setting} {text!r} is not a date or ISO 8601 time (e.g. 2016-01-01)",
                           settings=(setting,)) from None
    if moment is pd.NaT:
        raise ArchiveError(f"{setting} {text!r} is not a date", settings=(setting,))
    moment = moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")
    return moment.to_pydatetime()


def time_range(since: str | None, until: str | None) -> TimeRange:
    window = TimeRange(parse_time(since, "since"), parse_time(until, "until"))
    if window.since is not None and window.until is not None and window.since >= window.until:
        raise ArchiveError(f"since {since} is not before until {until}", settings=("since", "until"))
    return window


def is_archive(folder: str | Path) -> bool:
    folder = Path(folder)
    return folder.is_dir() and ((folder / ARCHIVE_MARKER).is_file()
                                or any(p.is_dir() for p in folder.glob(f"{STATION_PREFIX}*")))


def read_station(archive: Path, station: str, window: TimeRange = TimeRange()) -> pd.DataFrame:
    """The station's readings in the window: a UTC `timestamp` column, then the readings."""
    months = partitions(archive).get(station, {})
    frames = [read_partition(path) for month, path in sorted(months.items()) if window.holds_month(month)]
    if not frames:
        return pd.DataFrame({TIME: pd.Series(dtype="datetime64[ms, UTC]")})
    frame = pd.concat(frames, ignore_index=True, sort=False)
    times = pd.to_datetime(frame.pop(KEY), unit="ms", utc=True)
    keep = pd.Series(True, index=frame.index)
    if window.since is not None:
        keep &= times >= window.since
    if window.until is not None:
        keep &= times < window.until
    frame.insert(0, TIME, times)
    return frame[keep].reset_index(drop=True)


def export_stations(archive: str | Path, folder: Path, window: TimeRange) -> list[str]:
    """Write each station's readings in the window to FOLDER/STATION.csv (atomically;
    unchanged bytes for unchanged data, so a fleet's up-to-date check holds); returns
    STATION=FILE entries for the fleet's data list. Stations without a reading in the
    window are left out; none at all is an error."""
    archive = Path(archive)
    pending = journal_files(archive)
    stations = sorted(partitions(archive))
    entries = []
    for station in stations:
        frame = read_station(archive, station, window)
        if frame.empty:
            continue
        frame[TIME] = frame[TIME].map(lambda t: t.isoformat())
        folder.mkdir(parents=True, exist_ok=True)
        path = (folder / f"{station}.csv").resolve()
        atomic_write(path, frame.to_csv(index=False, float_format="%.10g").encode())
        entries.append(f"{station}={path}")
    if not entries:
        held = f"; {len(pending)} journal file(s) not yet compacted (the collector compacts them)" if pending else ""
        raise ArchiveError(f"{archive}: no readings in the archive{_window_text(window)} "
                           f"({len(stations)} station(s)){held}", settings=("since", "until"))
    return entries


def station_files(sources: list[str | Path], folder: Path, since: str | None, until: str | None) -> list[str | Path]:
    """`sources` with every archive among them replaced by its stations' files in the
    window (export_stations, into FOLDER/1, FOLDER/2, ... one per archive)."""
    window = time_range(since, until)
    archives = [source for source in sources if is_archive(source)]
    if (since or until) and not archives:
        raise ArchiveError("since and until select a time range of an archive (a folder `edgecast collect` writes); "
                           "none of the data given is one", settings=("since", "until"))
    files: list[str | Path] = []
    for source in sources:
        if source in archives:
            files += export_stations(source, folder / str(archives.index(source) + 1), window)
        else:
            files.append(source)
    return files


def station_file(data: object, folder: Path, since: str | None, until: str | None) -> object:
    """`edgecast train`'s data: an archive's station folder (ARCHIVE/station=ID) becomes
    that station's file of readings in the window (FOLDER/ID.csv); other data unchanged."""
    path = Path(data) if isinstance(data, (str, Path)) else None
    if path is not None and is_archive(path):
        names = sorted(partitions(path))
        raise ArchiveError(f"{path} is an archive of {len(names)} station(s) ({', '.join(names[:5])}); train one: "
                           f"{path / (STATION_PREFIX + (names[0] if names else 'ID'))}, or all with fleet train")
    if path is None or not path.name.startswith(STATION_PREFIX) or not is_archive(path.parent):
        if since or until:
            raise ArchiveError("since and until select a time range of an archive's station folder "
                               "(ARCHIVE/station=ID, written by `edgecast collect`)", settings=("since", "until"))
        return data
    station = path.name[len(STATION_PREFIX):]
    window = time_range(since, until)
    frame = read_station(path.parent, station, window)
    if frame.empty:
        raise ArchiveError(f"{path}: no readings{_window_text(window)}", settings=("since", "until"))
    frame[TIME] = frame[TIME].map(lambda t: t.isoformat())
    folder.mkdir(parents=True, exist_ok=True)
    target = (folder / f"{station}.csv").resolve()
    atomic_write(target, frame.to_csv(index=False, float_format="%.10g").encode())
    return target


def _window_text(window: TimeRange) -> str:
    parts = [f"since {window.since:%Y-%m-%d %H:%M} UTC" if window.since else "",
             f"until {window.until:%Y-%m-%d %H:%M} UTC" if window.until else ""]
    text = ", ".join(p for p in parts if p)
    return f" within {text}" if text else ""


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
