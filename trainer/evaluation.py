"""Test-split errors of the model and the forecasts it must beat, and rolling-origin backtests.

Baselines, all in raw target units:
  persistence           every step equals the last observed value
  seasonal_persistence  each step equals the value one season (one day) earlier
  ridge                 ridge regression on the same encoded, scaled lags the model reads
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import baselines
from .errors import DataError
from .features import masked_indices
from .forecast import predict_raw
from .neighbours import all_silent
from .reports import Backtest, DataRecord, Evaluation, Metrics
from .settings import METHODS
from .windows import SplitData, Windows, model_inputs

if TYPE_CHECKING:
    import keras
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import MinMaxScaler

    from edgecast_runtime.spec import Spec

    from .bundle import Bundle
    from .data import ReadOptions, Series

SECONDS_PER_DAY = 86400
# An exported model's forecasts: raw-unit windows [n, look_back, features] -> [n, horizon].
# An exported file's outputs for raw windows: {"forecast": [n, horizon]} and, from a schema-4
# file, its own "quantiles" and "exceedance".
ArtifactOutputs = Callable[[np.ndarray], dict[str, np.ndarray]]


def season_steps(interval_seconds: float | None) -> int | None:
    """Steps per day (24 at hourly data); None when the interval is unknown or does not divide a day."""
    if not interval_seconds or SECONDS_PER_DAY % interval_seconds:
        return None
    return int(SECONDS_PER_DAY // interval_seconds)


def step_hours(interval_seconds: float | None, horizon: int) -> list[float] | None:
    if not interval_seconds:
        return None
    return [round(step * interval_seconds / 3600, 6) for step in range(1, horizon + 1)]


def seasonal_persistence(target: np.ndarray, windows: Windows, horizon: int, season: int) -> np.ndarray:
    """Step h repeats the value `season` steps before its target time (whole seasons back
    when h > season); NaN where that row lies before the series or in a gap."""
    origin = windows.end - horizon  # row of each window's last input
    steps = np.arange(1, horizon + 1)
    back = season * np.ceil(steps / season).astype(int)
    rows = origin[:, None] + steps[None, :] - back[None, :]
    valid = rows >= 0
    forecast = np.full(rows.shape, np.nan)
    forecast[valid] = target[rows[valid]]
    return forecast


def forecasts(
    model: keras.Model, spec: Spec, scaler: MinMaxScaler, target: np.ndarray, windows: Windows, ridge: Ridge
) -> dict:
    """Every method's forecasts for `windows`, raw units `[n, horizon]`."""
    horizon = spec.horizon
    predicted = {
        "model": predict_raw(model, spec, windows.x, scaler),
        **model_variants(model, spec, scaler, windows),
        "persistence": baselines.persistence(windows.x, horizon),
        "ridge": baselines.ridge_predict(ridge, model_inputs(scaler, spec.feature_encodings, windows.x)),
    }
    season = season_steps(spec.interval_seconds)
    if season is not None:
        predicted["seasonal_persistence"] = seasonal_persistence(target, windows, horizon, season)
    return predicted


def model_variants(model: keras.Model, spec: Spec, scaler: MinMaxScaler, windows: Windows) -> dict[str, np.ndarray]:
    """The model with every neighbour missing, and without its clip, where these apply."""
    variants = {}
    neighbours = masked_indices(spec.feature_encodings)
    if neighbours:
        variants["model_neighbours_missing"] = predict_raw(model, spec, all_silent(windows.x, neighbours), scaler)
    if spec.target_min is not None:
        variants["model_unclipped"] = predict_raw(model, spec, windows.x, scaler, clip=False)
    return variants


def fit_ridge(spec: Spec, scaler: MinMaxScaler, windows: Windows) -> Ridge:
    return baselines.fit_ridge(model_inputs(scaler, spec.feature_encodings, windows.x), windows.y)


def score(spec: Spec, windows: Windows, predicted: dict) -> dict:
    """RMSE and MAE per step, on the windows every method can forecast (seasonal
    persistence needs the day before, which the first windows of a series lack)."""
    usable = np.ones(len(windows), bool)
    for forecast in predicted.values():
        usable &= np.isfinite(forecast).all(axis=1)
    if not usable.any():
        raise DataError("no test window that every method can forecast")
    horizon = spec.horizon
    metrics = {
        "split": "test",
        "windows": int(usable.sum()),
        "windows_dropped": int((~usable).sum()),
        "horizon_steps": list(range(1, horizon + 1)),
        "step_hours": step_hours(spec.interval_seconds, horizon),
        "units": spec.target_units or "raw target units",
    }
    for method in METHODS:
        if method in predicted:
            metrics[method] = baselines.rmse_mae(windows.y[usable], predicted[method][usable])
    return metrics


def evaluate_split(model: keras.Model, spec: Spec, scaler: MinMaxScaler, split: SplitData, target: np.ndarray,
                   ridge: Ridge | None = None) -> dict:
    """Test-split metrics of the model and every baseline; ridge is fitted on the training split."""
    ridge = ridge or fit_ridge(spec, scaler, split.train)
    return score(spec, split.test, forecasts(model, spec, scaler, target, split.test, ridge))


def backtest(
    model: keras.Model, spec: Spec, scaler: MinMaxScaler, split: SplitData, target: np.ndarray, folds: int
) -> dict:
    """`folds` consecutive blocks of the test split, each a forecast origin.

    Ridge is refitted on every window that ends before its block (an expanding window);
    the LSTM is trained once and is not refitted, since that costs minutes per origin,
    so the backtest shows how steady its lead is over time, not how it would retrain.
    """
    if folds < 1:
        raise DataError(f"backtest must be at least 1, got {folds}", settings=("backtest",))
    everything = _concatenate([split.train, split.val, split.test])
    blocks = np.array_split(np.arange(len(split.test)), folds)
    if min(len(block) for block in blocks) == 0:
        raise DataError(f"backtest {folds}: the test split has only {len(split.test)} windows", settings=("backtest",))
    results = []
    for block in blocks:
        windows = split.test.take(block)
        origin_row = int(windows.end[0]) - spec.horizon + 1  # first target row of the block
        ridge = fit_ridge(spec, scaler, everything.take(everything.end < origin_row))
        metrics = score(spec, windows, forecasts(model, spec, scaler, target, windows, ridge))
        results.append({"first_target_row": origin_row, **metrics})
    return {"folds": folds, "ridge": "refitted on all windows before each origin", "results": results,
            "mean": _mean_over_folds(results)}


def _concatenate(parts: list[Windows]) -> Windows:
    return Windows(
        np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]), np.concatenate([p.end for p in parts])
    )


def _with_neighbours(bundle: Bundle, series: Series, options: ReadOptions, files: list[Path] | None) -> Series:
    """The series with the neighbours' columns the model reads, in its order."""
    from .neighbours import add_neighbours
    from .stations import station_of

    spec = bundle.spec
    recorded = bundle.training.get("neighbours", {})
    files = files or [f"{station}={entry['source']}" for station, entry in recorded.get("sources", {}).items()]
    wanted = {neighbour.station for neighbour in spec.neighbours}
    files = [path for path in files if station_of(path)[0] in wanted]
    found = {station_of(path)[0] for path in files}
    if found != wanted:
        raise DataError(f"{bundle.path}: the model reads neighbours {', '.join(sorted(wanted))}; "
                        f"missing file(s) for {', '.join(sorted(wanted - found))} (pass them as neighbours)",
                        settings=("neighbours",))
    readings = recorded.get("features") or list(spec.neighbours[0].readings)
    series, _ = add_neighbours(series, files, readings, options, spec.max_gap,
                               tuple(bundle.training["config"]["split"]))
    if series.features != list(spec.features):
        raise DataError(f"{bundle.path}: the neighbours give columns {series.features}, the model reads "
                        f"{list(spec.features)}")
    return series


def _mean_over_folds(results: list[dict]) -> dict:
    methods = [m for m in METHODS if m in results[0]]
    return {
        method: {
            measure: np.mean([r[method][measure] for r in results], axis=0).round(6).tolist()
            for measure in ("rmse", "mae")
        }
        for method in methods
    }


def evaluate_bundle_on_csv(bundle: Bundle, csv_path: Path, folds: int = 0,
                           artifact_outputs: ArtifactOutputs | None = None,
                           neighbours: list[Path] | None = None) -> Evaluation:
    """Re-read a CSV the way the bundle was trained, split it with the training fractions,
    and score the test split with the bundle's own scaler (the one in its graph).

    With `artifact_outputs` (the outputs of an exported model file, e.g. the bundle's
    model.onnx, run as a hub runs it; the caller supplies it, as the trainer never
    imports export), the model's forecasts, quantiles and probabilities are that file's;
    the backtest keeps the Keras model. Gives the metrics, the backtest (when `folds`), the test windows and the model's
    forecasts for them, and the timestamp of every row (None without timestamps).
    """
    from .data import load_csv
    from .windows import split_windows

    spec = bundle.spec
    series = _load_like_training(bundle, csv_path, load_csv, neighbours)
    config = bundle.training["config"]
    split = split_windows(
        series.values(), spec.look_back, spec.horizon, tuple(config["split"]), series.source, series.encodings
    )
    model, scaler, target = bundle.load_model(), bundle.scaler(), series.values()[:, 0]
    ridge = fit_ridge(spec, scaler, split.train)
    predicted = forecasts(model, spec, scaler, target, split.test, ridge)
    file_outputs = artifact_outputs(split.test.x) if artifact_outputs is not None else {}
    if file_outputs:
        predicted["model"] = file_outputs["forecast"]
    training_target = target[: split.boundaries[0]]
    model_quantiles = _model_quantiles(bundle, predicted["model"], file_outputs)
    if model_quantiles is not None:  # computed once: the scores and the fan share them
        file_outputs = {**file_outputs, "quantiles": model_quantiles}
    return Evaluation(
        data=DataRecord(series.source, series.sha256, series.sha256 == bundle.training["data"]["sha256"]),
        metrics=Metrics.from_dict(score(spec, split.test, predicted)),
        backtest=Backtest.from_dict(backtest(model, spec, scaler, split, target, folds)) if folds else None,
        test_end=split.test.end,
        test_y=split.test.y,
        model_forecast=predicted["model"],
        times=list(series.frame.index) if series.interval_seconds else None,
        intervals=probabilistic_scores(bundle, scaler, split, predicted, ridge, training_target, file_outputs),
        model_quantiles=model_quantiles,
        test_history=split.test.x[:, :, 0],
    )


def _model_quantiles(bundle: Bundle, forecast: np.ndarray, file_outputs: dict) -> np.ndarray | None:
    """A schema-4 model's quantiles of the test windows: the exported file's own when it was
    scored, else its calibration's of `forecast`; None for an older model."""
    from .intervals import quantiles, read_calibration

    if "quantiles" in file_outputs:
        return np.asarray(file_outputs["quantiles"], np.float64)
    calibration = read_calibration(bundle.path) if bundle.spec.probabilistic is not None else None
    if calibration is None or not bundle.spec.probabilistic.quantiles:
        return None
    return quantiles(calibration, forecast, bundle.spec.target_min).astype(np.float64)


def probabilistic_scores(bundle: Bundle, scaler: MinMaxScaler, split: SplitData, predicted: dict, ridge: Ridge,
                         training_target: np.ndarray, file_outputs: dict | None = None) -> dict | None:
    """A schema-4 model's interval and alert scores on the test split (trainer/intervals.py
    `interval_metrics`; an exported file's own quantiles and probabilities in `file_outputs`),
    beside persistence's and ridge's conformalized the same way on this file's validation
    split; None for an older model. The model keeps its own calibration."""
    from .intervals import interval_metrics, read_calibration

    spec, calibration = bundle.spec, read_calibration(bundle.path)
    if spec.probabilistic is None or calibration is None:
        return None
    return {"model": interval_metrics(calibration, spec, predicted["model"], split.test, training_target, file_outputs),
            **baseline_intervals(spec, scaler, split, ridge, training_target)}


def baseline_intervals(spec: Spec, scaler: MinMaxScaler, split: SplitData, ridge: Ridge,
                       training_target: np.ndarray) -> dict:
    """Persistence's and ridge's quantiles and probabilities, conformalized on the validation
    split as a model's are, scored on the test split: {method: interval_metrics}; empty when
    the validation split is too short to calibrate on."""
    from .intervals import MIN_CALIBRATION_WINDOWS, calibrate, interval_metrics

    if len(split.val) < MIN_CALIBRATION_WINDOWS:
        return {}
    methods = {"persistence": lambda windows: baselines.persistence(windows.x, spec.horizon),
               "ridge": lambda windows: baselines.ridge_predict(
                   ridge, model_inputs(scaler, spec.feature_encodings, windows.x))}
    scores = {}
    for method, forecast in methods.items():
        own = calibrate(forecast(split.val), split.val.y, spec.probabilistic.quantiles, spec.target_min)
        scores[method] = interval_metrics(own, spec, forecast(split.test), split.test, training_target)
    return scores


def _load_like_training(bundle: Bundle, csv_path: Path, load_csv: Callable[..., Series],
                        neighbours: list[Path] | None = None) -> Series:
    from .data import ReadOptions

    spec = bundle.spec
    wanted = spec.kinds
    time_format = spec.times
    ranges = spec.valid_ranges or {}
    options = ReadOptions(
        time_column=",".join(spec.time_columns or []) or None, time_unit=time_format.unit,
        time_format=time_format.format, dayfirst=bool(time_format.dayfirst), clock=spec.clock,
        # the training ranges exactly: a default the training run removed stays removed
        valid_ranges={name: (ranges[name].low, ranges[name].high) if name in ranges else (None, None)
                      for name, kind in zip(spec.features, wanted) if kind not in ("cyclic", "masked")},
    )
    own = [name for name, kind in zip(spec.features, wanted) if kind != "masked"]
    series = load_csv(csv_path, spec.target, own[1:], max_gap=spec.max_gap, options=options)
    if spec.neighbours:
        series = _with_neighbours(bundle, series, options, neighbours)
    found = [e.kind for e in series.encodings]
    for name, want, got in zip(spec.features, wanted, found):
        if want != got:
            raise DataError(f"{csv_path}: column '{name}' reads as {got}, but the model was trained on it as {want}")
    return series
