"""From a loaded series to a written bundle: split, scale, train, evaluate."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgecast_runtime.contract import MASKED, NUMERIC, PROBABILISTIC_SCHEMA_VERSION
from edgecast_runtime.spec import Formulation, Spec

from .bundle import make_spec, write_bundle
from .data import Series
from .evaluation import baseline_intervals, evaluate_split, fit_ridge
from .features import encoded_columns, masked_indices
from .forecast import predict_raw
from .intervals import Calibration, calibrate, interval_metrics, probabilistic_part
from .neighbours import mask_at_random
from .settings import CHANGE, LEVEL, TrainConfig  # noqa: F401  (TrainConfig is part of this module's API)
from .windows import (
    SplitData,
    Windows,
    change_formulation,
    input_statistics,
    model_inputs,
    model_targets,
    split_windows,
)

if TYPE_CHECKING:
    from types import ModuleType

    import keras
    from sklearn.preprocessing import MinMaxScaler

CALIBRATION_SAMPLE = 512  # training windows kept for int8 calibration


@dataclass
class TrainResult:
    path: Path
    metrics: dict
    training: dict


def prepare(series: Series, config: TrainConfig) -> SplitData:
    """Windows and split, checked before TensorFlow loads: bad settings fail in a blink."""
    config.check()
    probabilistic_part(config.interval, tuple(config.quantiles), tuple(config.alerts), series.target)  # fail fast
    return split_windows(
        series.values(), config.look_back, config.horizon, config.split, series.source, series.encodings
    )


def train(
    series: Series,
    config: TrainConfig,
    out_dir: Path,
    on_epoch: Callable[[int, dict], object] | None = None,
    data: SplitData | None = None,
) -> TrainResult:
    """`data` is what prepare() returned for the same series and config, if the caller has it."""
    from . import model as keras_model  # TensorFlow loads only when training starts

    data = data if data is not None else prepare(series, config)
    spec = station_spec(series, config, data)
    started = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    silenced = masked_indices(series.encodings) if config.neighbour_masking else []
    train_pair = network_pair(_silence(data.train, silenced, rng), data.scaler, spec)
    val_pair = network_pair(_silence(data.val, silenced, rng), data.scaler, spec)
    fallback = None
    if config.neighbour_fallback and masked_indices(series.encodings):
        # The same network on the station's own columns (the first ones, unmasked), trained
        # first, from the same seed: the model it would be without neighbours.
        own_encodings = tuple(e for e in spec.encodings if e.kind != MASKED)
        own_columns = len(encoded_columns(own_encodings))
        own_pairs = [(x[..., :own_columns], y) for x, y in (train_pair, val_pair)]
        own_net, own_history = _fit_network(keras_model, config, replace(spec, encodings=own_encodings),
                                            *own_pairs, None, "own_history")
        fallback = (own_net, own_columns, own_history)
    net, history = _fit_network(keras_model, config, spec, train_pair, val_pair, on_epoch)
    if fallback is not None:
        net = keras_model.with_fallback(net, fallback[0], fallback[1], _presence_columns(spec, data.scaler))
    seconds = time.perf_counter() - started
    extra = {"fallback_history": fallback[2]} if fallback is not None else {}
    return finish_bundle(net, series, config, data, spec, history, seconds, out_dir, extra)


def station_spec(series: Series, config: TrainConfig, data: SplitData) -> Spec:
    """The preprocessing spec of a station's model: its scaler, formulation, floor and outputs."""
    formulation = change_formulation(data.train) if config.formulation == CHANGE else Formulation(LEVEL)
    spec = make_spec(
        series.target, series.features, config.look_back, config.horizon,
        series.interval_seconds, series.time_columns, data.scaler, config.max_gap,
        encodings=series.encodings, formulation=formulation, target_units=config.target_units,
        clock=series.clock, valid_ranges=series.valid_ranges, time_format=series.time_format,
        target_min=target_floor(config, series.values()[: data.boundaries[0], 0]),
    )
    return with_probabilistic(spec, config, series.target)


def with_probabilistic(spec: Spec, config: TrainConfig, target: str) -> Spec:
    """Schema 4 when the config asks for intervals, quantiles or alerts."""
    probabilistic = probabilistic_part(config.interval, tuple(config.quantiles), tuple(config.alerts), target)
    if probabilistic is None:
        return spec
    return replace(spec, schema_version=PROBABILISTIC_SCHEMA_VERSION, probabilistic=probabilistic)


def finish_bundle(net: keras.Model, series: Series, config: TrainConfig, data: SplitData, spec: Spec, history: dict,
                  seconds: float, out_dir: Path, extra: dict | None = None,
                  calibration: Calibration | None = None) -> TrainResult:
    """Evaluate a trained network on the test split, conformalize it on validation (schema 4;
    `calibration`: one given instead) and write the bundle; `extra` goes into training.json."""
    values = series.values()
    ridge = fit_ridge(spec, data.scaler, data.train)  # the baseline's, for the metrics and the intervals alike
    metrics = evaluate_split(net, spec, data.scaler, data, values[:, 0], ridge)
    if spec.probabilistic is not None:  # conformalized on validation, scored on the unseen test split
        calibration = calibration or calibrate(predict_raw(net, spec, data.val.x, data.scaler), data.val.y,
                                               spec.probabilistic.quantiles, spec.target_min)
        metrics["intervals"] = interval_metrics(calibration, spec, predict_raw(net, spec, data.test.x, data.scaler),
                                                data.test, values[: data.boundaries[0], 0])
        metrics["interval_baselines"] = baseline_intervals(spec, data.scaler, data, ridge, values[: data.boundaries[0], 0])
    training = {**training_record(series, config, data, history, seconds), **(extra or {})}
    write_bundle(out_dir, net, spec, metrics, training, kept_windows(data, config.seed), calibration)
    return TrainResult(Path(out_dir), metrics, training)


def _fit_network(keras_model: ModuleType, config: TrainConfig, spec: Spec, train_pair: tuple[np.ndarray, np.ndarray],
                 val_pair: tuple[np.ndarray, np.ndarray], on_epoch: Callable[[int, dict], object] | None,
                 name: str = "edgecast_lstm") -> tuple[keras.Model, dict]:
    """Build (from the seed), start from ridge and train one network; (model, history)."""
    fit_on = [train_pair, val_pair] if config.linear_fit_with_val and len(val_pair[0]) else [train_pair]
    linear_fit = [np.concatenate(part) for part in zip(*fit_on)]  # what the frozen map is fitted on
    keras_model.seed_everything(config.seed)
    net = keras_model.build_model(
        config.look_back, train_pair[0].shape[-1], config.horizon, config.units, config.learning_rate,
        layers=config.layers, dropout=config.dropout, linear_skip=config.linear_skip,
        input_stats=keras_model.standardising_stats(train_pair[0]) if config.standardise else None,
        freeze_linear=config.linear_skip and config.freeze_linear,
        quadratic=quadratic_terms(config, spec, linear_fit[0]) if config.linear_skip and config.quadratic_skip else None,
        name=name,
    )
    if config.linear_skip:
        keras_model.start_from_linear(net, *linear_fit)
    history = keras_model.fit(net, train_pair, val_pair, config.epochs, config.batch_size, config.patience, on_epoch)
    return net, history


def _presence_columns(spec: Spec, scaler: MinMaxScaler) -> list[tuple[int, float, float]]:
    """(encoded column, scale, min) of each neighbour's presence column."""
    columns = spec.encoded_features
    return [(columns.index(e.columns[1]), float(scaler.scale_[columns.index(e.columns[1])]),
             float(scaler.min_[columns.index(e.columns[1])]))
            for e in spec.encodings if e.kind == MASKED]


def target_floor(config: TrainConfig, train_target: np.ndarray) -> float | None:
    """The lowest forecast: the configured one, else 0 when no training target is negative."""
    if not config.clip_target:
        return None
    if config.target_min is not None:
        return float(config.target_min)
    return 0.0 if np.nanmin(train_target) >= 0 else None


def _silence(windows: Windows, columns: list[int], rng: np.random.Generator) -> Windows:
    """Training windows with neighbours silenced at random, so the model learns to do without."""
    return Windows(mask_at_random(windows.x, columns, rng), windows.y, windows.end) if columns else windows


def quadratic_terms(config: TrainConfig, spec: Spec, fit_inputs: np.ndarray) -> tuple:
    """(basis, low, high) of the linear map's quadratic terms, ranged on the fitted windows."""
    from .model import quadratic_basis, summary_range

    encodings = spec.encodings
    basis = quadratic_basis(config.look_back, [len(e.columns) for e in encodings],
                            [e.kind == NUMERIC for e in encodings])
    return (basis, *summary_range(basis, fit_inputs))


def network_pair(windows: Windows, scaler: MinMaxScaler, spec: Spec) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) as the network sees them."""
    return (
        model_inputs(scaler, spec.feature_encodings, windows.x),
        model_targets(scaler, spec.formulation, windows.x, windows.y),
    )


def training_record(series: Series, config: TrainConfig, data: SplitData, history: dict, seconds: float) -> dict:
    index = series.frame.index
    first_val, first_test = data.boundaries
    return {
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "data": {
            "source": series.source,
            "sha256": series.sha256,
            **({"files": series.files} if len(series.files) > 1 else {}),  # joined in time order
            "rows_read": series.rows_read,
            "rows_regular": len(series.frame),
            "values_interpolated": series.values_interpolated,
            "values_missing": series.values_missing,
            "interval_seconds": series.interval_seconds,
            "time_columns": series.time_columns,
            "clock": series.clock,
            "valid_ranges": series.valid_ranges,
            "values_invalid": series.invalid,  # {column: {reason: count}} made missing before training
            "notices": series.notices,
        },
        **({"neighbours": series.neighbours} if series.neighbours else {}),
        "split": {
            "fractions": list(config.split),
            "first_val_row": first_val,
            "first_test_row": first_test,
            "first_val_time": str(index[first_val]),
            "first_test_time": str(index[first_test]),
            "windows": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
        },
        "config": asdict(config),
        "input_statistics": input_statistics(series.values()[:first_val], series.encodings),
        "history": history,
        "train_seconds": round(seconds, 3),
    }


def kept_windows(data: SplitData, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(data.train), size=min(CALIBRATION_SAMPLE, len(data.train)), replace=False)
    return {
        "test_x": data.test.x,
        "test_y": data.test.y,
        "test_end": data.test.end,
        "calibration_x": data.train.x[np.sort(sample)],
    }
