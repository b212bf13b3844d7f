"""The trainer's own forecasting pipeline, from raw windows to raw forecasts.

encode -> MinMaxScaler.transform (float64) -> Keras predict -> back to raw units.
Training evaluation, `edgecast evaluate` and export parity all call `predict_raw`, so
every exported graph is checked against exactly what the model was judged on.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .bundle import scaler_from_spec
from .windows import forecasts_from_outputs, model_inputs

if TYPE_CHECKING:
    import keras
    from sklearn.preprocessing import MinMaxScaler

    from edgecast_runtime.spec import Spec

PREDICT_BATCH = 1024


def predict_raw(
    model: keras.Model, spec: Spec, x: np.ndarray, scaler: MinMaxScaler | None = None, direct_call: bool = False,
    clip: bool = True,
) -> np.ndarray:
    """Raw windows `[n, look_back, n_features]` to raw forecasts `[n, horizon]`, float64,
    at least the spec's `target_min` when it has one (`clip` False: as the network says).

    `direct_call` runs `model(inputs, training=False)` instead of `model.predict`: one
    graph call without predict's per-call set-up, which `edgecast bench` compares."""
    scaler = scaler if scaler is not None else scaler_from_spec(spec)
    inputs = model_inputs(scaler, spec.feature_encodings, x)
    if direct_call:
        outputs = model(inputs, training=False)
    else:
        outputs = model.predict(inputs, batch_size=PREDICT_BATCH, verbose=0)
    forecast = forecasts_from_outputs(scaler, spec.formulation, x, outputs)
    floor = spec.target_min
    return np.maximum(forecast, floor) if clip and floor is not None else forecast
