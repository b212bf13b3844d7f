"""Station files as an operator brings them, through the real `edgecast train` (issue 27):
every kind of file the reader writes a `note:` about trains (case 1: the epoch bar used to
crash on the second progress line)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import hourly_frame, run_cli

TINY = ["--target", "PM2.5", "--features", "TEMP", "--look-back", "6", "--units", "4", "--epochs", "2",
        "--batch-size", "32"]


def _times(frame: pd.DataFrame) -> pd.Series:
    return pd.to_datetime(frame[["year", "month", "day", "hour"]])


def _readings(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["year", "month", "day", "hour"])


def sentinel(path: Path) -> None:
    frame = hourly_frame(hours=240)
    frame.loc[30, "PM2.5"] = -999
    frame.to_csv(path, index=False)


def semicolon_decimal_comma(path: Path) -> None:
    frame = hourly_frame(hours=240)
    _readings(frame).assign(timestamp=_times(frame).dt.strftime("%Y-%m-%d %H:%M")).to_csv(
        path, index=False, sep=";", decimal=",")


def epoch_seconds(path: Path) -> None:
    frame = hourly_frame(hours=240)
    seconds = (_times(frame) - pd.Timestamp("1970-01-01")) // pd.Timedelta("1s")
    _readings(frame).assign(ts=seconds).to_csv(path, index=False)


@pytest.mark.parametrize("write, note", [
    (sentinel, "note: treated as missing: PM2.5 1 (1 sentinel)"),
    (semicolon_decimal_comma, "note: read as ';'-separated with decimal commas"),
    (epoch_seconds, "note: column 'ts': epoch seconds"),
], ids=["sentinel", "semicolon-decimal-comma", "epoch-seconds"])
def test_a_file_with_notes_trains(write, note, tmp_path):
    path = tmp_path / "station.csv"
    write(path)
    trained = run_cli("train", path, *TINY, "--models-dir", tmp_path / "models")
    assert trained.returncode == 0, trained.stderr
    assert "Traceback" not in trained.stderr and note in trained.stderr, trained.stderr
    assert "epoch 2/2" in trained.stderr and "wrote" in trained.stdout
    bundle = tmp_path / "models" / "station"
    assert (bundle / "model.keras").is_file() and (bundle / "preprocessing.json").is_file()
    assert json.loads((bundle / "training.json").read_text())["history"]["epochs_run"] == 2
