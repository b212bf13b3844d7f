"""Several files of one station (yearly exports) joined into one series, in time order.

Each file is read on its own (its dialect sniffed, its times parsed, impossible readings
made missing: trainer/data.py read_file) with the same options. The files are then put in
the order of their first timestamp; where two overlap, the rows at the timestamps both
hold must be identical (the same readings, or both missing), and are kept once. A
conflicting row is refused, naming both files and the first timestamp where they differ.
Columns are matched whatever their case and named in the first file's spelling.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from edgecast_runtime.manifest import file_sha256

from .errors import DataError

if TYPE_CHECKING:
    from .data import FileRead


@dataclass
class Joined:
    read: FileRead  # the first file's reading, with the joined counts
    frame: pd.DataFrame  # on the regular grid
    interval: float | None
    source: str  # the files, in time order, joined by " + "
    sha256: str
    rows_read: int
    files: list[str]


def data_sha256(paths: list[Path]) -> str:
    """A file's sha256; of several files, the sha256 of their sorted sha256s (one line each),
    so the order they were given in does not matter."""
    if len(paths) == 1:
        return file_sha256(paths[0])
    digests = sorted(file_sha256(path) for path in paths)
    return hashlib.sha256("".join(f"{d}\n" for d in digests).encode()).hexdigest()


def join_files(files: list[FileRead]) -> Joined:
    from .data import _regularise  # the grid and the interval, as for one file

    for read in files:
        if read.line.times is None:
            raise DataError(f"{read.path}: several files of a station are joined by timestamp, and this file has none")
    frames = [_indexed(read) for read in files]
    _same_columns(files)
    _same_clock(files, frames)
    order = sorted(range(len(files)), key=lambda i: (frames[i].index.min(), str(files[i].path)))
    files = [files[i] for i in order]
    frames = [frames[i].set_axis(files[0].frame.columns, axis=1) for i in order]  # the first file's spelling
    for later in range(1, len(files)):
        for earlier in range(later):
            _check_overlap(files[earlier].path, frames[earlier], files[later].path, frames[later])
    combined = pd.concat(frames)
    combined = combined[~combined.index.duplicated(keep="first")].sort_index(kind="stable")
    first = files[0]
    source = " + ".join(str(read.path) for read in files)
    frame, interval = _regularise(Path(source), combined.reset_index(drop=True), combined.index.to_series())
    invalid: dict = {}
    for read in files:
        for column, counts in read.invalid.items():
            name = _first_spelling(files, column)
            for reason, count in counts.items():
                invalid.setdefault(name, {})[reason] = invalid.setdefault(name, {}).get(reason, 0) + count
    notices = list(dict.fromkeys(f"{read.path.name}: {note}" for read in files for note in read.notices))
    read = replace(first, invalid=invalid, notices=notices)
    return Joined(read, frame, interval, source, data_sha256([r.path for r in files]), sum(r.rows_read for r in files),
                  [str(r.path) for r in files])


def _indexed(read: FileRead) -> pd.DataFrame:
    frame = read.frame.set_axis(pd.DatetimeIndex(read.line.times, name="time"))
    duplicated = frame.index.duplicated()
    if duplicated.any():
        from .times import FIRST_DATA_ROW

        row = int(np.flatnonzero(duplicated)[0])
        raise DataError(f"{read.path}: row {row + FIRST_DATA_ROW}: timestamp {frame.index[row]} appears more than once")
    return frame.sort_index(kind="stable")


def _same_columns(files: list[FileRead]) -> None:
    first = files[0]
    for read in files[1:]:
        if [c.casefold() for c in read.frame.columns] != [c.casefold() for c in first.frame.columns]:
            raise DataError(f"{read.path}: columns {', '.join(read.frame.columns)} differ from "
                            f"{first.path}'s {', '.join(first.frame.columns)}")
        for name, other in zip(first.frame.columns, read.frame.columns):
            if read.encodings[other].kind != first.encodings[name].kind:
                raise DataError(f"{read.path}: column '{other}' reads as {read.encodings[other].kind}, "
                                f"in {first.path} as {first.encodings[name].kind}")


def _same_clock(files: list[FileRead], frames: list[pd.DataFrame]) -> None:
    zones = {str(frame.index.tz) for frame in frames}
    if len(zones) > 1:
        shown = "; ".join(f"{read.path}: {frame.index.tz or 'no zone'}" for read, frame in zip(files, frames))
        raise DataError(f"the files of one station must share a clock ({shown}); pass clock to read them on one",
                        settings=("clock",))


def _check_overlap(first_path: Path, first: pd.DataFrame, later_path: Path, later: pd.DataFrame) -> None:
    shared = first.index.intersection(later.index)
    if shared.empty:
        return
    a, b = first.loc[shared].to_numpy(np.float64), later.loc[shared].to_numpy(np.float64)
    differ = ~((a == b) | (np.isnan(a) & np.isnan(b)))
    rows = np.flatnonzero(differ.any(axis=1))
    if len(rows):
        row = int(rows[0])
        column = int(np.flatnonzero(differ[row])[0])
        raise DataError(f"{first_path} and {later_path} overlap with different readings, first at {shared[row]} "
                        f"({first.columns[column]}: {_shown(a[row, column])} and {_shown(b[row, column])}; "
                        f"{len(rows)} conflicting row{'s' if len(rows) > 1 else ''} of {len(shared)} shared); "
                        f"overlapping rows must be identical")


def _shown(value: float) -> str:
    return "missing" if np.isnan(value) else f"{value:g}"


def _first_spelling(files: list[FileRead], column: str) -> str:
    for read in files:
        for index, name in enumerate(read.frame.columns):
            if name == column:
                return str(files[0].frame.columns[index])
    return column
