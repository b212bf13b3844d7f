"""The raw-units forecasting function that every export is converted from.

Encoding and scaling live in the graph, so a hub needs neither scikit-learn nor a JSON sidecar:
    encoded  = encode(window)                  (trainer/features.py: sin/cos of directions
                                                and calendar values, calm -> 0)
    scaled   = (encoded - shift) * scale + residual   (MinMaxScaler.transform, = encoded * scale + min)
    forecast = (model(scaled) - min_t) / scale_t   (level: MinMaxScaler.inverse_transform)
    forecast = window[:, -1, 0] + model(scaled) * step_scale   (change_from_last; in the
                                                fused int8 graph a MatMul by diag(step_scale),
                                                export/fused_lstm.py says why)
    forecast = max(forecast, target_min)             (when the spec has a target_min)
A neighbour's reading (kind masked) may be NaN in the window: the graph replaces it by its
fill and adds a 0/1 presence column, with NotEqual(x, x) (true only for NaN) and Where,
ops that ONNX and TFLite both have.
`scale` and `min` come from scikit-learn's own fitted scaler, so its handling of a
zero-range feature (range treated as 1) is reproduced exactly rather than re-derived.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from edgecast.base import import_tensorflow
from edgecast.trainer import features
from edgecast.trainer.bundle import scaler_from_spec
from edgecast_runtime.contract import DIRECTION, INPUT_NAME, MASKED, NUMERIC, OUTPUT_NAME
from edgecast_runtime.spec import CHANGE

from .errors import ExportError

if TYPE_CHECKING:
    import tensorflow
    from sklearn.preprocessing import MinMaxScaler

    from edgecast.trainer.intervals import Calibration
    from edgecast_runtime.spec import Encoding, Spec

tf = import_tensorflow()


def scaling_constants(spec: Spec) -> dict[str, np.ndarray]:
    scaler = scaler_from_spec(spec)
    return {
        "scale": scaler.scale_.astype(np.float32),
        # x * scale + min == (x - shift) * scale + residual, where shift is -min / scale
        # rounded to float32 and residual what that rounding lost. The graph computes this
        # form: for a reading far from zero with a narrow range (pressure, ~1000 hPa over
        # ~50 hPa) x * scale and min are both large and cancel, losing float32 digits that
        # the ridge skip's large lag coefficients amplify into the forecast; x - shift is
        # exact there, so the scaled input matches float64 scikit-learn to ~1e-7.
        **_shifted_scaling(scaler),
        "target_scale": np.float32(scaler.scale_[0]),
        "target_offset": np.float32(scaler.min_[0]),
    }


def _shifted_scaling(scaler: MinMaxScaler) -> dict[str, np.ndarray]:
    shift = -scaler.min_ / scaler.scale_
    shift32 = shift.astype(np.float32)
    return {"shift": shift32, "residual": ((shift32.astype(np.float64) - shift) * scaler.scale_).astype(np.float32)}


def raw_units_function(
    model: Callable[..., tensorflow.Tensor], spec: Spec, batch: int | None, diagonal_step: bool = False,
    calibration: Calibration | None = None,
) -> tensorflow.types.experimental.PolymorphicFunction:
    """A tf.function from raw `window [batch, look_back, n_features]` to raw `forecast [batch, horizon]`.
    `model`: a Keras model, or anything called like one (export/fused_lstm.py `_ConstantWeights`).
    With a schema-4 spec and its `calibration` (trainer/intervals.py) it also gives `quantiles`
    and `exceedance` (export/distribution.py)."""
    from .distribution import distribution_outputs

    if spec.probabilistic is not None and calibration is None:
        raise ExportError("the model gives quantiles or alerts but its bundle has no intervals.json: "
                          "train it again")
    constants = scaling_constants(spec)
    signature = tf.TensorSpec([batch, spec.look_back, spec.n_features], tf.float32, name=INPUT_NAME)

    encodings, formulation = spec.feature_encodings, spec.formulation
    floor = spec.target_min

    # Constants are created inside the function: captured tensors would become extra
    # graph inputs in tf2onnx.
    @tf.function(input_signature=[signature])
    def forecast(window: tensorflow.Tensor) -> dict[str, tensorflow.Tensor]:
        encoded = encoded_window(window, encodings)
        scaled = (encoded - tf.constant(constants["shift"])) * tf.constant(constants["scale"]) + tf.constant(
            constants["residual"])
        predicted = model(scaled, training=False)
        if formulation.kind == CHANGE:
            step_scale = np.asarray(formulation.step_scale, np.float32)
            if diagonal_step:
                change = tf.matmul(predicted, tf.constant(np.diag(step_scale)))
            else:
                change = predicted * tf.constant(step_scale)
            raw = window[:, -1, 0:1] + change
        else:
            raw = (predicted - tf.constant(constants["target_offset"])) / tf.constant(constants["target_scale"])
        if floor is not None:  # a Max (ONNX) or MAXIMUM (TFLite) op
            raw = tf.maximum(raw, tf.constant(np.float32(floor)))
        if spec.probabilistic is None:
            return {OUTPUT_NAME: raw}
        return {OUTPUT_NAME: raw, **distribution_outputs(raw, spec, calibration)}

    return forecast


def encoded_window(window: tensorflow.Tensor, encodings: Sequence[Encoding]) -> tensorflow.Tensor:
    """The graph twin of trainer/features.py `encode`; plain readings pass through untouched."""
    if not features.needs_hub_knowledge(encodings):
        return window
    parts = []
    for index, encoding in enumerate(encodings):
        value = window[:, :, index]
        if encoding.kind == NUMERIC:
            parts.append(value)
            continue
        if encoding.kind == MASKED:
            # NotEqual(x, x) as the condition: tf2onnx then keeps a real Where, where it
            # would otherwise write the select as cond * x + (1 - cond) * y, and NaN * 0 is NaN.
            missing = tf.not_equal(value, value)
            fill = encoding.fill
            stand_in = window[:, :, fill.column] if fill.column is not None else tf.constant(np.float32(fill.value))
            parts += [tf.where(missing, stand_in, value), 1 - tf.cast(missing, tf.float32)]
            continue
        if encoding.kind == DIRECTION:
            angle = value * tf.constant(math.pi / 180, tf.float32)
            blowing = tf.cast(value >= 0, tf.float32)  # calm (negative) -> (0, 0)
            parts += [tf.sin(angle) * blowing, tf.cos(angle) * blowing]
        else:
            angle = value * tf.constant(2 * math.pi / encoding.period, tf.float32)
            parts += [tf.sin(angle), tf.cos(angle)]
    return tf.stack(parts, axis=-1)
