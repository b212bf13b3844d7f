"""A builtin-ops-only TFLite graph: the recurrence unrolled over the static look-back.

Keras 3's LSTM is not fused into TFLite's UNIDIRECTIONAL_SEQUENCE_LSTM; it converts
to a WHILE loop (control flow, missing from older TFLite Micro releases and trimmed op
resolvers, and whose int8 calibration crashes TF 2.21's converter with a
segmentation fault). A clone of the model with `unroll=True` and the same
weights computes the same function as plain FULLY_CONNECTED / ADD / MUL / SPLIT /
LOGISTIC / TANH ops, once per time step; the scaling comes from `raw_units_function`
as in every other export.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from edgecast.base import silenced_stderr

from .errors import ExportError
from .graph import raw_units_function, tf
from .oplist import builtin_only_problems
from .tflite_export import TFLITE_BATCH

if TYPE_CHECKING:
    import keras
    import tensorflow

    from edgecast.trainer.intervals import Calibration
    from edgecast_runtime.spec import Spec


def unrolled_clone(model: keras.Model) -> keras.Model:
    """The same model with every recurrent layer unrolled (the look-back is static)."""
    import keras

    def clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        if "unroll" in config:
            config["unroll"] = True
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(model, clone_function=clone_layer)
    clone.set_weights(model.get_weights())
    return clone


def unrolled_converter(model: keras.Model, spec: Spec, calibration: Calibration | None = None
                       ) -> tensorflow.lite.TFLiteConverter:
    """A TFLite converter over the unrolled raw-units function, variables frozen to constants
    (with a schema-4 model's `calibration`: its quantiles and exceedance outputs too)."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    clone = unrolled_clone(model)
    function = raw_units_function(clone, spec, batch=TFLITE_BATCH, calibration=calibration)
    frozen = convert_variables_to_constants_v2(function.get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen], clone)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter


def to_builtin_tflite(model: keras.Model, spec: Spec, calibration: Calibration | None = None) -> bytes:
    """Float32, static batch 1, builtin ops only; refused (ExportError) if any other op appears.
    A schema-4 model's outputs are builtin ops too (export/distribution.py)."""
    try:
        with silenced_stderr():
            data = unrolled_converter(model, spec, calibration).convert()
    except Exception as exc:  # the converter raises ConverterError and plain Exceptions
        raise ExportError(f"builtin-ops-only TFLite conversion failed: {str(exc).splitlines()[0]}") from None
    problems = builtin_only_problems(data)
    if problems:
        raise ExportError(f"the unrolled TFLite graph is not builtin-ops-only: {'; '.join(problems)}")
    return data

