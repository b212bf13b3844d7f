"""From a loaded series to a written bundle: split, scale, train, evaluate."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import baselines
from .bundle import make_spec, write_bundle
from .data import Series
from .errors import DataError
from .windows import scale_target, scale_windows, split_windows, unscale_target

CALIBRATION_SAMPLE = 512  # training windows kept for int8 calibration


@dataclass
class TrainConfig:
    look_back: int = 24
    horizon: int = 1
    units: int = 32
    epochs: int = 30
    batch_size: int = 64
    patience: int = 5
    learning_rate: float = 1e-3
    seed: int = 0
    max_gap: int = 6
    split: tuple[float, float, float] = field(default=(0.7, 0.15, 0.15))

    def check(self) -> None:
        for name in ("look_back", "horizon", "units", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise DataError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.max_gap < 0:
            raise DataError(f"--max-gap must be 0 or more, got {self.max_gap}")


@dataclass
class TrainResult:
    path: Path
    metrics: dict
    training: dict


def train(series: Series, config: TrainConfig, out_dir: Path, on_epoch=None) -> TrainResult:
    from . import model as keras_model  # TensorFlow loads only when training starts

    config.check()
    data = split_windows(series.values(), config.look_back, config.horizon, config.split, series.source)
    scaler = data.scaler
    keras_model.seed_everything(config.seed)
    net = keras_model.build_model(
        config.look_back, len(series.features), config.horizon, config.units, config.learning_rate
    )
    started = time.perf_counter()
    history = keras_model.fit(
        net,
        (scale_windows(scaler, data.train.x), scale_target(scaler, data.train.y)),
        (scale_windows(scaler, data.val.x), scale_target(scaler, data.val.y)),
        config.epochs,
        config.batch_size,
        config.patience,
        on_epoch,
    )
    seconds = time.perf_counter() - started
    metrics = evaluate_split(net, scaler, data, config.horizon)
    spec = make_spec(
        series.target, series.features, config.look_back, config.horizon,
        series.interval_seconds, series.time_columns, scaler, config.max_gap,
    )
    training = _training_record(series, config, data, history, seconds)
    windows = _kept_windows(data, config.seed)
    write_bundle(out_dir, net, spec, metrics, training, windows)
    return TrainResult(Path(out_dir), metrics, training)


def evaluate_split(net, scaler, data, horizon: int) -> dict:
    """Test-split errors in raw units for the model and both baselines."""
    from .model import predict_scaled

    test_scaled = scale_windows(scaler, data.test.x)
    model_pred = unscale_target(scaler, predict_scaled(net, test_scaled))
    ridge = baselines.fit_ridge(scale_windows(scaler, data.train.x), data.train.y)
    return {
        "split": "test",
        "windows": int(len(data.test)),
        "horizon_steps": list(range(1, horizon + 1)),
        "units": "raw target units",
        "model": baselines.rmse_mae(data.test.y, model_pred),
        "persistence": baselines.rmse_mae(data.test.y, baselines.persistence(data.test.x, horizon)),
        "ridge": baselines.rmse_mae(data.test.y, baselines.ridge_predict(ridge, test_scaled)),
    }


def _training_record(series: Series, config: TrainConfig, data, history: dict, seconds: float) -> dict:
    index = series.frame.index
    first_val, first_test = data.boundaries
    return {
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "data": {
            "source": series.source,
            "sha256": series.sha256,
            "rows_read": series.rows_read,
            "rows_regular": len(series.frame),
            "values_interpolated": series.values_interpolated,
            "values_missing": series.values_missing,
            "interval_seconds": series.interval_seconds,
        },
        "split": {
            "fractions": list(config.split),
            "first_val_row": first_val,
            "first_test_row": first_test,
            "first_val_time": str(index[first_val]),
            "first_test_time": str(index[first_test]),
            "windows": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
        },
        "config": asdict(config),
        "history": history,
        "train_seconds": round(seconds, 3),
    }


def _kept_windows(data, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(data.train), size=min(CALIBRATION_SAMPLE, len(data.train)), replace=False)
    return {
        "test_x": data.test.x,
        "test_y": data.test.y,
        "calibration_x": data.train.x[np.sort(sample)],
    }
