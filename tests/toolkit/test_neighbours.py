"""Neighbouring stations as inputs: alignment, choice on the training split, masking and
clipping in the graph under parity (ONNX and TFLite), the runtime's NaN policy."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import hourly_frame, run_cli

from edgecast.trainer.data import ReadOptions, load_csv
from edgecast.trainer.errors import DataError
from edgecast.trainer.neighbours import add_neighbours, all_silent, mask_at_random

SPLIT = (0.7, 0.15, 0.15)


def _station(folder: Path, name: str, hours: int, seed: int, shift: int = 0, drop: slice | None = None) -> Path:
    """A station whose PM2.5 leads the reference series by `shift` hours."""
    frame = hourly_frame(hours=hours + 6, seed=seed)
    frame["PM2.5"] = frame["PM2.5"].shift(-shift)
    frame = frame.iloc[:hours]
    if drop is not None:
        frame = frame.drop(frame.index[drop])
    path = folder / f"{name}.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def network(tmp_path: Path) -> dict[str, Path]:
    return {
        "home": _station(tmp_path, "home", 300, seed=1),
        "upwind": _station(tmp_path, "upwind", 300, seed=2, shift=2, drop=slice(100, 110)),
        "far": _station(tmp_path, "far", 300, seed=3),
    }


def test_neighbours_are_aligned_by_timestamp_and_named(network):
    series = load_csv(network["home"], "PM2.5")
    joined, record = add_neighbours(series, [network["upwind"], network["far"], network["home"]], None,
                                    ReadOptions(), 6, SPLIT)
    assert joined.features == ["PM2.5", "PM2.5@far", "PM2.5@upwind"]
    assert record.stations == ["far", "upwind"]  # the station's own file is no neighbour
    upwind = pd.read_csv(network["upwind"])
    # rows 100..109 are absent from the neighbour's file: missing, longer than max_gap 6
    assert joined.frame["PM2.5@upwind"].iloc[100:110].isna().all()
    assert joined.frame["PM2.5@upwind"].iloc[99] == pytest.approx(upwind["PM2.5"].iloc[99])
    assert [e["kind"] for e in joined.encodings] == ["numeric", "masked", "masked"]
    assert joined.encodings[1]["fill"] == {"column": 0}  # the station's own PM2.5 stands in


def test_the_k_neighbours_are_chosen_on_the_training_split_only(tmp_path):
    home = _station(tmp_path, "home", 300, seed=1)
    twin = tmp_path / "twin.csv"
    frame = pd.read_csv(home)
    rng = np.random.default_rng(5)
    noise = pd.Series(rng.normal(60, 30, len(frame))).round(1)
    first_val = int(round(len(frame) * SPLIT[0]))
    # equal to the station on the test rows, noise on the training rows: a choice that
    # peeked at the test split would take it
    twin_frame = frame.copy()
    twin_frame.loc[: first_val - 1, "PM2.5"] = noise[:first_val]
    twin_frame.to_csv(twin, index=False)
    similar = _station(tmp_path, "similar", 300, seed=9)
    series = load_csv(home, "PM2.5")
    joined, record = add_neighbours(series, [twin, similar], None, ReadOptions(), 6, SPLIT, count=1)
    assert record.stations == ["similar"]
    assert record.correlations["similar"] > record.correlations["twin"]
    with pytest.raises(DataError, match="at least 1"):
        add_neighbours(series, [twin], None, ReadOptions(), 6, SPLIT, count=0)


def test_masks_silence_the_end_of_windows():
    x = np.ones((2000, 8, 3), np.float32)
    masked = mask_at_random(x, [1, 2], np.random.default_rng(0))
    assert np.isfinite(masked[:, :, 0]).all()
    for column in (1, 2):
        silent = np.isnan(masked[:, :, column])
        assert 0.25 < silent.any(axis=1).mean() < 0.5
        # once silent, silent until the window's end
        assert (np.diff(silent.astype(int), axis=1) >= 0).all()
    assert np.isnan(all_silent(x, [1, 2])[:, :, 1:]).all()


def test_train_export_parity_with_masked_neighbours_and_runtime(network, tmp_path):
    models = tmp_path / "models"
    trained = run_cli("train", network["home"], "--target", "PM2.5", "--neighbours", network["upwind"],
                      "--neighbours", network["far"], "--look-back", "6", "--horizon", "2", "--units", "4",
                      "--epochs", "2", "--batch-size", "32", "--name", "home", "--models-dir", models)
    assert trained.returncode == 0, trained.stderr
    bundle = models / "home"
    spec = json.loads((bundle / "preprocessing.json").read_text())
    assert spec["schema_version"] == 3
    assert spec["neighbours"] == {"far": ["PM2.5"], "upwind": ["PM2.5"]}
    assert spec["target_min"] == 0.0
    metrics = json.loads((bundle / "metrics.json").read_text())
    assert {"model_neighbours_missing", "model_unclipped"} <= set(metrics)
    training = json.loads((bundle / "training.json").read_text())
    assert training["neighbours"]["stations"] == ["far", "upwind"]

    exported = run_cli("export", bundle)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    manifest = json.loads((bundle / "manifest.json").read_text())
    checks = manifest["parity"]["checks"]
    for artifact in ("model.onnx", "model.tflite"):
        sets = {c["windows"] for c in checks if c["artifact"] == artifact}
        assert {"held-out, neighbours masked", "held-out, neighbours missing"} <= sets
    assert all(c["max_abs"] <= 1e-3 for c in checks)

    from edgecast_runtime import Forecaster
    from edgecast_runtime.errors import InputValueError

    forecaster = Forecaster(bundle / "model.onnx")
    with np.load(bundle / "windows.npz") as windows:
        window = windows["test_x"][0].copy()
    window[:, 1:] = np.nan  # every neighbour silent: still a forecast, never negative
    forecast = forecaster.predict(window)
    assert np.isfinite(forecast).all() and (forecast >= 0).all()
    window[2, 0] = np.nan  # the station's own reading is not maskable
    with pytest.raises(InputValueError, match=r"\[2, 0\]"):
        forecaster.predict(window)

    # Windows far below the training range: the network's own output goes negative
    # there, the graph's Max keeps the export at 0 or above.
    from edgecast.exporter.parity import random_windows
    from edgecast.trainer.bundle import read_bundle
    from edgecast.trainer.forecast import predict_raw

    low = random_windows(spec) - 200
    model = read_bundle(bundle).load_model()
    assert predict_raw(model, spec, low, clip=False).min() < 0
    assert forecaster.predict_batch(low).min() >= 0

    evaluated = run_cli("evaluate", bundle, network["home"], "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert "model_neighbours_missing" in json.loads(evaluated.stdout)["metrics"]


def test_the_floor_comes_from_the_training_targets():
    from edgecast.trainer.pipeline import TrainConfig, target_floor

    assert target_floor(TrainConfig(), np.array([0.0, 3.0])) == 0.0
    assert target_floor(TrainConfig(), np.array([-1.0, 3.0])) is None
    assert target_floor(TrainConfig(target_min=5.0), np.array([-1.0])) == 5.0
    assert target_floor(TrainConfig(clip_target=False), np.array([1.0])) is None


def test_fleet_neighbours_option():
    from edgecast.fleet.stations import FleetSettings

    assert FleetSettings("PM2.5", neighbours="all").neighbour_count() is None
    assert FleetSettings("PM2.5", neighbours="3").neighbour_count() == 3
    for bad in ("0", "some"):
        with pytest.raises(DataError, match="'all' or a whole number"):
            FleetSettings("PM2.5", neighbours=bad).neighbour_count()
