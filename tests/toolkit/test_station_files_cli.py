"""Station files as an operator brings them, through the real `edgecast train` (issue 27):
every kind of file the reader writes a `note:` about trains (case 1: the epoch bar used to
crash on the second progress line), and a time column the reader does not recognise is
refused with one line naming it and the options to pass, never trained in file order (case 4)."""
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


def datum_zeit(path: Path, hours: int = 240) -> None:
    """The European export of issue 27: `;`, decimal commas, a day-first `Datum Zeit` column."""
    frame = hourly_frame(hours=hours)
    readings = _readings(frame)
    readings.insert(0, "Datum Zeit", _times(frame).dt.strftime("%d.%m.%Y %H:%M"))
    readings.to_csv(path, index=False, sep=";", decimal=",")


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


def test_an_unrecognised_time_column_is_refused_in_one_line_and_the_options_it_names_work(tmp_path):
    path = tmp_path / "station.csv"
    datum_zeit(path)
    refused = run_cli("train", path, *TINY, "--models-dir", tmp_path / "models")
    assert refused.returncode == 2, refused.stderr
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("edgecast: error:"), refused.stderr
    for fragment in ("station.csv", "column 'Datum Zeit' looks like timestamps ('01.01.2024 00:00')", "file order",
                     "pass --time-column 'Datum Zeit'", "--dayfirst", "--time-format"):
        assert fragment in lines[0], lines[0]
    assert not (tmp_path / "models").exists()
    hourly_frame().to_csv(tmp_path / "home.csv", index=False)  # the same file as a neighbour: said as flags too
    as_neighbour = run_cli("train", tmp_path / "home.csv", *TINY, "--neighbours", path, "--models-dir", tmp_path / "models")
    lines = [line for line in as_neighbour.stderr.splitlines() if line.strip()]
    assert as_neighbour.returncode == 2 and len(lines) == 1, as_neighbour.stderr
    assert "neighbour 'station'" in lines[0] and "pass --time-column 'Datum Zeit' (and --dayfirst" in lines[0], lines[0]

    trained = run_cli("train", path, *TINY, "--time-column", "Datum Zeit", "--dayfirst",
                      "--models-dir", tmp_path / "models")
    assert trained.returncode == 0, trained.stderr
    data = json.loads((tmp_path / "models" / "station" / "training.json").read_text())["data"]
    assert data["time_columns"] == ["Datum Zeit"] and data["interval_seconds"] == 3600


def test_the_library_names_the_settings_and_keeps_notes_where_a_time_line_is_used(tmp_path):
    from edgecast.trainer.data import load_csv
    from edgecast.trainer.errors import DataError

    path = tmp_path / "station.csv"
    datum_zeit(path, hours=60)
    with pytest.raises(DataError, match="pass time_column 'Datum Zeit' .and dayfirst or time_format") as caught:
        load_csv(path, "PM2.5")
    assert set(caught.value.settings) == {"time_column", "dayfirst", "time_format"}
    # Named by its name alone ('Date (UTC)' is no name the reader looks for), ISO values: refused too.
    frame = hourly_frame(hours=60)
    named = tmp_path / "named.csv"
    _readings(frame).assign(**{"Date (UTC)": _times(frame).dt.strftime("%Y-%m-%dT%H:%M")}).to_csv(named, index=False)
    with pytest.raises(DataError, match="column 'Date .UTC.' looks like timestamps .'2024-01-01T00:00'."):
        load_csv(named, "PM2.5")
    # A time line is used: a second time-like column stays a note, as before.
    both = tmp_path / "both.csv"
    frame.assign(**{"Datum Zeit": _times(frame).dt.strftime("%d.%m.%Y %H:%M")}).to_csv(both, index=False)
    series = load_csv(both, "PM2.5")
    assert series.time_columns == ["year", "month", "day", "hour"]
    assert any("time-like column(s) Datum Zeit not used" in note for note in series.notes())
    # Text that is not dates (a station id, compass directions) is no time column.
    plain = tmp_path / "plain.csv"
    _readings(frame).assign(station="Aotizhongxin", wd="NNW").to_csv(plain, index=False)
    assert load_csv(plain, "PM2.5").time_columns == []


@pytest.mark.parametrize("scale, unit, said", [(1, "ms", "epoch seconds by their size, but --time-unit says ms"),
                                               (1000, "s", "epoch milliseconds by their size, but --time-unit says s")])
def test_a_time_unit_the_numbers_contradict_is_refused_in_one_line(scale, unit, said, tmp_path):
    """Hourly readings read in the other unit were 3.6 s apart in 1970, or 1000 h apart
    after the year 5000, and trained without complaint."""
    path = tmp_path / "station.csv"
    epoch_seconds(path)
    frame = pd.read_csv(path)
    frame.assign(ts=frame["ts"] * scale).to_csv(path, index=False)
    refused = run_cli("train", path, *TINY, "--time-unit", unit, "--models-dir", tmp_path / "models")
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode == 2 and len(lines) == 1, refused.stderr
    assert "column 'ts' holds numbers around" in lines[0] and said in lines[0], lines[0]
    assert not (tmp_path / "models").exists()


def test_blank_lines_of_a_one_column_file_are_missing_readings_in_their_place(tmp_path):
    """With no time column the file's order is its clock: pandas skipped blank lines, so
    every later reading moved one step earlier without a word. Trailing ones end the file."""
    values = [f"{value:.1f}" for value in hourly_frame(hours=240)["PM2.5"]]
    for row in (50, 120, 121):
        values[row] = ""
    path = tmp_path / "one.csv"
    path.write_text("PM2.5\n" + "\n".join(values) + "\n\n\n")
    trained = run_cli("train", path, "--target", "PM2.5", "--look-back", "6", "--units", "4", "--epochs", "1",
                      "--models-dir", tmp_path / "models")
    assert trained.returncode == 0, trained.stderr
    assert "note: 3 blank line(s) read as missing readings" in trained.stderr, trained.stderr
    assert "240 steps" in trained.stderr and "3 values interpolated" in trained.stderr, trained.stderr
