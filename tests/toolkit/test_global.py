"""One model for the network (`edgecast fleet train --global`) and new stations started from it
(`edgecast train NEW.csv --from FLEET`, `edgecast train --from FLEET --station NEW`), through the
command line: each station's bundle is an ordinary one that exports, verifies and serves.

Three small synthetic stations at different levels (so each one's own scaling matters),
trained once for the module on an embedded local Ray.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import hourly_pm25, run_cli

RUNTIME = Path(sys.executable).parent / "edgecast-runtime"
SMALL = ["--target", "PM2.5", "--features", "TEMP", "--look-back", "12", "--horizon", "3", "--units", "8",
         "--epochs", "3", "--batch-size", "32", "--seed", "2", "--clock", "+08:00", "--interval", "0.9",
         "--alert", "PM2.5>75"]  # intervals work with a global model: every bundle here has them
LEVELS = {"north": 30.0, "centre": 90.0, "south": 60.0}
HOURS = 700


def station_frame(hours: int, seed: int, level: float, start: str = "2024-01-01") -> pd.DataFrame:
    time = pd.date_range(start, periods=hours, freq="h")
    temp = 5 + 8 * np.sin(2 * np.pi * (np.arange(hours) - 6) / 24)
    return pd.DataFrame({"year": time.year, "month": time.month, "day": time.day, "hour": time.hour,
                         "PM2.5": hourly_pm25(hours, seed, level=level, daily=level / 3), "TEMP": temp.round(2)})


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("global")
    data = folder / "stations"
    data.mkdir()
    for seed, (name, level) in enumerate(LEVELS.items()):
        station_frame(HOURS, seed, level).to_csv(data / f"{name}.csv", index=False)
    models = folder / "models"
    trained = run_cli("fleet", "train", data, *SMALL, "--global", "--export", "--models-dir", models,
                      timeout=900)
    assert trained.returncode == 0, trained.stderr + trained.stdout
    return {"folder": folder, "data": data, "models": models, "fleet": models / "fleet", "run": trained}


def stream(model: Path, frame: pd.DataFrame) -> dict:
    """The last answer of `edgecast-runtime stream` to the frame's readings."""
    stamps = pd.to_datetime(frame[["year", "month", "day", "hour"]]).dt.tz_localize("+08:00")
    lines = ["timestamp,PM2.5,TEMP"] + [f"{int(t.timestamp())},{p},{c}"
                                         for t, p, c in zip(stamps, frame["PM2.5"], frame["TEMP"])]
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1"}
    result = subprocess.run([str(RUNTIME), "stream", str(model)], input="\n".join(lines) + "\n",
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_every_station_gets_an_ordinary_bundle_that_says_where_its_weights_came_from(fleet):
    assert "3 trained, 0 skipped, 0 failed of 3 stations" in fleet["run"].stdout
    coverage = []  # of each station's 90 % interval, conformalized on its own validation windows
    for name in LEVELS:
        bundle = fleet["fleet"] / name
        training = json.loads((bundle / "training.json").read_text())
        origin = training["global"]
        assert origin["identity"] == name and sorted(origin["stations"]) == sorted(LEVELS)
        assert origin["fleet"] == "fleet" and origin["trained"].endswith("Z")
        coverage += json.loads((bundle / "metrics.json").read_text())["intervals"]["interval"]["coverage_by_lead"]
        record = json.loads((bundle / "fleet-station.json").read_text())  # exported and verified in the run
        assert record["verified"]["passed"] and record["verified"]["max_abs"] <= record["verified"]["tolerance_abs"]
        spec = json.loads((bundle / "preprocessing.json").read_text())
        assert spec["input"]["shape"] == ["batch", 12, 2]  # the identity is inside: the hub sends the window alone
    # 105 autocorrelated test windows a station: the mean over stations and leads, not each one
    assert 0.75 <= np.mean(coverage) <= 0.98 and min(coverage) >= 0.6, coverage
    mins = {name: json.loads((fleet["fleet"] / name / "preprocessing.json").read_text())["scaler"]["data_max"][0]
            for name in LEVELS}
    assert mins["north"] < mins["south"] < mins["centre"]  # each station scaled by its own training rows
    assert (fleet["fleet"] / ".global" / "global.keras").is_file()
    assert (fleet["fleet"] / ".global" / "unknown" / "model.keras").is_file()


def test_the_folded_identity_is_the_station_map_plus_the_global_network_with_that_identity(fleet):
    """A station's model is its own ridge map plus the shared network's correction under its
    identity; folding the embedding into the LSTM's bias changes no forecast (float32 rounding)."""
    from edgecast.trainer.bundle import read_bundle
    from edgecast.trainer.identity import one_hot
    from edgecast.trainer.model import keras
    from edgecast.trainer.windows import model_inputs

    network = keras.saving.load_model(fleet["fleet"] / ".global" / "global.keras", compile=False)
    stations = json.loads((fleet["fleet"] / ".global" / "global.json").read_text())["stations"]
    for index, name in enumerate(stations):
        bundle = read_bundle(fleet["fleet"] / name)
        x = model_inputs(bundle.scaler(), bundle.spec.feature_encodings, bundle.windows()["test_x"][:64])
        model = bundle.load_model()
        own_map = keras.Model(model.inputs, model.get_layer("linear").output).predict(x, verbose=0)
        correction = network.predict([x, one_hot(np.full(len(x), index), len(stations) + 1)], verbose=0)
        assert np.abs(model.predict(x, verbose=0) - (own_map + correction)).max() <= 1e-5
        assert np.abs(correction).max() > 1e-4  # the shared network does contribute


def test_a_rerun_skips(fleet):
    again = run_cli("fleet", "train", fleet["data"], *SMALL, "--global", "--export", "--models-dir", fleet["models"])
    assert again.returncode == 0 and "0 trained, 3 skipped" in again.stdout, again.stderr


def test_a_failing_station_fails_again_without_retraining_until_its_file_changes(fleet, tmp_path):
    """A station whose file cannot be read fails alone; a rerun used to retrain the whole
    network to fail it again. Now only a change (its file fixed) retrains every station."""
    data = tmp_path / "stations"
    data.mkdir()
    for name in ("north", "south"):
        (data / f"{name}.csv").write_bytes((fleet["data"] / f"{name}.csv").read_bytes())
    station_frame(HOURS, 7, 50.0).drop(columns="PM2.5").to_csv(data / "east.csv", index=False)

    def train() -> tuple[subprocess.CompletedProcess, dict]:
        done = run_cli("fleet", "train", data, *SMALL, "--global", "--models-dir", tmp_path, timeout=600)
        record = json.loads((tmp_path / "fleet" / "fleet-run.json").read_text())
        return done, {s["station"]: s for s in record["stations"]}

    first, stations = train()
    assert "2 trained, 0 skipped, 1 failed" in first.stdout, first.stdout + first.stderr
    assert "PM2.5" in stations["east"]["error"] and "last run" not in stations["east"]["error"]
    again, stations = train()
    assert "0 trained, 2 skipped, 1 failed" in again.stdout, again.stdout + again.stderr
    assert stations["east"]["error"].endswith("(as in the last run, on the same files and settings: "
                                              "--force retries it)")
    assert "PM2.5" in again.stdout + again.stderr  # the reason is still said
    station_frame(HOURS, 7, 50.0).to_csv(data / "east.csv", index=False)  # fixed
    fixed, stations = train()
    assert "3 trained, 0 skipped, 0 failed" in fixed.stdout, fixed.stdout + fixed.stderr


def test_a_station_with_48_hours_starts_from_the_fleet_exports_verifies_and_serves(fleet, tmp_path):
    new = tmp_path / "east.csv"
    frame = station_frame(48, seed=11, level=70.0, start="2024-03-01")
    frame.to_csv(new, index=False)
    started = run_cli("train", new, "--from", fleet["fleet"], "--target", "PM2.5", "--models-dir", tmp_path)
    assert started.returncode == 0, started.stderr + started.stdout
    assert "wrote" in started.stdout and "fine-tuned the global model on 20 windows" in started.stdout, started.stdout
    bundle = tmp_path / "east"
    origin = json.loads((bundle / "training.json").read_text())["global"]
    assert origin["station"] == "east" and origin["rows"] == 48 and origin["scaling"] == "the network's"
    for command in (["export", bundle], ["verify", bundle]):
        result = run_cli(*command)
        assert result.returncode == 0, result.stderr + result.stdout
    assert "its interval is the network's (7 validation windows are too few to calibrate on)" in started.stdout
    answer = stream(bundle / "model.onnx", frame)
    assert answer["status"] == "forecast" and len(answer["forecast"]) == 3
    assert answer["interval"]["coverage"] == 0.9 and set(answer["exceedance"]) == {"PM2.5>75"}


def test_a_station_with_no_file_starts_under_the_unknown_identity(fleet, tmp_path):
    started = run_cli("train", "--from", fleet["fleet"], "--station", "West", "--models-dir", tmp_path)
    assert started.returncode == 0, started.stderr + started.stdout
    assert "no history: the global model under the unknown identity, with the network's scaling" in started.stdout
    bundle = tmp_path / "West"
    origin = json.loads((bundle / "training.json").read_text())["global"]
    assert origin["identity"] == "unknown" and origin["station"] == "West" and origin["rows"] == 0
    exported = run_cli("export", bundle)  # refuses to write what fails parity
    assert exported.returncode == 0, exported.stderr + exported.stdout
    answer = stream(bundle / "model.onnx", station_frame(30, seed=12, level=50.0))
    assert answer["status"] == "forecast" and all(value >= 0 for value in answer["forecast"])
    assert all(low <= high for low, high in zip(answer["interval"]["lower"], answer["interval"]["upper"]))
    from edgecast.starting import start_from  # the Python API: the target is the fleet's too

    north = start_from(fleet["fleet"], station="North", models_dir=tmp_path)
    assert not north.fine_tuned and json.loads((north.bundle / "preprocessing.json").read_text())["target"] == "PM2.5"


def test_a_longer_history_fine_tunes_on_its_own_recent_days(fleet, tmp_path):
    new = tmp_path / "harbour.csv"
    station_frame(400, seed=13, level=45.0).to_csv(new, index=False)
    started = run_cli("train", new, "--from", fleet["fleet"], "--name", "harbour",
                      "--models-dir", tmp_path)
    assert started.returncode == 0, started.stderr + started.stdout
    training = json.loads((tmp_path / "harbour" / "training.json").read_text())
    assert training["split"]["windows"]["train"] > 200 and training["global"]["rows"] == 400
    assert 1 <= training["history"]["epochs_run"] <= 10
    assert "test split" in started.stdout  # the metrics table of its own unseen days


@pytest.mark.parametrize("args, fragment", [
    (["--station", "x", "--target", "PM2.5"], "give --from FLEET too"),
    (["--target", "PM2.5"], "give a data file"),
    (["{data}/north.csv"], "Missing option '--target' (or --from FLEET, whose global model decides it)"),
    (["--from", "{fleet}", "--station", "x", "--target", "NO2"], "forecasts PM2.5, not NO2"),
    (["--from", "{fleet}", "--station", "x", "--target", "PM2.5", "--horizon", "6"], "decides --horizon"),
    (["--from", "{data}", "--station", "x", "--target", "PM2.5"], "no global model here"),
    (["--from", "{fleet}", "--station", "x", "--target", "PM2.5", "--neighbours", "{data}/north.csv"],
     "--neighbours cannot go with --from"),
])
def test_train_from_errors_are_one_line(fleet, tmp_path, args, fragment):
    args = [a.format(fleet=fleet["fleet"], data=fleet["data"]) for a in args]
    result = run_cli("train", *args, "--models-dir", tmp_path)
    assert result.returncode == 2, result.stdout
    assert fragment in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_global_with_neighbours_is_refused_before_anything_runs(fleet, tmp_path):
    result = run_cli("fleet", "train", fleet["data"], *SMALL, "--global", "--neighbours", "all",
                     "--models-dir", tmp_path)
    assert result.returncode == 2 and "does not read --neighbours yet" in result.stderr, result.stderr
    assert not (tmp_path / "fleet").exists()


def test_a_station_that_cannot_be_read_fails_alone_and_the_network_trains_on_the_others(fleet, tmp_path):
    data = tmp_path / "stations"
    data.mkdir()
    for name in ("north", "centre"):
        (data / f"{name}.csv").write_bytes((fleet["data"] / f"{name}.csv").read_bytes())
    station_frame(HOURS, 5, 40.0).drop(columns=["PM2.5"]).to_csv(data / "broken.csv", index=False)
    args = list(SMALL)
    args[args.index("--epochs") + 1] = "1"  # one epoch is enough here
    result = run_cli("fleet", "train", data, *args, "--global", "--models-dir", tmp_path)
    assert result.returncode == 1, result.stderr + result.stdout
    assert "2 trained, 0 skipped, 1 failed of 3 stations" in result.stdout
    assert "broken: " in result.stderr and "PM2.5" in result.stderr and "Traceback" not in result.stderr
    stations = json.loads((tmp_path / "fleet" / ".global" / "global.json").read_text())["stations"]
    assert sorted(stations) == ["centre", "north"]
