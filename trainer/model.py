"""The Keras forecaster: LSTM(units) (stacked `layers` deep), dropout, Dense(horizon), in scaled space,
by default on top of a frozen ridge map of the window and products of its summary (`build_model`)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgecast.base import import_tensorflow

tf = import_tensorflow()

import keras  # noqa: E402
import numpy as np  # noqa: E402


def seed_everything(seed: int) -> None:
    """Same seed, same data, same numbers: seeds Python, NumPy and TF, deterministic ops."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def build_model(
    look_back: int,
    n_features: int,
    horizon: int,
    units: int,
    learning_rate: float,
    layers: int = 1,
    dropout: float = 0.0,
    linear_skip: bool = False,
    input_stats: tuple[np.ndarray, np.ndarray] | None = None,
    freeze_linear: bool = False,
    quadratic: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    name: str = "edgecast_lstm",
    identity: tuple[int, int] | None = None,
) -> keras.Model:
    """`n_features` counts the encoded input columns. Dropout acts in training only, so
    the exported graph (training=False) is the same function as Keras predict.

    With `linear_skip` the output is a linear map of the whole window (layer "linear",
    meant to start from a ridge fit, see `start_from_linear`) plus the LSTM's correction,
    whose output layer starts at zero: training begins at the linear model's forecast
    and the LSTM only has to learn what a linear model cannot. With `freeze_linear` the
    linear map keeps its ridge weights and training fits the LSTM to the ridge residual
    (left trainable, Adam drifts its hundreds of weights away from ridge faster than the
    LSTM learns anything, and validation loss is best after one epoch).

    `input_stats` (mean, variance per encoded feature, from the training split) puts a
    fixed standardising layer ("standardise") in front of the LSTM: MinMax-scaled PM2.5 sits mostly in
    [0, 0.2], where the LSTM's gates are nearly linear and it learns slowly. The linear
    map reads the unstandardised window, so it stays exactly the ridge fit.

    `quadratic` = (basis, low, high) adds pairwise products of a short summary of the
    window (latest readings, recent changes, recent means; see `quadratic_basis` and
    `_linear_parts`) to what the linear map reads: a ridge fit on them is what takes
    the 6 h forecast clearly past persistence on the Beijing stations
    (results/forecast_quality.md). Everything is fixed Dense, Cropping, ReLU and
    Multiply layers, so every export computes it from the raw window.

    `identity` = (stations, width) makes a global model (trainer/global_model.py): a
    second input "station" (one-hot over the stations and "unknown") whose learned
    embedding the first LSTM layer reads beside the window at every step. Since it is
    constant over the window, it folds into that layer's bias for one station
    (trainer/identity.py), which gives an ordinary single-input model.
    """
    window = keras.Input((look_back, n_features), name="window")
    hidden = window
    if input_stats is not None:
        mean = np.asarray(input_stats[0], np.float64).reshape(-1)
        variance = np.asarray(input_stats[1], np.float64).reshape(-1)
        variance = np.where(variance > 0, variance, 1.0)  # a constant feature passes through shifted, not blown up
        # A frozen Dense with a diagonal kernel, not keras' Normalization: its mean and
        # variance are captured constants, which tf2onnx turns into extra graph inputs.
        standardise = keras.layers.Dense(n_features, trainable=False, name="standardise")
        hidden = standardise(hidden)
        standardise.set_weights([np.diag(1 / np.sqrt(variance)).astype(np.float32),
                                 (-mean / np.sqrt(variance)).astype(np.float32)])
    inputs = [window]
    if identity is not None:
        station = keras.Input((identity[0],), name="station")
        embedded = keras.layers.Dense(identity[1], use_bias=False, name="station_embedding")(station)
        embedded = keras.layers.RepeatVector(look_back, name="station_per_step")(embedded)
        hidden = keras.layers.Concatenate(name="window_and_station")([hidden, embedded])
        inputs.append(station)
    for depth in range(layers):
        last = depth == layers - 1
        layer_name = "lstm" if depth == 0 else f"lstm_{depth + 1}"
        hidden = keras.layers.LSTM(units, return_sequences=not last, name=layer_name)(hidden)
        if dropout > 0:
            hidden = keras.layers.Dropout(dropout, name=f"dropout_{depth + 1}")(hidden)
    if linear_skip:
        correction = keras.layers.Dense(horizon, kernel_initializer="zeros", name="lstm_correction")(hidden)
        lags = keras.layers.Flatten(name="lags")(window)
        if quadratic is None:
            linear = keras.layers.Dense(horizon, name="linear", trainable=not freeze_linear)(lags)
        else:
            linear = _map_in_parts(_linear_parts(window, lags, *quadratic), horizon, not freeze_linear)
        output = keras.layers.Add(name="forecast")([linear, correction])
    else:
        output = keras.layers.Dense(horizon, name="forecast")(hidden)
    model = keras.Model(inputs if identity is not None else window, output, name=name)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    return model


def with_fallback(net: keras.Model, own: keras.Model, own_columns: int,
                  presence: list[tuple[int, float, float]]) -> keras.Model:
    """`net`'s forecast, or `own`'s (a network of the station's own first `own_columns`
    inputs) when no neighbour's reading is present anywhere in the window.

    `presence`: (column, scale, min) of each scaled presence column, so the count of
    readings present is a fixed linear map of the window; the gate relu(1 - 2 count),
    capped at 1, is 1 with none present and 0 with any. Fixed Dense, ReLU, Subtract,
    Multiply and Add layers: every export computes the choice in its graph."""
    look_back, n_columns = net.input_shape[1], net.input_shape[2]
    horizon = net.output_shape[-1]
    window = keras.Input((look_back, n_columns), name="window")
    own_inputs = _fixed_dense(window, np.eye(n_columns, own_columns), "own_columns")
    count_kernel, count_bias = np.zeros((n_columns, 1)), 0.0
    for column, scale, minimum in presence:  # the 0/1 presence from its scaled value: (v - min) / scale
        count_kernel[column, 0] = 1 / scale
        count_bias -= minimum / scale
    present = keras.layers.Flatten(name="present_per_step")(
        _fixed_dense(window, count_kernel, "present_count", np.array([count_bias])))
    gate = _fixed_dense(present, np.full((look_back, horizon), -2.0), "fallback_gate", np.ones(horizon))
    gate = keras.layers.ReLU(max_value=1.0, name="fallback_gate_cap")(gate)
    with_neighbours, own_history = net(window), own(own_inputs)
    change = keras.layers.Subtract(name="fallback_change")([own_history, with_neighbours])
    chosen = keras.layers.Add(name="forecast_or_fallback")(
        [with_neighbours, keras.layers.Multiply(name="fallback_share")([gate, change])])
    return keras.Model(window, chosen, name="edgecast_lstm_neighbours")


def _fixed_dense(
    inputs: keras.KerasTensor, kernel: np.ndarray, name: str, bias: np.ndarray | None = None
) -> keras.KerasTensor:
    layer = keras.layers.Dense(kernel.shape[1], use_bias=bias is not None, trainable=False, name=name)
    outputs = layer(inputs)
    layer.set_weights([kernel.astype(np.float32)] + ([] if bias is None else [bias.astype(np.float32)]))
    return outputs


# Inputs per Dense of the quadratic-skip linear map. One Dense over all ~800 inputs
# (lags and products) sums terms that cancel heavily on off-range windows, and
# XNNPACK's float32 kernel then drifts 2e-3 from exact, past parity; in parts of about
# a hundred inputs ONNX Runtime and LiteRT stay within 4e-4 of Keras (Changping).
MAX_FAN_IN = 100


def _linear_parts(
    window: keras.KerasTensor, lags: keras.KerasTensor, basis: np.ndarray, low: np.ndarray, high: np.ndarray
) -> list[keras.KerasTensor]:
    """What the linear map reads, in parts of at most MAX_FAN_IN inputs: the lags, centred
    on the middle of the scaled training range (0.5), in blocks of steps, then the
    products u_i * u_j (i <= j) of u = clamp((lags @ basis - low) / (high - low), 0, 1) - 1/2.
    Centring keeps the float32 terms small and the products less collinear with each
    other and the lags; clamping makes a reading outside the fitted range extrapolate
    linearly through the lags, not quadratically. The pairs are picked by fixed 0/1
    matrices, so the graph is MatMul, Relu and Mul."""
    look_back, n_encoded = window.shape[1], window.shape[2]
    parts, step = [], max(1, MAX_FAN_IN // n_encoded)
    for index, first_step in enumerate(range(0, look_back, step)):
        last_step = min(first_step + step, look_back)
        block = keras.layers.Cropping1D((first_step, look_back - last_step), name=f"lags_{index}")(window)
        block = keras.layers.Flatten(name=f"lags_{index}_flat")(block)
        parts.append(keras.layers.Rescaling(1.0, offset=-0.5, name=f"lags_{index}_centred")(block))
    width = np.where(high > low, high - low, 1.0)
    summary = _fixed_dense(lags, basis / width, "quad_basis", bias=-low / width)
    summary = keras.layers.ReLU(max_value=1.0, name="quad_clamp")(summary)
    first, second = np.triu_indices(basis.shape[1])
    for index, pairs in enumerate(np.array_split(np.arange(len(first)), -(-len(first) // MAX_FAN_IN))):
        factors = []
        for side, rows in (("first", first[pairs]), ("second", second[pairs])):
            pick = np.zeros((basis.shape[1], len(pairs)))
            pick[rows, np.arange(len(pairs))] = 1
            factors.append(_fixed_dense(summary, pick, f"quad_{side}_{index}", bias=np.full(len(pairs), -0.5)))
        parts.append(keras.layers.Multiply(name=f"products_{index}")(factors))
    return parts


def _map_in_parts(parts: list[keras.KerasTensor], horizon: int, trainable: bool) -> keras.KerasTensor:
    """One linear map written as a Dense per part ("linear_0" holds the bias), summed."""
    outputs = [keras.layers.Dense(horizon, use_bias=index == 0, trainable=trainable, name=f"linear_{index}")(part)
               for index, part in enumerate(parts)]
    return keras.layers.Add(name="linear")(outputs)


CHANGE_STEPS = (3, 6, 12)  # chosen on hourly data; in sampling intervals
MEAN_STEPS = (6, 24)


def quadratic_basis(look_back: int, widths: list[int], changing: list[bool]) -> np.ndarray:
    """[look_back * n_encoded, m]: z = flattened window @ basis, where z is the latest
    encoded row, the change over 3, 6 and 12 steps of every plain reading (`changing`
    per raw feature; encoded directions and calendar values have no meaningful change)
    and the mean target over the last 6 and 24 steps, each where the look-back allows."""
    n_encoded = sum(widths)
    starts = np.cumsum([0, *widths[:-1]])

    def at(step: int, column: int) -> np.ndarray:
        unit = np.zeros(look_back * n_encoded)
        unit[(look_back - 1 - step) * n_encoded + column] = 1  # step 0 = the latest row
        return unit

    columns = [at(0, column) for column in range(n_encoded)]
    plain = [int(start) for start, moving in zip(starts, changing) if moving]
    columns += [at(0, c) - at(k, c) for k in CHANGE_STEPS if k < look_back for c in plain]
    columns += [sum(at(j, 0) for j in range(k)) / k for k in MEAN_STEPS if k <= look_back]
    return np.stack(columns, axis=1)


def summary_range(basis: np.ndarray, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per summary entry, its smallest and largest value over these (scaled) windows."""
    summary = inputs.reshape(len(inputs), -1).astype(np.float64) @ basis
    return summary.min(axis=0), summary.max(axis=0)


def _map_layers(model: keras.Model) -> list:
    """The Dense layers of the linear map: "linear", or "linear_0", "linear_1", ... in parts."""
    names = {layer.name for layer in model.layers}
    if "linear_0" not in names:
        return [model.get_layer("linear")]
    return [model.get_layer(f"linear_{i}") for i in range(len(names)) if f"linear_{i}" in names]


def linear_features(model: keras.Model, inputs: np.ndarray) -> np.ndarray:
    """What the linear map reads, its parts side by side, for the ridge fit."""
    layers = _map_layers(model)
    if len(layers) == 1:
        return inputs.reshape(len(inputs), -1)
    reader = keras.Model(model.inputs, [layer.input for layer in layers])
    parts = reader.predict(inputs, batch_size=4096, verbose=0)
    return np.concatenate([np.asarray(part, np.float64) for part in parts], axis=1)


def standardising_stats(inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of each encoded feature over every step of the training windows."""
    flat = np.asarray(inputs, np.float64).reshape(-1, inputs.shape[-1])
    return flat.mean(axis=0), flat.var(axis=0)


def start_from_linear(model: keras.Model, inputs: np.ndarray, targets: np.ndarray, alpha: float = 1.0) -> None:
    """Set the linear map to ridge regression of the targets on what it reads."""
    from sklearn.linear_model import Ridge

    targets = targets.reshape(len(targets), -1)
    ridge = Ridge(alpha=alpha).fit(linear_features(model, inputs), targets)
    # scikit-learn drops the target axis of coef_ for a single target; restore [features, horizon].
    kernel = ridge.coef_.reshape(targets.shape[1], -1).T.astype(np.float32)
    bias = np.reshape(ridge.intercept_, targets.shape[1]).astype(np.float32)
    layers = _map_layers(model)
    rows = np.cumsum([0] + [layer.get_weights()[0].shape[0] for layer in layers])
    for index, layer in enumerate(layers):
        layer.set_weights([kernel[rows[index]:rows[index + 1]]] + ([bias] if index == 0 else []))


class EpochReporter(keras.callbacks.Callback):
    """Hands each epoch's losses to a plain function, so the trainer stays UI-free."""

    def __init__(self, report: Callable[[int, dict], object]) -> None:
        super().__init__()
        self._report = report

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._report(epoch + 1, dict(logs or {}))


def fit(
    model: keras.Model,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    epochs: int,
    batch_size: int,
    patience: int,
    on_epoch: Callable[[int, dict], object] | None = None,
    steps_per_epoch: int | None = None,
) -> dict:
    """Adam on MSE with early stopping on validation loss; the best weights are restored.
    `steps_per_epoch`: an epoch of that many batches, each going on where the last one
    stopped (Keras walks the shuffled windows across epochs), so validation comes as often
    on a large pooled set as on one station's."""
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
    ]
    if on_epoch is not None:
        callbacks.append(EpochReporter(on_epoch))
    history = model.fit(
        train[0], train[1],
        validation_data=val,
        epochs=epochs,
        batch_size=batch_size,
        steps_per_epoch=steps_per_epoch,
        shuffle=True,
        verbose=0,
        callbacks=callbacks,
    )
    losses = history.history
    best = int(np.argmin(losses["val_loss"]))
    return {
        "epochs_run": len(losses["loss"]),
        "best_epoch": best + 1,
        "best_val_loss": float(losses["val_loss"][best]),
        "train_loss": [round(float(v), 8) for v in losses["loss"]],
        "val_loss": [round(float(v), 8) for v in losses["val_loss"]],
    }


def predict_scaled(model: keras.Model, x_scaled: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    return np.asarray(model.predict(x_scaled, batch_size=batch_size, verbose=0))
