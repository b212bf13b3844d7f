"""Neighbouring stations' readings as inputs: read, chosen, aligned, and masked in training.

Each neighbour's file is read with the station's own ReadOptions and gap policy, then
joined on the station's regular time index: a neighbour's row that the station does
not have is dropped, a station's row that the neighbour lacks stays NaN (missing, as
on the hub when a reading does not arrive). Its columns are named READING@STATION.
Choices (which K neighbours, a constant fill) look at the training rows only.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from edgecast_runtime.contract import NEIGHBOUR_SEPARATOR

from . import features as encodings_of
from .data import ReadOptions, Series, load_csv
from .errors import DataError
from .stations import station_from_file_name
from .windows import split_rows

# Training masks: each neighbour of a window is silent with this probability, for the
# last k steps of the window (k uniform in 1..look_back: a late reading up to a station
# gone quiet), and this share of windows has every neighbour silent.
MASK_PROBABILITY = 0.3
ALL_SILENT_PROBABILITY = 0.1


@dataclass
class NeighbourRecord:
    """What training.json records of the neighbours: files, ids and why they were chosen."""

    stations: list[str] = field(default_factory=list)
    features: list[str] = field(default_factory=list)
    sources: dict[str, dict] = field(default_factory=dict)  # station -> {source, sha256}
    correlations: dict[str, float] = field(default_factory=dict)  # station -> training-split correlation
    chosen_by: str = "given"

    def as_dict(self) -> dict:
        return {"stations": self.stations, "features": self.features, "sources": self.sources,
                "correlations": self.correlations, "chosen_by": self.chosen_by}


def neighbour_column(reading: str, station: str) -> str:
    return f"{reading}{NEIGHBOUR_SEPARATOR}{station}"


def add_neighbours(
    series: Series,
    files: list[str | Path],
    readings: list[str] | None,
    options: ReadOptions,
    max_gap: int,
    fractions: tuple[float, float, float],
    count: int | None = None,
) -> tuple[Series, NeighbourRecord]:
    """`series` with the neighbours' `readings` (default: its target) as masked columns.

    `count`: keep only the `count` neighbours whose target correlates most with the
    station's target on the training rows. A file of the station itself is skipped.
    """
    if series.interval_seconds is None:
        raise DataError(f"{series.source}: neighbours are aligned by timestamp, and this file has none")
    readings = list(readings or [series.target])
    own = station_from_file_name(Path(series.source))
    first_val, _ = split_rows(len(series.frame), fractions)
    loaded = {}
    for path in files:
        station = station_from_file_name(Path(path))
        if station == own or Path(path).resolve() == Path(series.source).resolve():
            continue
        if station in loaded:
            raise DataError(f"station {station!r} comes from two neighbour files: {loaded[station][1]} and {path}")
        other = load_csv(path, readings[0], readings[1:], max_gap=max_gap, options=options)
        if other.interval_seconds != series.interval_seconds:
            raise DataError(f"{path}: sampled every {other.interval_seconds} s, the station every "
                            f"{series.interval_seconds} s; neighbours must share the interval")
        loaded[station] = (other.frame.reindex(series.frame.index), path, other)
    if not loaded:
        raise DataError(f"{series.source}: no neighbour besides the station itself among {len(files)} file(s)")
    correlations = {station: _training_correlation(series.frame[series.target], frame[readings[0]], first_val)
                    for station, (frame, _, _) in loaded.items()}
    chosen = sorted(loaded)
    if count is not None:
        if count < 1:
            raise DataError(f"neighbour_count must be at least 1, got {count}", settings=("neighbour_count",))
        chosen = sorted(sorted(loaded, key=lambda s: -correlations[s])[:count])
    frame, encodings = series.frame.copy(), list(series.encodings)
    ranges = dict(series.valid_ranges)
    for station in chosen:
        aligned, _, other = loaded[station]
        for reading in readings:
            name = neighbour_column(reading, station)
            frame[name] = aligned[reading].to_numpy()
            encodings.append(encodings_of.masked(name, station, reading, _fill(series, frame[name], reading, first_val)))
            if reading in other.valid_ranges:
                ranges[name] = other.valid_ranges[reading]
    record = NeighbourRecord(
        stations=chosen, features=readings,
        sources={s: {"source": str(loaded[s][2].source), "sha256": loaded[s][2].sha256} for s in chosen},
        correlations={s: round(correlations[s], 6) for s in sorted(correlations)},
        chosen_by="given" if count is None else f"the {count} most correlated on the training split",
    )
    return replace(series, frame=frame, encodings=encodings, valid_ranges=ranges, neighbours=record.as_dict()), record


def _training_correlation(own: pd.Series, other: pd.Series, first_val: int) -> float:
    value = own.iloc[:first_val].corr(other.iloc[:first_val])
    return float(value) if np.isfinite(value) else -1.0


def _fill(series: Series, values: pd.Series, reading: str, first_val: int) -> dict:
    """The station's own reading of the same quantity when it has one, else the
    neighbour's training mean."""
    if reading in series.features:
        return {"column": series.features.index(reading)}
    mean = values.iloc[:first_val].mean()
    if not np.isfinite(mean):
        raise DataError(f"{series.source}: neighbour column {values.name!r} has no value in the training split")
    return {"value": float(mean)}


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
