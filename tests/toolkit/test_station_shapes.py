"""Station files as monitoring networks export them, made from a slice of the real
Changping station: each shape either reads to the same series as the clean file (the
hourly interval, every value equal) and so trains to the same test RMSE, or is
refused with one line saying what to pass. The slice (4,200 hours from 2013-10-16)
spans both changes of clock in Europe/Berlin (2013-10-27 and 2014-03-30) when its
hours are taken as UTC instants.

Training is a deterministic function of the series' values and the settings (fixed
seed), so equal values give equal RMSEs: the shapes marked `train` are trained and
their RMSE compared with the clean file's (within 1 %) to show it, the others check
the values (training each would take minutes on a busy machine).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import pytest
from conftest import CHANGPING, run_cli

from edgecast.trainer.bundle import make_spec
from edgecast.trainer.data import ReadOptions, load_csv
from edgecast.trainer.errors import DataError
from edgecast.trainer.pipeline import TrainConfig, prepare, train
from edgecast_runtime.encodings import layout_from_spec
from edgecast_runtime.readings import LineParser

pytestmark = pytest.mark.skipif(not CHANGPING.is_file(),
                                reason=f"real data not available: {CHANGPING} is absent (../shared/data)")

ROWS = slice(5500, 9700)
CONFIG = TrainConfig(look_back=6, units=4, epochs=1, batch_size=64, seed=0)
RMSE_TOLERANCE = 0.01  # relative, the agreed tolerance; the series are equal, so the RMSE is too
GLITCHES = (-999.0, -9999.0, 9999.0, -5.0, -1.0, -3.0)


@pytest.fixture(scope="module")
def station() -> pd.DataFrame:
    """PM2.5 and TEMP with their naive Beijing hours, and the same hours as UTC instants."""
    frame = pd.read_csv(CHANGPING).iloc[ROWS].reset_index(drop=True)
    naive = pd.to_datetime(frame[["year", "month", "day", "hour"]])
    return frame[["year", "month", "day", "hour", "PM2.5", "TEMP"]].assign(naive=naive, utc=naive.dt.tz_localize("UTC"))


def values(station: pd.DataFrame) -> dict:
    return {"PM2.5": station["PM2.5"], "TEMP": station["TEMP"]}


def epoch_seconds(station) -> pd.DataFrame:
    return pd.DataFrame({"ts": station["utc"].map(lambda t: int(t.timestamp())), **values(station)})


def epoch_ms(station) -> pd.DataFrame:
    return pd.DataFrame({"ts": station["utc"].map(lambda t: int(t.timestamp() * 1000)), **values(station)})


def date_and_time(station) -> pd.DataFrame:
    return pd.DataFrame({"date": station["naive"].dt.strftime("%d.%m.%Y"), "time": station["naive"].dt.strftime("%H:%M"),
                         **values(station)})


def day_first(station) -> pd.DataFrame:
    return pd.DataFrame({"timestamp": station["naive"].dt.strftime("%d/%m/%Y %H:%M"), **values(station)})


def berlin_offsets(station) -> pd.DataFrame:
    berlin = station["utc"].dt.tz_convert("Europe/Berlin")
    return pd.DataFrame({"timestamp": berlin.map(lambda t: t.isoformat()), **values(station)})


def berlin_naive(station) -> pd.DataFrame:
    berlin = station["utc"].dt.tz_convert("Europe/Berlin")
    return pd.DataFrame({"timestamp": berlin.dt.strftime("%Y-%m-%d %H:%M"), **values(station)})


def bom_and_case(station) -> pd.DataFrame:
    return pd.DataFrame({"Timestamp": station["naive"].dt.strftime("%Y-%m-%dT%H:%M"), "pm2.5": station["PM2.5"],
                         "Temp": station["TEMP"]})


def glitches(station) -> pd.DataFrame:
    """Sentinels and negative glitches where the clean file has no reading (so both read as missing)."""
    frame = station[["year", "month", "day", "hour", "PM2.5", "TEMP"]].copy()
    where = np.flatnonzero(frame["PM2.5"].isna().to_numpy())[::3][: len(GLITCHES)]
    frame.loc[where, "PM2.5"] = GLITCHES
    return frame


@dataclass
class Shape:
    id: str
    make: Callable[[pd.DataFrame], pd.DataFrame]
    options: ReadOptions = field(default_factory=ReadOptions)
    to_csv: dict = field(default_factory=dict)
    refused: tuple[str, ...] = ()  # fragments of the one-line refusal; empty: it reads
    bom: bool = False
    train: bool = False  # also train it and compare the test RMSE with the clean file's


SHAPES = [
    Shape("epoch-seconds", epoch_seconds),
    Shape("epoch-milliseconds", epoch_ms),
    Shape("epoch-seconds-given-unit", epoch_seconds, ReadOptions(time_unit="s")),
    Shape("date-and-time-dayfirst", date_and_time, ReadOptions(dayfirst=True)),
    Shape("date-and-time-format", date_and_time, ReadOptions(time_column="date,time", time_format="%d.%m.%Y %H:%M")),
    Shape("date-and-time-unsaid", date_and_time, refused=("dates are day-first", "'16.10.2013 04:00' in row 2",
                                                          "pass dayfirst or time_format")),
    Shape("day-first", day_first, ReadOptions(dayfirst=True)),
    Shape("day-first-unsaid", day_first, refused=("dates are day-first", "pass dayfirst or time_format",
                                                  "'%d/%m/%Y %H:%M'")),
    Shape("semicolon-decimal-comma", day_first, ReadOptions(dayfirst=True), {"sep": ";", "decimal": ","}),
    Shape("semicolon-given", day_first, ReadOptions(dayfirst=True, delimiter=";", decimal=","),
          {"sep": ";", "decimal": ","}),
    Shape("berlin-offsets", berlin_offsets),
    Shape("berlin-offsets-on-berlin-clock", berlin_offsets, ReadOptions(clock="Europe/Berlin")),
    Shape("berlin-naive-on-berlin-clock", berlin_naive, ReadOptions(clock="Europe/Berlin"), train=True),
    Shape("berlin-naive-unsaid", berlin_naive, refused=("row 263", "2013-10-27 02:00:00 appears more than once",
                                                        "pass clock ZONE")),
    Shape("bom-and-header-case", bom_and_case, bom=True),
    Shape("sentinels-and-glitches", glitches, train=True),
]


def write(shape: Shape, station: pd.DataFrame, path) -> None:
    text = shape.make(station).to_csv(index=False, **shape.to_csv)
    path.write_bytes(("\ufeff" if shape.bom else "").encode() + text.encode())


@pytest.fixture(scope="module")
def clean(station, tmp_path_factory):
    folder = tmp_path_factory.mktemp("clean")
    path = folder / "clean.csv"
    station[["year", "month", "day", "hour", "PM2.5", "TEMP"]].to_csv(path, index=False)
    series = load_csv(path, "PM2.5", ["TEMP"])
    return series, train(series, CONFIG, folder / "bundle")


@pytest.mark.parametrize("shape", SHAPES, ids=[s.id for s in SHAPES])
def test_station_shape_trains_like_the_clean_file_or_is_refused(shape: Shape, station, clean, tmp_path):
    path = tmp_path / f"{shape.id}.csv"
    write(shape, station, path)
    target, features = ("pm2.5", ["temp"]) if shape.bom else ("PM2.5", ["TEMP"])
    if shape.refused:
        with pytest.raises(DataError) as caught:
            load_csv(path, target, features, options=shape.options)
        message = str(caught.value)
        assert "\n" not in message and path.name in message
        for fragment in shape.refused:
            assert fragment in message, message
        return
    series = load_csv(path, target, features, options=shape.options)
    clean_series, clean_result = clean
    assert series.interval_seconds == 3600
    assert series.features == (["pm2.5", "Temp"] if shape.bom else ["PM2.5", "TEMP"])
    np.testing.assert_array_equal(series.values(), clean_series.values())
    if not shape.train:
        return
    result = train(series, CONFIG, tmp_path / "bundle")
    assert result.metrics["model"]["rmse"][0] == pytest.approx(clean_result.metrics["model"]["rmse"][0],
                                                               rel=RMSE_TOLERANCE)


def test_glitches_are_counted_and_the_ranges_recorded(station, tmp_path):
    path = tmp_path / "glitches.csv"
    glitches(station).to_csv(path, index=False)
    series = load_csv(path, "PM2.5", ["TEMP"])
    assert series.invalid == {"PM2.5": {"sentinel": 3, "below_min": 3}}
    assert series.valid_ranges == {"PM2.5": [0.0, None]}
    assert series.notes() == ["treated as missing: PM2.5 6 (3 sentinel, 3 below_min)"]
    # A range given replaces the default; TEMP gets one of its own.
    options = ReadOptions(valid_ranges={"pm2.5": (None, 500.0), "TEMP": (-40.0, 45.0)})
    series = load_csv(path, "PM2.5", ["TEMP"], options=options)
    assert series.invalid == {"PM2.5": {"sentinel": 3, "above_max": 4}} and series.valid_ranges == {"PM2.5": [None, 500.0],
                                                                                      "TEMP": [-40.0, 45.0]}


def test_ambiguous_short_day_first_file_is_refused(station, tmp_path):
    """Nine days from the 1st: every date reads month-first too, as one day a month."""
    path = tmp_path / "short.csv"
    early = station[station["naive"] >= "2013-11-01"].head(216)
    day_first(early).to_csv(path, index=False)
    with pytest.raises(DataError, match="could be day-first or month-first .only day-first gives a regular series.; "
                                        "pass dayfirst"):
        load_csv(path, "PM2.5")
    assert load_csv(path, "PM2.5", options=ReadOptions(dayfirst=True)).interval_seconds == 3600


def test_unused_time_columns_and_small_epoch_numbers_are_named(station, tmp_path):
    path = tmp_path / "both.csv"
    epoch_seconds(station).assign(year=station["year"], month=station["month"], day=station["day"],
                                  hour=station["hour"]).to_csv(path, index=False)
    series = load_csv(path, "PM2.5")
    assert series.time_columns == ["ts"]
    assert any("year, month, day, hour not used" in note for note in series.notes())
    counter = tmp_path / "counter.csv"
    pd.DataFrame({"ts": range(len(station)), "PM2.5": station["PM2.5"]}).to_csv(counter, index=False)
    with pytest.raises(DataError, match="too small for epoch seconds or milliseconds; pass time_unit s or ms"):
        load_csv(counter, "PM2.5")
    time_only = tmp_path / "time-only.csv"
    date_and_time(station).drop(columns="date").to_csv(time_only, index=False)
    with pytest.raises(DataError, match="times of day without a date .'04:00'.; pass time_column DATE_COLUMN,time"):
        load_csv(time_only, "PM2.5")


def spec_of(series) -> dict:
    """The spec train() would write for this series, without training."""
    data = prepare(series, CONFIG)
    return json.loads(json.dumps(make_spec(
        series.target, series.features, CONFIG.look_back, CONFIG.horizon, series.interval_seconds,
        series.time_columns, data.scaler, CONFIG.max_gap, encodings=series.encodings, clock=series.clock,
        valid_ranges=series.valid_ranges, time_format=series.time_format)))


def test_the_runtime_reads_the_training_files_own_lines(station, tmp_path):
    """The spec records how the file wrote its times; the hub's line parser reads the
    training file's own header and rows to the same instants."""
    for shape in (SHAPES[3], SHAPES[1], SHAPES[14]):  # date,time day-first; epoch ms; BOM and `Timestamp`
        path = tmp_path / f"{shape.id}.csv"
        write(shape, station, path)
        target, features = ("pm2.5", ["temp"]) if shape.bom else ("PM2.5", ["TEMP"])
        series = load_csv(path, target, features, options=shape.options)
        spec = spec_of(series)
        parser = LineParser(layout_from_spec(spec, str(spec["schema_version"]), pytest.fail))
        lines = path.read_text(encoding="utf-8").splitlines()
        parser.parse(lines[0])
        stamps = [parser.parse(line).timestamp for line in lines[1:200]]
        expected = [t.timestamp() for t in station["utc"].iloc[:199]]
        assert stamps == expected, shape.id


def test_cli_options_reach_the_reader(station, tmp_path):
    """One refusal and one training through the real command."""
    path = tmp_path / "export.csv"
    date_and_time(station).iloc[:1500].to_csv(path, index=False, sep=";", decimal=",")
    refused = run_cli("train", path, "--target", "PM2.5", "--models-dir", tmp_path)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "dates are day-first" in refused.stderr and "pass --dayfirst" in refused.stderr
    trained = run_cli("train", path, "--target", "PM2.5", "--features", "TEMP", "--time-column", "date,time",
                      "--dayfirst", "--delimiter", ";", "--decimal", ",", "--valid-range", "TEMP=-40,45",
                      "--valid-range", "PM2.5=0,", "--look-back", "6", "--units", "4", "--epochs", "1",
                      "--name", "export", "--models-dir", tmp_path)
    assert trained.returncode == 0, trained.stderr
    spec = json.loads((tmp_path / "export" / "preprocessing.json").read_text())
    assert spec["interval_seconds"] == 3600 and spec["time_columns"] == ["date", "time"]
    assert spec["valid_ranges"] == {"PM2.5": [0.0, None], "TEMP": [-40.0, 45.0]}
    assert spec["time_format"] == {"unit": None, "format": None, "dayfirst": True}
    training = json.loads((tmp_path / "export" / "training.json").read_text())
    assert training["data"]["valid_ranges"] == spec["valid_ranges"] and "values_invalid" in training["data"]
