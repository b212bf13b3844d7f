"""Windowing, the chronological split and the training-only scaler."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from sklearn.preprocessing import MinMaxScaler

from edgecast_runtime.spec import Encoding, Formulation

from .errors import DataError
from .features import encode, masked_indices
from .settings import CHANGE

SPLITS = ("train", "val", "test")


@dataclass
class Windows:
    """Raw-unit windows `x [n, look_back, n_features]`, targets `y [n, horizon]`.

    `end` is the row index of each window's last target: it decides the split.
    """

    x: np.ndarray
    y: np.ndarray
    end: np.ndarray

    def __len__(self) -> int:
        return len(self.x)

    def take(self, mask: np.ndarray) -> "Windows":
        return Windows(self.x[mask], self.y[mask], self.end[mask])


@dataclass
class SplitData:
    train: Windows
    val: Windows
    test: Windows
    boundaries: tuple[int, int]  # first val row, first test row
    scaler: MinMaxScaler


def make_windows(values: np.ndarray, look_back: int, horizon: int, may_be_missing: list[int] = ()) -> Windows:
    """Every window whose inputs and targets are all finite (so none crosses a long gap),
    except the `may_be_missing` columns (neighbours' readings, NaN when absent).

    Column 0 of `values` is the target.
    """
    span = look_back + horizon
    n_features = values.shape[1]
    if len(values) < span:
        empty = np.empty((0, look_back, n_features), np.float32)
        return Windows(empty, np.empty((0, horizon), np.float32), np.empty(0, np.int64))
    spans = sliding_window_view(values, span, axis=0).transpose(0, 2, 1)  # [n, span, F]
    x = spans[:, :look_back, :]
    y = spans[:, look_back:, 0]
    required = np.setdiff1d(np.arange(n_features), np.asarray(may_be_missing, int))
    finite = np.isfinite(x[:, :, required]).all(axis=(1, 2)) & np.isfinite(y).all(axis=1)
    end = np.arange(len(spans)) + span - 1
    return Windows(x[finite].astype(np.float32), y[finite].astype(np.float32), end[finite])


def split_rows(n_rows: int, fractions: tuple[float, float, float]) -> tuple[int, int]:
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise DataError(f"split fractions must be three positive numbers summing to 1, got {fractions}")
    first_val = int(round(n_rows * fractions[0]))
    first_test = int(round(n_rows * (fractions[0] + fractions[1])))
    return first_val, first_test


def split_windows(
    values: np.ndarray,
    look_back: int,
    horizon: int,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    source: str = "data",
    encodings: Sequence[Encoding] | None = None,
) -> SplitData:
    """Chronological split by each window's last target row; scaler fitted on train rows only.

    Validation and test windows may read inputs from the rows before their split (a
    forecaster always has the recent past), but no target of theirs is ever seen in
    training, and the scaler never sees a validation or test row.
    """
    first_val, first_test = split_rows(len(values), fractions)
    windows = make_windows(values, look_back, horizon, masked_indices(encodings) if encodings else ())
    parts = {
        "train": windows.take(windows.end < first_val),
        "val": windows.take((windows.end >= first_val) & (windows.end < first_test)),
        "test": windows.take(windows.end >= first_test),
    }
    empty = [name for name in SPLITS if len(parts[name]) == 0]
    if empty:
        need = int(np.ceil((look_back + horizon) / min(fractions))) + 1
        raise DataError(
            f"{source}: too few usable rows ({len(values)}) for look-back {look_back} + horizon {horizon} "
            f"and the {'/'.join(f'{f:g}' for f in fractions)} split: no {' or '.join(empty)} window "
            f"(need about {need} gap-free rows)"
        )
    train_rows = values[:first_val] if encodings is None else encode(values[:first_val], encodings)
    scaler = fit_scaler(train_rows, source)
    return SplitData(parts["train"], parts["val"], parts["test"], (first_val, first_test), scaler)


def input_statistics(train_rows: np.ndarray, encodings: Sequence[Encoding]) -> dict:
    """Per numeric feature, the training rows' mean, standard deviation, 1st/99th
    percentiles and count: the reference the hub's input-drift alarm compares its
    recent readings with (directions and calendar values have no meaningful mean)."""
    described = {}
    for index, encoding in enumerate(encodings):
        column = train_rows[:, index].astype(np.float64)
        column = column[np.isfinite(column)]
        if encoding.kind != "numeric" or len(column) == 0:
            continue
        q01, q99 = np.percentile(column, [1, 99])
        described[encoding.feature] = {
            "mean": float(column.mean()), "std": float(column.std()),
            "q01": float(q01), "q99": float(q99), "count": int(len(column)),
        }
    return {"split": "train", "features": described}


def fit_scaler(train_rows: np.ndarray, source: str) -> MinMaxScaler:
    finite = np.isfinite(train_rows)
    if not finite.any(axis=0).all():
        column = int(np.flatnonzero(~finite.any(axis=0))[0])
        raise DataError(f"{source}: feature {column} has no finite value in the training split")
    # MinMaxScaler ignores NaN while fitting; infinities were turned into NaN on load.
    return MinMaxScaler().fit(train_rows)


def scale_windows(scaler: MinMaxScaler, x: np.ndarray) -> np.ndarray:
    flat = x.reshape(-1, x.shape[-1]).astype(np.float64)
    return scaler.transform(flat).reshape(x.shape).astype(np.float32)


def model_inputs(scaler: MinMaxScaler, encodings: Sequence[Encoding], x: np.ndarray) -> np.ndarray:
    """Raw windows to what the network reads: encoded, then MinMax-scaled."""
    return scale_windows(scaler, encode(x, encodings))


def change_formulation(train: Windows) -> Formulation:
    """Predict the change from the window's last value, each step divided by its training spread.

    Starting from "no change" puts the untrained network at persistence instead of having
    it learn to copy the last reading through the LSTM; dividing by each step's spread
    weighs the loss evenly over the horizon, so the near steps are not drowned out by the
    far ones, whose changes are several times larger.
    """
    change = train.y.astype(np.float64) - train.x[:, -1, :1].astype(np.float64)
    spread = change.std(axis=0)
    return Formulation(CHANGE, tuple(float(s) if s > 0 else 1.0 for s in spread))


def model_targets(scaler: MinMaxScaler, formulation: Formulation, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """What the network learns for raw targets `y`: see `forecasts_from_outputs` for the inverse."""
    if formulation.kind == CHANGE:
        change = np.asarray(y, np.float64) - x[:, -1, :1].astype(np.float64)
        return (change / np.asarray(formulation.step_scale)).astype(np.float32)
    return scale_target(scaler, y)


def forecasts_from_outputs(
    scaler: MinMaxScaler, formulation: Formulation, x: np.ndarray, outputs: np.ndarray
) -> np.ndarray:
    """Network outputs to raw target units, float64: last value + output * step_scale, or the
    scaler's inverse for the level formulation."""
    outputs = np.asarray(outputs, np.float64)
    if formulation.kind == CHANGE:
        return x[:, -1, :1].astype(np.float64) + outputs * np.asarray(formulation.step_scale)
    return unscale_target(scaler, outputs)


def scale_target(scaler: MinMaxScaler, y: np.ndarray) -> np.ndarray:
    return (y * scaler.scale_[0] + scaler.min_[0]).astype(np.float32)


def unscale_target(scaler: MinMaxScaler, y_scaled: np.ndarray) -> np.ndarray:
    """scikit-learn's inverse_transform for the target column alone."""
    return (np.asarray(y_scaled, np.float64) - scaler.min_[0]) / scaler.scale_[0]
