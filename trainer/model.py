"""The Keras forecaster: LSTM(units) (stacked `layers` deep), dropout, Dense(horizon), in scaled space."""
from __future__ import annotations

from collections.abc import Callable

from .quiet import import_tensorflow

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
    for depth in range(layers):
        last = depth == layers - 1
        name = "lstm" if depth == 0 else f"lstm_{depth + 1}"
        hidden = keras.layers.LSTM(units, return_sequences=not last, name=name)(hidden)
        if dropout > 0:
            hidden = keras.layers.Dropout(dropout, name=f"dropout_{depth + 1}")(hidden)
    if linear_skip:
        correction = keras.layers.Dense(horizon, kernel_initializer="zeros", name="lstm_correction")(hidden)
        linear_map = keras.layers.Dense(horizon, name="linear", trainable=not freeze_linear)
        linear = linear_map(keras.layers.Flatten(name="lags")(window))
        output = keras.layers.Add(name="forecast")([linear, correction])
    else:
        output = keras.layers.Dense(horizon, name="forecast")(hidden)
    model = keras.Model(window, output, name="edgecast_lstm")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    return model


def standardising_stats(inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of each encoded feature over every step of the training windows."""
    flat = np.asarray(inputs, np.float64).reshape(-1, inputs.shape[-1])
    return flat.mean(axis=0), flat.var(axis=0)


def start_from_linear(model: keras.Model, inputs: np.ndarray, targets: np.ndarray, alpha: float = 1.0) -> None:
    """Set the "linear" layer to ridge regression of the targets on the flattened window."""
    from sklearn.linear_model import Ridge

    targets = targets.reshape(len(targets), -1)
    ridge = Ridge(alpha=alpha).fit(inputs.reshape(len(inputs), -1), targets)
    # scikit-learn drops the target axis of coef_ for a single target; restore [features, horizon].
    kernel = ridge.coef_.reshape(targets.shape[1], -1).T
    bias = np.reshape(ridge.intercept_, targets.shape[1])
    model.get_layer("linear").set_weights([kernel.astype(np.float32), bias.astype(np.float32)])


class EpochReporter(keras.callbacks.Callback):
    """Hands each epoch's losses to a plain function, so the trainer stays UI-free."""

    def __init__(self, report: Callable[[int, dict], None]):
        super().__init__()
        self._report = report

    def on_epoch_end(self, epoch, logs=None):
        self._report(epoch + 1, dict(logs or {}))


def fit(
    model: keras.Model,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    epochs: int,
    batch_size: int,
    patience: int,
    on_epoch: Callable[[int, dict], None] | None = None,
) -> dict:
    """Adam on MSE with early stopping on validation loss; the best weights are restored."""
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
