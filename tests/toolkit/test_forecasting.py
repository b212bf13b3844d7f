"""Covariates (wind direction with calm, calendar), multi-step horizons, evaluate, report.

One tiny covariate + multi-step model is trained and exported once for the module
(a few seconds of training on synthetic data); the tests read it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import hourly_frame
from typer.testing import CliRunner

from edgecast.cli import app
from edgecast.trainer import features
from edgecast.trainer.bundle import make_spec, read_bundle
from edgecast.trainer.data import load_csv
from edgecast.trainer.evaluation import seasonal_persistence
from edgecast.trainer.windows import Windows, fit_scaler
from edgecast_runtime.contract import CALM_DEGREES, COMPASS_DEGREES, COMPASS_POINTS

HORIZON = 3
LOOK_BACK = 6
COVARIATES = "temp,wd,hour_of_day,day_of_week"
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CHANGPING = DATA / "PRSA_Data_Changping_20130301-20170228.csv"


def synthetic_csv(path, rows: int = 480, seed: int = 0):
    """Hourly PM-like series driven by the hour of day and by wind from the north; the wind
    column holds compass points, calm `cv` and a short gap."""
    rng = np.random.default_rng(seed)
    times = pd.date_range("2024-01-01", periods=rows, freq="h")
    points = np.array(COMPASS_POINTS + ("cv",))
    wind = points[rng.integers(0, len(points), rows)].astype(object)
    wind[50:53] = None
    north = np.isin(wind, ["N", "NNE", "NNW", "NE", "NW"])
    pm = 60 + 25 * np.sin(2 * np.pi * times.hour / 24) - 20 * north + rng.normal(0, 3, rows)
    frame = pd.DataFrame({
        "timestamp": times.strftime("%Y-%m-%d %H:%M:%S"),
        "pm": pm.round(2),
        "temp": (10 + 5 * np.cos(2 * np.pi * times.hour / 24) + rng.normal(0, 1, rows)).round(2),
        "wd": wind,
    })
    frame.to_csv(path, index=False)
    return path


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("forecasting")
    csv = synthetic_csv(folder / "sensor.csv")
    invoke(
        "train", csv, "--target", "pm", "--features", COVARIATES, "--look-back", LOOK_BACK, "--horizon", HORIZON,
        "--units", 8, "--epochs", 3, "--batch-size", 32, "--name", "cov", "--models-dir", folder / "models",
        "--target-units", "µg/m³",
    )
    bundle = folder / "models" / "cov"
    invoke("export", bundle)
    return bundle, csv


def test_compass_and_calm_become_degrees_and_sin_cos():
    degrees = features.compass_degrees(pd.Series(["N", "E", "SSW", "cv", None, "NNW"]))
    assert degrees.iloc[:4].tolist() == [0.0, 90.0, 202.5, CALM_DEGREES]
    assert math.isnan(degrees.iloc[4]) and degrees.iloc[5] == 337.5
    encoded = features.encode(np.array([[0.0], [90.0], [-1.0]]), [features.direction("wd")])
    np.testing.assert_allclose(encoded, [[0, 1], [1, 0], [0, 0]], atol=1e-12)
    assert features.compass_degrees(pd.Series(["N", "up"])) is None  # not a wind column: stays an error


def test_loader_derives_calendar_and_holds_wind_over_short_gaps(tmp_path):
    series = load_csv(synthetic_csv(tmp_path / "s.csv"), "pm", COVARIATES.split(","))
    assert series.features == ["pm", "temp", "wd", "hour_of_day", "day_of_week"]
    assert [e.kind for e in series.encodings] == ["numeric", "numeric", "direction", "cyclic", "cyclic"]
    frame = series.frame
    assert frame["wd"].iloc[50:53].eq(frame["wd"].iloc[49]).all()  # held, not interpolated
    assert frame["hour_of_day"].iloc[:3].tolist() == [0, 1, 2]
    assert frame["day_of_week"].iloc[0] == 0  # 2024-01-01 is a Monday


def test_plain_models_keep_schema_1_and_encoded_ones_get_2():
    scaler = fit_scaler(np.array([[0.0, 1.0], [10.0, 3.0]]), "test")
    plain = make_spec("pm", ["pm", "temp"], 4, 2, 3600, [], scaler, 6)
    assert plain.schema_version == 1
    encodings = [features.numeric("pm"), features.direction("wd")]
    scaler3 = fit_scaler(np.zeros((2, 3)) + [[0, -1, -1], [9, 1, 1]], "test")
    encoded = make_spec("pm", ["pm", "wd"], 4, 2, 3600, [], scaler3, 6, encodings=encodings)
    assert encoded.schema_version == 2
    assert encoded.encoded_features == ("pm", "wd_sin", "wd_cos")


def test_seasonal_persistence_repeats_the_day_before():
    target = np.arange(100, dtype=float)
    windows = Windows(np.zeros((2, 30, 1)), np.zeros((2, 3)), np.array([50, 60]))  # targets 48..50, 58..60
    forecast = seasonal_persistence(target, windows, horizon=3, season=24)
    np.testing.assert_array_equal(forecast, [[24, 25, 26], [34, 35, 36]])
    # Horizon beyond a day: steps 25..30 go back two days; rows before the series are NaN.
    long = seasonal_persistence(target, Windows(None, None, np.array([80, 40])), horizon=30, season=24)
    assert (long[0, 0], long[0, 23], long[0, 24], long[0, 29]) == (27, 50, 27, 32)
    assert np.isnan(long[1, 0]) and long[1, 23] == 10


def test_covariate_multistep_export_matches_the_trainers_pipeline(exported):
    bundle_dir, _ = exported
    bundle = read_bundle(bundle_dir)
    assert bundle.spec.horizon == HORIZON and bundle.spec.schema_version == 2
    assert bundle.spec.target_formulation.kind == "change_from_last"
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    parity = manifest["parity"]
    assert parity["passed"]
    kinds = {(c["artifact"], c["windows"]) for c in parity["checks"]}
    assert kinds == {(a, w) for a in ("model.onnx", "model.tflite") for w in ("held-out", "random")}
    assert max(c["max_abs"] for c in parity["checks"]) <= 1e-3


def test_exported_graph_encodes_calm_and_wraps_the_compass(exported):
    """The graph itself, fed raw degrees: 360 is north, any negative is calm, and the
    forecast is a vector of HORIZON values."""
    import onnxruntime as ort

    from edgecast.exporter.parity import reference_forecast

    bundle_dir, _ = exported
    bundle = read_bundle(bundle_dir)
    session = ort.InferenceSession(str(bundle_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    window = np.tile(np.array([60.0, 10.0, 0.0, 12.0, 2.0], np.float32), (2, LOOK_BACK, 1))
    window[1, :, 2] = 360.0
    north, wrapped = session.run(["forecast"], {"window": window})[0]
    np.testing.assert_allclose(north, wrapped, atol=1e-4)
    calm = window[:1].copy()
    calm[0, :, 2] = -1.0
    onnx_calm = session.run(["forecast"], {"window": calm})[0]
    assert onnx_calm.shape == (1, HORIZON)
    np.testing.assert_allclose(onnx_calm, reference_forecast(bundle.load_model(), bundle.spec, calm), atol=1e-3)


def test_evaluate_json_backtest_and_plot_of_the_stated_size(exported, tmp_path):
    from matplotlib.image import imread

    bundle_dir, csv = exported
    plot = tmp_path / "eval.png"
    result = invoke("evaluate", bundle_dir, csv, "--json", "--backtest", 2, "--plot", plot, "--plot-size", "640x480")
    report = json.loads(result.output)
    metrics = report["metrics"]
    for method in ("model", "persistence", "seasonal_persistence", "ridge"):
        assert len(metrics[method]["rmse"]) == HORIZON and len(metrics[method]["mae"]) == HORIZON
    assert metrics["step_hours"] == [1.0, 2.0, 3.0] and report["data"]["same_as_training"]
    assert len(report["backtest"]["results"]) == 2
    assert sum(f["windows"] for f in report["backtest"]["results"]) == metrics["windows"]
    assert imread(plot).shape[:2] == (480, 640)


def test_evaluate_metrics_match_the_trainers_record(exported):
    bundle_dir, csv = exported
    report = json.loads(invoke("evaluate", bundle_dir, csv, "--json").output)
    recorded = read_bundle(bundle_dir).metrics
    np.testing.assert_allclose(report["metrics"]["model"]["rmse"], recorded["model"]["rmse"], rtol=1e-4)
    np.testing.assert_allclose(report["metrics"]["ridge"]["rmse"], recorded["ridge"]["rmse"], rtol=1e-6)


def test_report_names_every_metric_and_embeds_the_plot(exported):
    bundle_dir, _ = exported
    invoke("report", bundle_dir)
    text = (bundle_dir / "report.md").read_text()
    for name in ("RMSE", "MAE", "LSTM model", "persistence", "seasonal persistence", "ridge on the same lags"):
        assert name in text
    for section in ("## Data", "## Features", "## Split", "## Training settings", "## Parity", "## Artifact sizes"):
        assert section in text
    assert "| model.onnx |" in text and "| model.tflite |" in text and "passed" in text
    assert "degrees clockwise from north" in text and "Monday 0" in text
    metrics = read_bundle(bundle_dir).metrics
    assert f"{metrics['ridge']['rmse'][HORIZON - 1]:.3f}" in text
    assert "![" in text and (bundle_dir / "report.png").stat().st_size > 10_000


@pytest.mark.parametrize("horizon", [1, HORIZON])
def test_linear_skip_starts_training_at_the_ridge_forecast(horizon):
    """Before any epoch the LSTM correction is zero, so the network is exactly the ridge fit."""
    from sklearn.linear_model import Ridge

    from edgecast.trainer.model import build_model, start_from_linear

    rng = np.random.default_rng(3)
    inputs = rng.uniform(0, 1, (200, LOOK_BACK, 4)).astype(np.float32)
    targets = (inputs[:, -1, :1] * 2 - inputs[:, 0, 1:2] + rng.normal(0, 0.05, (200, horizon))).astype(np.float32)
    net = build_model(LOOK_BACK, 4, horizon, units=8, learning_rate=1e-3, dropout=0.2, linear_skip=True)
    start_from_linear(net, inputs, targets)
    expected = Ridge(alpha=1.0).fit(inputs.reshape(200, -1), targets).predict(inputs.reshape(200, -1))
    np.testing.assert_allclose(net.predict(inputs, verbose=0), expected.reshape(200, horizon), atol=1e-4)


def test_quadratic_basis_picks_latest_rows_changes_and_means():
    """z = flattened window @ basis: the latest encoded row, 3/6/12-step changes of the
    plain readings only (not of sin/cos columns), and the 6- and 24-step target means."""
    from edgecast.trainer.model import quadratic_basis

    look_back, widths, changing = 24, [1, 1, 2], [True, True, False]  # PM2.5, TEMP, wd (sin, cos)
    window = np.random.default_rng(0).uniform(0, 1, (look_back, 4))
    z = window.reshape(-1) @ quadratic_basis(look_back, widths, changing)
    latest = window[-1]
    changes = [latest[c] - window[-1 - k, c] for k in (3, 6, 12) for c in (0, 1)]
    np.testing.assert_allclose(z, [*latest, *changes, window[-6:, 0].mean(), window[:, 0].mean()])
    short = quadratic_basis(4, [1], [True])  # only what a 4-step look-back holds
    assert short.shape == (4, 2)  # latest value and its 3-step change


def test_quadratic_skip_is_ridge_on_lags_and_clamped_products_in_small_parts():
    """Before any epoch the network is ridge on [lags, products]; each Dense of the map
    reads at most MAX_FAN_IN inputs; off the fitted range the products hold still (clamped)."""
    from sklearn.linear_model import Ridge

    from edgecast.trainer.model import (
        MAX_FAN_IN,
        build_model,
        linear_features,
        quadratic_basis,
        start_from_linear,
        summary_range,
    )

    rng = np.random.default_rng(4)
    inputs = rng.uniform(0, 1, (300, 24, 5)).astype(np.float32)
    targets = (inputs[:, -1, :1] * inputs[:, -1, 1:2] + rng.normal(0, 0.01, (300, 2))).astype(np.float32)
    basis = quadratic_basis(24, [1] * 5, [True] * 5)
    net = build_model(24, 5, 2, units=4, learning_rate=1e-3, linear_skip=True, freeze_linear=True,
                      quadratic=(basis, *summary_range(basis, inputs)))
    start_from_linear(net, inputs, targets)
    parts = [layer for layer in net.layers if layer.name.startswith("linear_")]
    assert len(parts) > 2 and all(layer.get_weights()[0].shape[0] <= MAX_FAN_IN for layer in parts)
    assert all(not layer.trainable for layer in parts)

    lags = inputs.reshape(300, -1).astype(np.float64)
    low, high = summary_range(basis, inputs)
    u = np.clip((lags @ basis - low) / (high - low), 0, 1) - 0.5
    first, second = np.triu_indices(basis.shape[1])
    expected_features = np.concatenate([lags - 0.5, u[:, first] * u[:, second]], axis=1)
    np.testing.assert_allclose(np.sort(linear_features(net, inputs), axis=1), np.sort(expected_features, axis=1), atol=1e-5)
    ridge = Ridge(alpha=1.0).fit(expected_features, targets)
    np.testing.assert_allclose(net.predict(inputs, verbose=0), ridge.predict(expected_features), atol=1e-4)

    far = inputs[:1] + 10.0  # far beyond the fitted range: only the lags still move
    farther = inputs[:1] + 20.0
    def products(x):
        return linear_features(net, x)[:, 24 * 5:]
    np.testing.assert_allclose(products(far), products(farther), atol=1e-5)  # float32 rounding of x + 10, x + 20
    assert np.abs(products(farther)).max() <= 0.25 + 1e-6


def test_linear_map_is_fitted_on_training_and_validation_windows(tmp_path):
    """linear_fit_with_val: the frozen ridge map sees validation windows too (the test
    split never); with it off, training windows only."""
    from sklearn.linear_model import Ridge

    from edgecast.trainer.model import linear_features
    from edgecast.trainer.pipeline import TrainConfig, network_pair, prepare, train

    csv = tmp_path / "hourly.csv"
    hourly_frame(hours=300).to_csv(csv, index=False)
    series = load_csv(csv, "PM2.5", ["TEMP"])
    for with_val in (True, False):
        config = TrainConfig(look_back=LOOK_BACK, horizon=2, units=4, epochs=1, batch_size=32, linear_fit_with_val=with_val)
        bundle = read_bundle(train(series, config, tmp_path / f"val-{with_val}").path)
        net, data = bundle.load_model(), prepare(series, config)
        pairs = [network_pair(data.train, data.scaler, bundle.spec)]
        if with_val:
            pairs.append(network_pair(data.val, data.scaler, bundle.spec))
        x, y = (np.concatenate(part) for part in zip(*pairs))
        ridge = Ridge(alpha=1.0).fit(linear_features(net, x), y)
        kernel = np.concatenate([net.get_layer(f"linear_{i}").get_weights()[0]
                                 for i in range(len([l for l in net.layers if l.name.startswith("linear_")]))])
        np.testing.assert_allclose(kernel, ridge.coef_.T, atol=2e-4)


@pytest.mark.skipif(not CHANGPING.is_file(), reason=f"real data absent: {CHANGPING} (see ../shared/data/README.md)")
def test_real_station_wind_column_reads_as_directions():
    series = load_csv(CHANGPING, "PM2.5", ["WSPM", "wd", "hour_of_day"])
    assert [e.kind for e in series.encodings] == ["numeric", "numeric", "direction", "cyclic"]
    degrees = series.frame["wd"].dropna()
    assert set(degrees.unique()) <= set(COMPASS_DEGREES.values())
    assert series.frame["wd"].isna().sum() < 140  # README: 140 missing; short gaps are held


def test_plot_stretch_starts_after_gaps_and_aligns_leads():
    from edgecast.plots import first_unbroken_start, forecast_stretch

    ends = np.array([10, 11, 15, 16, 17, 18])  # a gap between 11 and 15
    assert first_unbroken_start(ends, 4) == 2 and first_unbroken_start(ends, 9) == 0
    y = np.stack([ends - 1, ends], axis=1).astype(float)  # horizon 2: targets are rows end-1, end
    stretch = forecast_stretch(ends, y, y + 0.5, start=2, length=5, time_of_row=lambda row: row)
    assert stretch.times == [14, 15, 16, 17, 18]
    np.testing.assert_array_equal(stretch.actual, [14, 15, 16, 17, 18])
    # Row r at lead h comes from the window whose last input is row r - h (its end is r - h + 2);
    # no window ends at 14 or 19, so row 14 at lead 2 and row 18 at lead 1 have no forecast.
    np.testing.assert_array_equal(stretch.forecasts[1], [14.5, 15.5, 16.5, 17.5, np.nan])
    np.testing.assert_array_equal(stretch.forecasts[2], [np.nan, 15.5, 16.5, 17.5, 18.5])


@pytest.mark.parametrize("suffix, opening", [(".svg", b"<?xml"), (".pdf", b"%PDF-"), (".png", b"\x89PNG")])
def test_evaluate_plot_format_follows_the_suffix(exported, tmp_path, suffix, opening):
    bundle_dir, csv = exported
    plot = tmp_path / f"eval{suffix}"
    invoke("evaluate", bundle_dir, csv, "--plot", plot, "--plot-size", "400x300")
    assert plot.read_bytes().startswith(opening)


def test_evaluate_refuses_a_plot_suffix_it_cannot_write(exported, tmp_path):
    from conftest import run_cli

    bundle_dir, csv = exported
    result = run_cli("evaluate", bundle_dir, csv, "--plot", tmp_path / "eval.jpg")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "eval.jpg" in lines[0] and "'.jpg'" in lines[0] and ".png, .svg or .pdf" in lines[0]
    assert not (tmp_path / "eval.jpg").exists()


@pytest.mark.parametrize("columns", [None, "80"])
def test_tables_keep_every_digit_when_stdout_is_not_a_terminal(exported, columns):
    """Piped output (COLUMNS unset or 80) is not cut to the terminal's width: no cell
    ends in an ellipsis and every RMSE and MAE is printed whole."""
    import os
    import subprocess

    from conftest import EDGECAST

    bundle_dir, csv = exported
    env = {key: value for key, value in os.environ.items() if key != "COLUMNS"}
    env.update({"NO_COLOR": "1", **({"COLUMNS": columns} if columns else {})})
    result = subprocess.run([str(EDGECAST), "evaluate", str(bundle_dir), str(csv)], capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "…" not in result.stdout, result.stdout
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.startswith("│ +")}
    metrics = json.loads(invoke("evaluate", bundle_dir, csv, "--json").output)["metrics"]
    assert max(len(line) for line in rows.values()) > 80  # nine columns of numbers: wider than 80
    for i, step in enumerate(metrics["horizon_steps"]):
        cells = [cell.strip() for cell in rows[f"+{step}"].split("│")[2:-1]]
        expected = [f"{metrics[m][measure][i]:.3f}" for m in ("model", "persistence", "seasonal_persistence", "ridge")
                    for measure in ("rmse", "mae")]
        assert cells == expected
