"""TFLite float32 with the same raw-units contract, batch fixed at 1.

The converter cannot lower Keras's LSTM with a dynamic batch (`TensorListReserve ...
element_shape to be static`); from a concrete function with a static batch whose
variables are frozen to constants it produces a fused LSTM.
"""
from __future__ import annotations

from edgecast.common import silenced_stderr

from .errors import ExportError
from .graph import raw_units_function, tf

TFLITE_BATCH = 1


def to_tflite(model, spec: dict) -> bytes:
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    function = raw_units_function(model, spec, batch=TFLITE_BATCH)
    frozen = convert_variables_to_constants_v2(function.get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen], model)
    try:
        return converter.convert()
    except Exception as exc:  # the converter raises ConverterError and plain Exceptions
        raise ExportError(f"TFLite conversion failed: {str(exc).splitlines()[0]}") from None


def tflite_interpreter(path, threads: int = 1):
    """LiteRT's interpreter (tf.lite.Interpreter is deprecated)."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        with silenced_stderr():  # "Created TensorFlow Lite XNNPACK delegate" on every load
            interpreter = Interpreter(model_path=str(path), num_threads=threads)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ExportError(f"{path}: LiteRT cannot load it ({exc})") from None
    return interpreter
