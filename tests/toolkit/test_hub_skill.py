"""The hub's forecast skill against the toolkit's own evaluation, on a real station.

A small model is trained on a slice of Changping (temperature, with PM2.5 as a
covariate, horizon 6: a target whose daily cycle a small model learns to beat
persistence on within a few epochs) and exported. The test split, as `edgecast evaluate` reads it (gaps up to max_gap
interpolated, longer ones left empty), is replayed through the runtime's `stream`
and `score`: the hub issues a forecast at every full buffer, from the first test
window's issue row on, and scores one once the readings of all its six target hours
have arrived, so the forecasts it scores are exactly evaluate's test windows. Rolling
MAE and RMSE per lead must equal evaluate's (scoring the same ONNX file, one window
per call) within 1e-6, for the model and for persistence. Then the drift alarms:
a thermometer with a growing offset raises the skill alarm, cleared once the drift
stops; a thermometer reading 40 °C too high raises the input-drift alarm."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import CHANGPING, run_cli

RUNTIME = Path(sys.executable).parent / "edgecast-runtime"
TRAIN_ROWS = 1600  # March to mid-April 2013: a test split of ten days
TOLERANCE = 1e-6
LEADS = 6

pytestmark = pytest.mark.skipif(
    not CHANGPING.exists(), reason=f"real data not available: {CHANGPING} is absent (../shared/data)")


SETTINGS = ["--target", "TEMP", "--features", "PM2.5", "--look-back", "12", "--horizon", str(LEADS), "--units", "8",
            "--epochs", "4", "--seed", "3"]


@pytest.fixture(scope="module", params=["local"])
def station(request, tmp_path_factory) -> dict:
    """Changping's bundle: a model of its own ("local"), or its share of a global model
    trained with the same settings on Changping and Dongsi ("global", `fleet train --global`)."""
    folder = tmp_path_factory.mktemp(f"hub_skill_{request.param}")
    csv = folder / "changping.csv"
    pd.read_csv(CHANGPING, nrows=TRAIN_ROWS).to_csv(csv, index=False)
    if request.param == "local":
        trained = run_cli("train", csv, *SETTINGS, "--name", "changping", "--models-dir", folder)
        bundle = folder / "changping"
    else:
        other = folder / "dongsi.csv"
        pd.read_csv(CHANGPING.with_name(CHANGPING.name.replace("Changping", "Dongsi")), nrows=TRAIN_ROWS).to_csv(
            other, index=False)
        trained = run_cli("fleet", "train", f"changping={csv}", f"dongsi={other}", *SETTINGS, "--global",
                          "--models-dir", folder)
        bundle = folder / "fleet" / "changping"
    assert trained.returncode == 0, trained.stderr
    exported = run_cli("export", bundle, "--no-tflite")
    assert exported.returncode == 0, exported.stderr
    return {"folder": folder, "csv": csv, "bundle": bundle, "model": bundle / "model.onnx"}


def runtime(*args, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(RUNTIME), *map(str, args)], input=stdin, capture_output=True,
                          text=True, timeout=600)


def evaluated_series(bundle: Path, csv: Path):
    """The station's rows as `edgecast evaluate` reads them (the training's loading)."""
    from edgecast.trainer.bundle import read_bundle
    from edgecast.trainer.data import load_csv

    spec = read_bundle(bundle).spec
    return load_csv(csv, spec.target, list(spec.features[1:]), None, spec.max_gap, clock=spec.clock), spec


def readings_csv(frame: pd.DataFrame, values: np.ndarray, features: list[str]) -> str:
    """`timestamp,TEMP,PM2.5` lines; each value as the float32 the toolkit's windows hold."""
    lines = [",".join(["timestamp", *features])]
    for moment, row in zip(frame.index, values):
        cells = ["" if not np.isfinite(v) else repr(float(np.float32(v))) for v in row]
        lines.append(",".join([str(int(pd.Timestamp(moment).timestamp())), *cells]))
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("station", ["local", "global"], indirect=True)
def test_stream_and_score_match_edgecast_evaluate_on_the_test_windows(station):
    evaluated = run_cli("evaluate", station["bundle"], station["csv"], "--artifact", station["model"], "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads(evaluated.stdout)["metrics"]
    series, spec = evaluated_series(station["bundle"], station["csv"])
    training = json.loads((station["bundle"] / "training.json").read_text())
    first_test = training["split"]["first_test_row"]
    # The first test window's inputs start look_back + horizon - 1 rows before its last target.
    start = first_test - spec.look_back - spec.horizon + 1
    values = series.values()[start:]
    frame = series.frame.iloc[start:]
    assert (frame.index[-1] - frame.index[0]).days < 30  # all inside the 30-day window
    text = readings_csv(frame, values, list(spec.features))
    (station["folder"] / "test_split.csv").write_text(text)

    streamed = runtime("stream", station["model"], "--state", station["folder"] / "state.json", stdin=text)
    assert streamed.returncode == 0, streamed.stderr
    answers = [json.loads(line) for line in streamed.stdout.splitlines()]
    assert all(answer["status"] != "error" for answer in answers), answers[:3]
    stream_rows = store_table(station["folder"] / "state.json", spec.interval_seconds)

    scored = runtime("score", station["model"], station["folder"] / "test_split.csv", "--json")
    assert scored.returncode == 0, scored.stderr
    report = json.loads(scored.stdout)
    assert report["forecasts"]["scored"] == metrics["windows"] + metrics["windows_dropped"]
    score_rows = {row["lead"]: row for row in report["skill"] if row["window"] == "30d"}
    assert sorted(score_rows) == list(range(1, LEADS + 1))
    for rows in (stream_rows, score_rows):
        for lead, row in rows.items():
            assert row["count"] == metrics["windows"]
            for source in ("model", "persistence"):
                for measure in ("mae", "rmse"):
                    expected = metrics[source][measure][lead - 1]
                    assert abs(row[f"{source}_{measure}"] - expected) <= TOLERANCE, (
                        source, measure, lead, row[f"{source}_{measure}"], expected)


def store_table(state: Path, interval: float) -> dict:
    """The stream's rolling skill over 30 days, read from the store beside its state."""
    from edgecast_runtime.skill.rolling import SkillSettings, StreamScorer
    from edgecast_runtime.skill.store import ForecastStore, store_path_for

    store = ForecastStore(store_path_for(state), interval)
    try:
        scorer = StreamScorer(store, SkillSettings(windows=(30 * 86400.0,)), {}, lambda event: None)
        return {row["lead"]: row for row in scorer.table()}
    finally:
        store.close()


def deployment(station, rows: int = 500):
    """The three weeks after the training slice, as the hub would read them."""
    later = station["folder"] / "later.csv"
    pd.read_csv(CHANGPING, skiprows=range(1, TRAIN_ROWS + 1), nrows=rows).to_csv(later, index=False)
    series, spec = evaluated_series(station["bundle"], later)
    return series.frame, series.values().copy(), spec


def alarm_events(stderr: str, alarm: str) -> list[tuple[str, float]]:
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [(e["event"], e["timestamp"]) for e in events
            if e.get("event") in ("alarm_raised", "alarm_cleared") and e.get("alarm") == alarm]


def test_a_drifting_sensor_raises_the_skill_alarm_and_it_clears_when_the_drift_stops(station):
    frame, values, spec = deployment(station)
    drift_from, drift_to = 200, 320  # hours: the offset grows 0.25 °C an hour, then the sensor is fixed
    values[drift_from:drift_to, 0] += 0.25 * np.arange(1, drift_to - drift_from + 1)
    path = station["folder"] / "drifting.csv"
    path.write_text(readings_csv(frame, values, list(spec.features)))
    clean = station["folder"] / "clean.csv"
    clean.write_text(readings_csv(frame, deployment(station)[1], list(spec.features)))
    # A fast alarm (72 h, 3 checks; the margin and band kept) for a steady target like TEMP.
    settings = ("--skill-window", "72h", "--alarm-min-scored", "12", "--skill-alarm-window", "72h",
                "--skill-checks", "3")

    baseline = runtime("score", station["model"], clean, *settings, "--json")
    assert baseline.returncode == 0, baseline.stderr
    assert alarm_events(baseline.stderr, "skill") == []  # the model beats persistence on clean data

    drifting = runtime("score", station["model"], path, *settings, "--json")
    assert drifting.returncode == 0, drifting.stderr
    events = alarm_events(drifting.stderr, "skill")
    start = pd.Timestamp(frame.index[drift_from]).timestamp()
    end = pd.Timestamp(frame.index[drift_to]).timestamp()
    assert [name for name, _ in events] == ["alarm_raised", "alarm_cleared"], events
    raised, cleared = events[0][1], events[1][1]
    assert start < raised < end < cleared  # raised during the drift, cleared after it stopped


def test_a_sensor_reading_too_warm_raises_the_input_drift_alarm(station):
    manifest = json.loads((station["bundle"] / "manifest.json").read_text())
    statistics = manifest["input_statistics"]
    assert statistics["split"] == "train" and set(statistics["features"]) == {"TEMP", "PM2.5"}
    assert statistics["features"]["TEMP"]["std"] > 0
    # Mid-April, the season the model was trained on (May already reads as drift: warmer).
    series, spec = evaluated_series(station["bundle"], station["csv"])
    frame, values = series.frame.iloc[1000:1400], series.values()[1000:1400].copy()
    clean = station["folder"] / "april.csv"
    clean.write_text(readings_csv(frame, values, list(spec.features)))
    values[200:, 0] += 40.0  # °C
    warm = station["folder"] / "warm.csv"
    warm.write_text(readings_csv(frame, values, list(spec.features)))

    assert alarm_events(runtime("score", station["model"], clean).stderr, "input_drift") == []
    result = runtime("score", station["model"], warm, "--json")
    assert result.returncode == 0, result.stderr
    events = alarm_events(result.stderr, "input_drift")
    assert [name for name, _ in events] == ["alarm_raised"], events
    assert events[0][1] > pd.Timestamp(frame.index[200]).timestamp()
    assert json.loads(result.stdout)["alarms"]["input_drift"] is True
