"""The Keras forecaster: LSTM(units) then Dense(horizon), in scaled space."""
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


def build_model(look_back: int, n_features: int, horizon: int, units: int, learning_rate: float) -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input((look_back, n_features), name="window"),
            keras.layers.LSTM(units, name="lstm"),
            keras.layers.Dense(horizon, name="forecast"),
        ],
        name="edgecast_lstm",
    )
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    return model


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
