"""Neighbouring stations' readings as inputs: read, chosen, aligned, and masked in training.

Each neighbour's file is read with the station's own ReadOptions and gap policy, then
joined on the station's regular time index: a neighbour's row that the station does
not have is dropped, a station's row that the neighbour lacks stays NaN (missing, as
on the hub when a reading does not arrive). Its columns are named READING@STATION.
Choices (which K neighbours, a constant fill) look at the training rows only.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from edgecast_runtime.contract import NEIGHBOUR_SEPARATOR
from edgecast_runtime.spec import Fill

from . import features as encodings_of
from .data import ReadOptions, Series, load_csv
from .errors import DataError
from .stations import station_from_file_name, station_of
from .windows import split_rows

# Training masks: each neighbour of a window is silent with this probability, for the
# last k steps of the window (k uniform in 1..look_back: a late reading up to a station
# gone quiet), and this share of windows has every neighbour silent.
MASK_PROBABILITY = 0.3
ALL_SILENT_PROBABILITY = 0.1
# What a neighbour file that cannot be read or aligned does (add_neighbours `unusable`):
# FAIL (edgecast train: the user named it) or DROP (a fleet: every other station is a
# neighbour, and one bad file must not sink the rest; the station itself fails alone).
FAIL, DROP = "fail", "drop"


@dataclass
class NeighbourRecord:
    """What training.json records of the neighbours: files, ids and why they were chosen."""

    stations: list[str] = field(default_factory=list)
    features: list[str] = field(default_factory=list)
    sources: dict[str, dict] = field(default_factory=dict)  # station -> {source, sha256}
    correlations: dict[str, float] = field(default_factory=dict)  # station -> training-split correlation
    chosen_by: str = "given"
    dropped: dict[str, str] = field(default_factory=dict)  # station -> why its file was left out

    def as_dict(self) -> dict:
        return {"stations": self.stations, "features": self.features, "sources": self.sources,
                "correlations": self.correlations, "chosen_by": self.chosen_by, "dropped": self.dropped}


def neighbour_column(reading: str, station: str) -> str:
    return f"{reading}{NEIGHBOUR_SEPARATOR}{station}"


def add_neighbours(
    series: Series,
    files: Sequence[str | Path],
    readings: list[str] | None,
    options: ReadOptions,
    max_gap: int,
    fractions: tuple[float, float, float],
    count: int | None = None,
    *,
    station: str | None = None,
    unusable: str = FAIL,
) -> tuple[Series, NeighbourRecord]:
    """`series` with the neighbours' `readings` (default: its target) as masked columns.

    `files`: paths, or STATION=PATH to name a neighbour (default: its id from the file
    name). Each reading is found in a neighbour's file whatever its case (`pm2.5` reads
    `PM2.5`); two columns differing only in case are refused as ambiguous. The column
    is named in the station's own spelling. `count`: keep only the `count` neighbours
    whose target correlates most with the station's target on the training rows. A
    file of the station itself (`station`, default its file name's id) is skipped.
    `unusable`: what a neighbour file that cannot be read or aligned does: FAIL raises
    DataError; DROP leaves that neighbour out, with the reason in `record.dropped`.
    """
    if unusable not in (FAIL, DROP):
        raise ValueError(f"unusable must be {FAIL!r} or {DROP!r}, got {unusable!r}")
    if series.interval_seconds is None:
        raise DataError(f"{series.source}: neighbours are aligned by timestamp, and this file has none")
    readings = _station_spelling(series, readings or [series.target])
    own = station or station_from_file_name(Path(series.source))
    first_val, _ = split_rows(len(series.frame), fractions)
    loaded, sources, dropped = {}, {}, {}
    own_files = {Path(f).resolve() for f in (series.files or [series.source])}
    for entry in files:  # several files of one neighbour (yearly exports) are joined in time order
        neighbour, path = station_of(entry)
        if neighbour != own and path.resolve() not in own_files:
            sources.setdefault(neighbour, []).append(path)
    for neighbour, paths in sources.items():
        try:
            loaded[neighbour] = _load_neighbour(series, paths, readings, options, max_gap)
        except (DataError, OSError) as exc:
            if unusable == FAIL:
                raise DataError(f"neighbour {neighbour!r}: {exc}", settings=getattr(exc, "settings", ())) from None
            dropped[neighbour] = " ".join(str(exc).split())
    if not loaded:
        reasons = "".join(f"; {s} left out: {why}" for s, why in sorted(dropped.items()))
        raise DataError(f"{series.source}: no usable neighbour besides the station itself among "
                        f"{len(files)} file(s){reasons}")
    correlations = {s: _training_correlation(series.frame[series.target], n.columns[readings[0]], first_val)
                    for s, n in loaded.items()}
    chosen = sorted(loaded)
    if count is not None:
        if count < 1:
            raise DataError(f"neighbour_count must be at least 1, got {count}", settings=("neighbour_count",))
        chosen = sorted(sorted(loaded, key=lambda s: -correlations[s])[:count])
    frame, encodings = series.frame.copy(), list(series.encodings)
    ranges = dict(series.valid_ranges)
    for neighbour in chosen:
        columns, other = loaded[neighbour].columns, loaded[neighbour].series
        for reading in readings:
            name = neighbour_column(reading, neighbour)
            frame[name] = columns[reading].to_numpy()
            encodings.append(encodings_of.masked(name, neighbour, reading, _fill(series, frame[name], reading, first_val)))
            if columns[reading].name in other.valid_ranges:
                ranges[name] = other.valid_ranges[columns[reading].name]
    record = NeighbourRecord(
        stations=chosen, features=readings,
        sources={s: {"source": str(loaded[s].series.source), "sha256": loaded[s].series.sha256} for s in chosen},
        correlations={s: round(correlations[s], 6) for s in sorted(correlations)},
        chosen_by="given" if count is None else f"the {count} most correlated on the training split",
        dropped=dropped,
    )
    return replace(series, frame=frame, encodings=encodings, valid_ranges=ranges, neighbours=record.as_dict()), record


@dataclass
class _Neighbour:
    series: Series
    columns: dict[str, pd.Series]  # reading (the station's spelling) -> aligned on the station's index


def _load_neighbour(series: Series, paths: list[Path], readings: list[str], options: ReadOptions,
                    max_gap: int) -> _Neighbour:
    other = load_csv(paths, readings[0], readings[1:], max_gap=max_gap, options=options)
    path = other.source
    if other.interval_seconds != series.interval_seconds:
        raise DataError(f"{path}: sampled every {other.interval_seconds} s, the station every "
                        f"{series.interval_seconds} s; neighbours must share the interval")
    aligned = other.frame.reindex(series.frame.index)
    return _Neighbour(other, {reading: aligned[_column_named(path, aligned.columns, reading)] for reading in readings})


def _column_named(path: str | Path, columns: Iterable[str], name: str) -> str:
    """The column spelled `name`: exactly, else the one spelled so in another case."""
    columns = list(columns)
    if name in columns:
        return name
    matches = [c for c in columns if c.casefold() == name.casefold()]
    if len(matches) != 1:
        found = "none" if not matches else f"{', '.join(matches)}: ambiguous, they differ only in case"
        raise DataError(f"{path}: no single column {name!r} ({found})")
    return matches[0]


def _station_spelling(series: Series, readings: list[str]) -> list[str]:
    """Readings as the station spells them where it has them (`pm2.5` -> `PM2.5`), once each."""
    spelled = []
    for reading in readings:
        same = [f for f in series.features if f.casefold() == reading.casefold()]
        name = reading if reading in series.features or len(same) != 1 else same[0]
        if name.casefold() not in (s.casefold() for s in spelled):
            spelled.append(name)
    return spelled


def _training_correlation(own: pd.Series, other: pd.Series, first_val: int) -> float:
    value = own.iloc[:first_val].corr(other.iloc[:first_val])
    return float(value) if np.isfinite(value) else -1.0


def _fill(series: Series, values: pd.Series, reading: str, first_val: int) -> Fill:
    """The station's own reading of the same quantity when it has one, else the
    neighbour's training mean."""
    if reading in series.features:
        return Fill(column=series.features.index(reading))
    mean = values.iloc[:first_val].mean()
    if not np.isfinite(mean):
        raise DataError(f"{series.source}: neighbour column {values.name!r} has no value in the training split")
    return Fill(value=float(mean))


def mask_at_random(x: np.ndarray, columns: list[int], rng: np.random.Generator) -> np.ndarray:
    """A copy of raw windows `x` with neighbours silenced as on a hub (see MASK_PROBABILITY)."""
    if not columns or len(x) == 0:
        return x
    x = x.copy()
    n, look_back = x.shape[:2]
    all_silent = rng.random(n) < ALL_SILENT_PROBABILITY
    steps = np.arange(look_back)[None, :]
    for column in columns:
        silent = (rng.random(n) < MASK_PROBABILITY) | all_silent
        since = look_back - rng.integers(1, look_back + 1, size=n)
        hide = silent[:, None] & (steps >= since[:, None])
        x[:, :, column] = np.where(hide, np.nan, x[:, :, column])
    return x


def all_silent(x: np.ndarray, columns: list[int]) -> np.ndarray:
    """A copy of `x` with every neighbour missing throughout."""
    x = x.copy()
    x[:, :, columns] = np.nan
    return x
