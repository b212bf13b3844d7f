"""The raw-units forecasting function that every export is converted from.

Scaling lives in the graph, so a hub needs neither scikit-learn nor a JSON sidecar:
    scaled   = window * scale + min            (MinMaxScaler.transform)
    forecast = (model(scaled) - min_t) / scale_t   (MinMaxScaler.inverse_transform, target column)
`scale` and `min` come from scikit-learn's own fitted scaler, so its handling of a
zero-range feature (range treated as 1) is reproduced exactly rather than re-derived.
"""
from __future__ import annotations

import numpy as np

from edgecast.trainer.bundle import scaler_from_spec
from edgecast.trainer.quiet import import_tensorflow

tf = import_tensorflow()

INPUT_NAME = "window"
OUTPUT_NAME = "forecast"


def scaling_constants(spec: dict) -> dict[str, np.ndarray]:
    scaler = scaler_from_spec(spec)
    return {
        "scale": scaler.scale_.astype(np.float32),
        "offset": scaler.min_.astype(np.float32),
        "target_scale": np.float32(scaler.scale_[0]),
        "target_offset": np.float32(scaler.min_[0]),
    }


def raw_units_function(model, spec: dict, batch: int | None):
    """A tf.function from raw `window [batch, look_back, n_features]` to raw `forecast [batch, horizon]`."""
    constants = scaling_constants(spec)
    signature = tf.TensorSpec([batch, spec["look_back"], len(spec["features"])], tf.float32, name=INPUT_NAME)

    # Constants are created inside the function: captured tensors would become extra
    # graph inputs in tf2onnx.
    @tf.function(input_signature=[signature])
    def forecast(window):
        scaled = window * tf.constant(constants["scale"]) + tf.constant(constants["offset"])
        predicted = model(scaled, training=False)
        raw = (predicted - tf.constant(constants["target_offset"])) / tf.constant(constants["target_scale"])
        return {OUTPUT_NAME: raw}

    return forecast
