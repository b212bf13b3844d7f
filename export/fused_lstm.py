"""TFLite's fused UNIDIRECTIONAL_SEQUENCE_LSTM op from a Keras 3 model.

Keras 3's LSTM converts to a WHILE loop. TF 2.21's converter crashes (segmentation
fault) calibrating that loop for int8, and the unrolled alternative (export/unrolled.py)
is a thousand small ops whose tensor metadata outweighs int8 weights at the default
width. The converter still fuses a function tagged the way Keras 2 tagged its LSTM:
`api_implements: "lstm_<id>"`, `time_major`, `go_backwards`, arguments (inputs, h0, c0,
kernel, recurrent_kernel, bias) and five results, of which only the last output or the
sequence may be used (TF's lstm_utils.cc ConvertKerasLSTMLayer). The tag survives only
the SavedModel import path (freezing a concrete function inlines the function and drops
it), so the graph is saved with its weights as constants (no variables to freeze) and
converted from there.

Two properties of the fused op that every interpreter of these files must know:
- Its h and c state live in variable tensors that persist between invokes: reset them
  before each window (LiteRT `reset_all_variables()`, TFLite Micro
  `MicroInterpreter::Reset()`), or each forecast starts from the last window's state.
  export/oplist.py `has_variable_state` tells a file that needs it; the runner every
  measurement uses (export/backends.py) resets such files before every window.
- The converter sets a cell clip of 10 (|c| <= 10). In int8 this is the range of the
  int16 cell state; the accuracy report measures what it costs.

The per-lead step scale of change_from_last is applied as a MatMul by diag(step_scale)
(a FULLY_CONNECTED with per-channel weights), not as an elementwise MUL: the int8
quantizer gave the MUL's input (the network's output, range about 4) the scale of its
output (the raw change, range about 200 µg/m³: 0.83 per step), so most changes rounded to
zero and a horizon-6 forecast was the last reading six times (issue 27: 88% of Changping
test windows). The FULLY_CONNECTED's input keeps its own scale (0.017). In float the
product is the same (x * s plus exact zeros).
"""
from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

from edgecast.base import silenced_stderr

from .errors import ExportError
from .graph import raw_units_function, tf
from .tflite_export import TFLITE_BATCH

if TYPE_CHECKING:
    import keras
    import tensorflow
    from tensorflow.lite.python.lite import TFLiteConverterBaseV2

    from edgecast.trainer.intervals import Calibration
    from edgecast_runtime.spec import Spec

FUSED_OP = "UNIDIRECTIONAL_SEQUENCE_LSTM"
# The only LSTM configuration the fused op computes (TANH cell, sigmoid gates, biases).
FUSABLE_CONFIG = {"activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": True,
                  "go_backwards": False, "stateful": False}


def _composite_lstm() -> tensorflow.types.experimental.PolymorphicFunction:
    """A fresh tagged function per export: the tag names one implementation."""

    @tf.function(autograph=False, experimental_attributes={
        "api_implements": f"lstm_{uuid.uuid4().hex}", "api_preferred_device": "CPU",
        "time_major": False, "go_backwards": False,
    })
    def keras_lstm(
        inputs: tensorflow.Tensor,
        init_h: tensorflow.Tensor,
        init_c: tensorflow.Tensor,
        kernel: tensorflow.Tensor,
        recurrent_kernel: tensorflow.Tensor,
        bias: tensorflow.Tensor,
    ) -> tuple[tensorflow.Tensor, ...]:
        # The body is what TF runs; the converter replaces it with the fused op.
        h, c, sequence = init_h, init_c, []
        for step in range(inputs.shape[1]):
            gates = tf.matmul(inputs[:, step], kernel) + tf.matmul(h, recurrent_kernel) + bias
            i, f, g, o = tf.split(gates, 4, axis=1)  # Keras' gate order, also the fused op's
            c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
            h = tf.sigmoid(o) * tf.tanh(c)
            sequence.append(h)
        return h, tf.stack(sequence, axis=1), h, c, tf.constant(0.0)

    return keras_lstm


def _fusable_clone(model: keras.Model) -> keras.Model:
    """The model with each LSTM layer replaced by a call of the tagged function."""
    import keras

    lstm_function = _composite_lstm()

    class TaggedLSTM(keras.layers.Layer):
        def __init__(self, source: keras.layers.LSTM) -> None:
            super().__init__(name=source.name)
            self.units, self.return_sequences = source.units, source.return_sequences
            self.source_weights = [np.asarray(w, np.float32) for w in source.get_weights()]

        def compute_output_shape(self, shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
            return (shape[0], shape[1], self.units) if self.return_sequences else (shape[0], self.units)

        def call(
            self, x: tensorflow.Tensor, mask: tensorflow.Tensor | None = None, training: bool | None = None
        ) -> tensorflow.Tensor:
            zeros = tf.zeros(tf.stack([tf.shape(x)[0], self.units]), x.dtype)
            if x.shape[0] is not None:  # the fused op needs a static state shape
                zeros = tf.zeros([x.shape[0], self.units], x.dtype)
            last, sequence, *_ = lstm_function(x, zeros, zeros, *(tf.constant(w) for w in self.source_weights))
            return sequence if self.return_sequences else last

    def clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, keras.layers.LSTM):
            _check_fusable(layer)
            return TaggedLSTM(layer)
        return layer.__class__.from_config(layer.get_config())

    clone = keras.models.clone_model(model, clone_function=clone_layer)
    for layer in model.layers:
        if not isinstance(layer, keras.layers.LSTM):
            clone.get_layer(layer.name).set_weights(layer.get_weights())
    return clone


def _check_fusable(layer: keras.layers.LSTM) -> None:
    config = layer.get_config()
    different = {k: config.get(k) for k, v in FUSABLE_CONFIG.items() if config.get(k) != v}
    if different:
        raise ExportError(f"LSTM layer {layer.name!r} cannot become TFLite's fused LSTM: {different}")


class _ConstantWeights:
    """Calls the model with every weight as a constant (Keras' stateless_call), so the
    saved graph has no variables: the converter has nothing to freeze or inline."""

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        self.trainable = [np.asarray(v.numpy()) for v in model.trainable_variables]
        self.non_trainable = [np.asarray(v.numpy()) for v in model.non_trainable_variables]

    def __call__(self, x: tensorflow.Tensor, training: bool = False) -> tensorflow.Tensor:
        outputs, _ = self.model.stateless_call(
            [tf.constant(v) for v in self.trainable], [tf.constant(v) for v in self.non_trainable], x, training=False
        )
        return outputs


@contextmanager
def fused_converter(model: keras.Model, spec: Spec, calibration: Calibration | None = None
                    ) -> Iterator[TFLiteConverterBaseV2]:
    """A TFLite converter over the raw-units graph with fused LSTMs, static batch 1,
    valid inside the `with` block (it reads a temporary SavedModel); with a schema-4
    model's `calibration`, its quantiles and exceedance outputs too."""
    function = raw_units_function(_ConstantWeights(_fusable_clone(model)), spec, batch=TFLITE_BATCH, diagonal_step=True,
                                  calibration=calibration)
    holder = tf.Module()
    holder.forecast = function
    with tempfile.TemporaryDirectory(prefix="edgecast-fused-") as folder:
        with silenced_stderr():
            tf.saved_model.save(holder, folder, signatures=function.get_concrete_function())
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        yield converter

