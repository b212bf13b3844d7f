"""CSV loading, gap handling, windowing, the chronological split and the scaler."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import hourly_frame
from sklearn.preprocessing import MinMaxScaler

from edgecast.trainer.data import fill_short_gaps, load_csv
from edgecast.trainer.errors import DataError
from edgecast.trainer.windows import make_windows, split_windows


def test_year_month_day_hour_layout_is_sorted_and_regular(tmp_path):
    frame = hourly_frame(hours=48)
    path = tmp_path / "shuffled.csv"
    frame.sample(frac=1, random_state=0).to_csv(path, index=False)
    series = load_csv(path, "PM2.5")
    assert series.interval_seconds == 3600
    assert series.time_columns == ["year", "month", "day", "hour"]
    assert series.frame.index.is_monotonic_increasing
    np.testing.assert_allclose(series.frame["PM2.5"].to_numpy(), frame["PM2.5"].to_numpy())


def test_timestamp_column_and_missing_timestamps_become_explicit(tmp_path):
    time = pd.date_range("2024-05-01", periods=30, freq="10min")
    frame = pd.DataFrame({"timestamp": time.astype(str), "level": np.arange(30.0)})
    path = tmp_path / "gappy.csv"
    frame.drop(index=[10, 11, 20, 21, 22, 23, 24, 25, 26, 27]).to_csv(path, index=False)
    series = load_csv(path, "level", max_gap=3)
    assert series.interval_seconds == 600
    assert len(series.frame) == 30  # the dropped timestamps are back, as rows
    level = series.frame["level"]
    assert level.iloc[10] == pytest.approx(10.0) and level.iloc[11] == pytest.approx(11.0)  # short gap filled
    assert level.iloc[20:28].isna().all()  # an 8-step gap is longer than max_gap: left missing
    assert series.values_interpolated == 2 and series.values_missing == 8


def test_fill_short_gaps_fills_a_run_whole_or_not_at_all():
    column = pd.Series([1.0, np.nan, np.nan, 4.0, np.nan, np.nan, np.nan, np.nan, 9.0])
    filled = fill_short_gaps(column, max_gap=3)
    assert filled.tolist()[:4] == [1.0, 2.0, 3.0, 4.0]
    assert filled.iloc[4:8].isna().all()  # pandas' limit= would have filled 3 of these 4


def test_non_finite_values_are_missing_not_numbers(tmp_path):
    frame = hourly_frame(hours=40)
    frame["PM2.5"] = frame["PM2.5"].astype(object)
    frame.loc[5, "PM2.5"] = "inf"
    frame.loc[6, "PM2.5"] = "NA"
    path = tmp_path / "inf.csv"
    frame.to_csv(path, index=False)
    series = load_csv(path, "PM2.5", max_gap=0)
    assert series.frame["PM2.5"].iloc[[5, 6]].isna().all()


def test_no_window_crosses_a_long_gap():
    values = np.arange(40, dtype=float).reshape(-1, 1)
    values[15:25] = np.nan  # a gap the loader left open
    windows = make_windows(values, look_back=4, horizon=2)
    assert np.isfinite(windows.x).all() and np.isfinite(windows.y).all()
    starts = windows.end - 5
    assert not np.any((starts < 25) & (windows.end >= 15))


def test_windows_pair_inputs_with_the_following_targets():
    values = np.arange(12, dtype=float).reshape(-1, 1)
    windows = make_windows(values, look_back=3, horizon=2)
    assert windows.x[0, :, 0].tolist() == [0, 1, 2] and windows.y[0].tolist() == [3, 4]
    assert windows.end[0] == 4


def test_scaler_is_fitted_on_the_training_split_only():
    values = np.arange(100, dtype=float).reshape(-1, 1)
    values[90] = 1000.0  # a test-split spike that must not reach the scaler
    data = split_windows(values, look_back=4, horizon=1)
    first_val, first_test = data.boundaries
    assert (first_val, first_test) == (70, 85)
    assert data.scaler.data_max_[0] == 69.0 and data.scaler.data_min_[0] == 0.0
    assert data.train.end.max() < first_val <= data.val.end.min()
    assert data.val.end.max() < first_test <= data.test.end.min()


def test_too_few_rows_names_the_requirement():
    with pytest.raises(DataError, match="too few usable rows"):
        split_windows(np.arange(6, dtype=float).reshape(-1, 1), look_back=4, horizon=1, source="short.csv")


def test_zero_range_feature_is_scaled_like_scikit_learn():
    from edgecast.trainer.bundle import scaler_from_spec

    rows = np.column_stack([np.arange(10.0), np.full(10, 7.0)])
    fitted = MinMaxScaler().fit(rows)
    spec = {"scaler": {"feature_range": [0.0, 1.0], "data_min": fitted.data_min_.tolist(), "data_max": fitted.data_max_.tolist()}}
    rebuilt = scaler_from_spec(spec)
    np.testing.assert_array_equal(rebuilt.scale_, fitted.scale_)
    np.testing.assert_array_equal(rebuilt.min_, fitted.min_)
    assert rebuilt.scale_[1] == 1.0  # sklearn treats a zero range as 1


def test_clock_is_recorded_or_taken_from_zoned_timestamps(tmp_path):
    """--clock names the clock of zone-less timestamps; zoned ones bring their own, or
    are converted to the one given; calendar features follow it."""
    from edgecast_runtime.clock import clock_name, parse_clock

    stamps = pd.date_range("2024-01-01", periods=30, freq="h")
    naive, zoned = tmp_path / "naive.csv", tmp_path / "zoned.csv"
    pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%dT%H:%M:%S"), "PM2.5": range(30)}).to_csv(naive, index=False)
    pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%dT%H:%M:%S+08:00"), "PM2.5": range(30)}).to_csv(zoned, index=False)

    assert load_csv(naive, "PM2.5").clock is None
    series = load_csv(naive, "PM2.5", ["hour_of_day"], clock="+8")
    assert series.clock == "+08:00" and series.frame["hour_of_day"].iloc[0] == 0
    series = load_csv(zoned, "PM2.5", ["hour_of_day"])
    assert series.clock == "+08:00" and series.frame["hour_of_day"].iloc[0] == 0
    series = load_csv(zoned, "PM2.5", ["hour_of_day"], clock="UTC")
    assert series.clock == "UTC" and series.frame["hour_of_day"].iloc[0] == 16  # 00:00+08:00 is 16:00 UTC
    assert [clock_name(parse_clock(t)) for t in ("utc", "-0530", "UTC+8")] == ["UTC", "-05:30", "+08:00"]
    with pytest.raises(DataError, match="clock 'Mars/Olympus' is not UTC"):
        load_csv(naive, "PM2.5", clock="Mars/Olympus")


def test_recorded_clock_reaches_the_runtime(tmp_path):
    """edgecast train --clock +08:00: the spec records it, and the runtime reads a hub's
    UTC epoch timestamps in that clock for hour_of_day without being told."""
    from datetime import datetime, timezone

    from conftest import run_cli

    from edgecast_runtime import Forecaster, StreamingForecaster

    csv = tmp_path / "hourly.csv"
    hourly_frame(hours=300).to_csv(csv, index=False)
    assert run_cli("train", csv, "--target", "PM2.5", "--features", "TEMP,hour_of_day", "--clock", "+08:00",
                   "--look-back", "6", "--units", "4", "--epochs", "1", "--name", "beijing",
                   "--models-dir", tmp_path).returncode == 0
    assert run_cli("export", tmp_path / "beijing").returncode == 0
    model = Forecaster(tmp_path / "beijing" / "model.onnx")
    assert model.spec["clock"] == "+08:00" and model.describe()["clock"] == "+08:00"
    stream = StreamingForecaster(model, tmp_path / "state.json")
    midnight_utc = datetime(2024, 3, 11, tzinfo=timezone.utc).timestamp()
    stream.observe([50.0, 10.0], midnight_utc)
    hour = json.loads((tmp_path / "state.json").read_text())["buffer"][0][2]
    assert hour == 8.0  # 00:00 UTC is 08:00 in the data's clock

    bad = run_cli("train", csv, "--target", "PM2.5", "--clock", "Mars/Olympus", "--models-dir", tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("edgecast: error: --clock 'Mars/Olympus'")
