"""TFLite float32 with the same raw-units contract, batch fixed at 1.

The converter cannot lower Keras's LSTM with a dynamic batch (`TensorListReserve ...
element_shape to be static`); from a concrete function with a static batch whose
variables are frozen to constants it produces a fused LSTM.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ExportError
from .graph import raw_units_function, tf

if TYPE_CHECKING:
    import keras

    from edgecast.trainer.intervals import Calibration
    from edgecast_runtime.spec import Spec

TFLITE_BATCH = 1


def to_tflite(model: keras.Model, spec: Spec, calibration: Calibration | None = None) -> bytes:
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    function = raw_units_function(model, spec, batch=TFLITE_BATCH, calibration=calibration)
    frozen = convert_variables_to_constants_v2(function.get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen], model)
    try:
        return converter.convert()
    except Exception as exc:  # the converter raises ConverterError and plain Exceptions
        raise ExportError(f"TFLite conversion failed: {str(exc).splitlines()[0]}") from None
