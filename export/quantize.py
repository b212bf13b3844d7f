"""Quantized exports: smaller files for smaller hubs, each its own artifact.

Every mode keeps the graph contract (float32 raw-unit `window` in, float32 raw-unit
`forecast` out, scaling inside the graph); only the weights (and, for the
full-integer modes, the activations) change precision. Quantized artifacts are not
held to the 1e-3 parity gate: their cost is reported as the change in test RMSE.

Modes and the graph each starts from:
  onnx-int8            model.onnx through onnxruntime's quantize_dynamic: the LSTM node
                       becomes DynamicQuantizeLSTM, the Dense MatMul becomes MatMulInteger;
                       activations are scaled per call, so a window's forecast moves with
                       the other windows in its batch
  onnx-static-int8     model.onnx through onnxruntime's quantize_static (QDQ), calibrated on
                       the training windows like tflite-int8: fixed scales, so a window gets
                       the same forecast alone or in any batch. Only LSTM and MatMul nodes
                       are quantized (op_types_to_quantize): the LSTM is not in the QDQ
                       registry, so the quantizer's generic rule puts int8 W, R and B
                       initializers and a QuantizeLinear/DequantizeLinear pair on its input
                       before the float LSTM kernel; the MatMuls get the same on both
                       inputs. Quantizing every op the registry knows (Slice, Reshape, Max,
                       Min, Relu around the scaler and clip) cost 20 % test RMSE on Changping.
  tflite-fp16          the WHILE-loop TFLite graph, float16 weights
  tflite-dynamic-int8  the WHILE-loop TFLite graph, int8 weights, float activations
  tflite-int8          TFLite's fused LSTM op (export/fused_lstm.py), int8 weights and
                       activations, int16 cell state
  tflite-int16x8       the unrolled graph (export/unrolled.py), int8 weights and int16
                       activations: the 16x8 quantizer has no fused-LSTM kernel
Neither starts from the WHILE loop: calibrating it crashes TF 2.21's converter
(segmentation fault in its calibrator). Their input and output stay float32 (the
contract), converted by one QUANTIZE and one DEQUANTIZE op. The fused int8 file keeps
the LSTM state in variable tensors: interpreters reset them before each window
(export/fused_lstm.py). In int8, ops without an integer kernel stay float: the SIN/COS
encodings of direction and calendar features (and the CAST/PACK/ADD around them); the
LSTM is integer throughout. The 16x8 quantizer has no kernel for SIN, COS or the
GREATER_EQUAL of the direction encoding either: they stay float there too (TFLite's
documented fallback, the builtin op set beside the 16x8 one), the rest is int16.
The op list of every artifact names what computes in float (export/oplist.py).

A schema-4 model's quantiles and exceedance (export/distribution.py) come with every mode:
the ONNX modes quantize only LSTM and MatMul nodes; the TFLite modes build them from the
calibration, tflite-int16x8 in int16 with the rest, tflite-int8 in float beside its integer
LSTM and dense layers (INTEGER_OPS; int8 Log, Exp and Mean moved probabilities by 0.54).
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgecast.base import silenced_stderr
from edgecast_runtime.contract import QUANTIZED_FILES

from .errors import ExportError
from .graph import tf

if TYPE_CHECKING:
    import keras
    import onnx
    from tensorflow.lite.python.lite import TFLiteConverterBaseV2

    from edgecast.trainer.intervals import Calibration
    from edgecast_runtime.spec import Spec


class QuantizationError(ExportError):
    """A quantization mode cannot be produced for this model; says why."""


@dataclass(frozen=True)
class Mode:
    name: str
    file: str
    kind: str
    precision: str
    description: str


MODES = {
    mode.name: mode
    for mode in (
        Mode("onnx-int8", QUANTIZED_FILES["onnx-int8"], "onnx", "int8",
             "int8 weights, activations quantized to uint8 at run time (onnxruntime quantize_dynamic)"),
        Mode("onnx-static-int8", QUANTIZED_FILES["onnx-static-int8"], "onnx", "static-int8",
             "int8 weights, activations quantized with fixed calibrated scales (QDQ, onnxruntime "
             "quantize_static): the same forecast for a window alone or in any batch"),
        Mode("tflite-fp16", QUANTIZED_FILES["tflite-fp16"], "tflite", "float16",
             "float16 weights, dequantized to float32 at load; WHILE-loop graph"),
        Mode("tflite-dynamic-int8", QUANTIZED_FILES["tflite-dynamic-int8"], "tflite", "dynamic-int8",
             "int8 weights, float32 activations (dynamic range); WHILE-loop graph"),
        Mode("tflite-int8", QUANTIZED_FILES["tflite-int8"], "tflite", "int8",
             "int8 weights and activations (ops with no int8 kernel, and a schema-4 model's scaling, "
             "quantiles and probabilities, in float), float32 input/output; fused LSTM op, "
             "reset variables before each window"),
        Mode("tflite-int16x8", QUANTIZED_FILES["tflite-int16x8"], "tflite", "int16x8",
             "int8 weights, int16 activations (ops with no 16x8 kernel in float), float32 input/output; "
             "unrolled builtin-ops graph"),
    )
}
# Constant windows spread over the training range, added to the calibration sample:
# 512 random training windows rarely reach the top of the range, and an output range
# calibrated on them alone clips every larger forecast (seen: 342 of 581 µg/m³).
RANGE_WINDOWS = 16


# `quantize=("auto",)`: every mode is a candidate; per backend the smallest file within
# max_rmse_change (percent of the float model's test RMSE) is kept (export/variants.py).
AUTO = "auto"
DEFAULT_MAX_RMSE_CHANGE = 1.0


def check_modes(names: list[str], max_rmse_change: float = DEFAULT_MAX_RMSE_CHANGE) -> list[str]:
    """Known mode names (or `auto`), duplicates dropped; an unknown name or a negative
    budget is a usage error."""
    unknown = [name for name in names if name not in MODES and name != AUTO]
    if unknown:
        raise QuantizationError(
            f"unknown quantize mode {', '.join(repr(n) for n in unknown)}: choose from {', '.join(MODES)} or {AUTO}",
            settings=("quantize",))
    if not max_rmse_change >= 0:
        raise QuantizationError(f"max_rmse_change must be a percentage of at least 0, got {max_rmse_change}",
                                settings=("max_rmse_change",))
    return list(dict.fromkeys(names))



def quantize(mode: Mode, model: keras.Model, spec: Spec, float_onnx: Path, calibration_x: np.ndarray | None,
             calibration: Calibration | None = None) -> bytes:
    """The quantized artifact's bytes, or QuantizationError saying why not. A schema-4
    model's quantiles and exceedance outputs (its `calibration`): the ONNX modes quantize
    model.onnx's LSTM and MatMul nodes and keep them in float; the TFLite modes build them
    from `calibration` (tflite-int8 keeps them in float beside its integer LSTM, tflite_int8)."""
    if mode.name == "onnx-int8":
        return onnx_dynamic_int8(float_onnx)
    if mode.name == "onnx-static-int8":
        return onnx_static_int8(float_onnx, calibration_windows(calibration_x, spec, mode.name))
    if mode.name in ("tflite-int8", "tflite-int16x8"):
        return tflite_full_integer(model, spec, calibration_x, int16_activations=mode.name == "tflite-int16x8",
                                   calibration=calibration)
    return tflite_weights_only(model, spec, float16=mode.name == "tflite-fp16", calibration=calibration)


def onnx_dynamic_int8(float_onnx: Path) -> bytes:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as folder:
        quantized_path = Path(folder) / QUANTIZED_FILES["onnx-int8"]
        try:
            with silenced_stderr():
                quantize_dynamic(float_onnx, quantized_path, weight_type=QuantType.QInt8)
        except Exception as exc:  # onnxruntime.quantization raises bare exceptions of many kinds
            raise QuantizationError(f"onnx-int8: onnxruntime's quantize_dynamic failed: {exc}") from None
        proto = onnx.load(str(quantized_path))
    quantized = [n.op_type for n in proto.graph.node if n.domain == "com.microsoft" or "Integer" in n.op_type]
    if not quantized:
        raise QuantizationError("onnx-int8: quantize_dynamic found no LSTM, MatMul or Gather node to quantize")
    compact_onnx_names(proto)
    return proto.SerializeToString()


# What onnx-static-int8 quantizes; the rest of the graph (scaling, clip, skip-map glue) stays float.
STATIC_OP_TYPES = ("LSTM", "MatMul")


def onnx_static_int8(float_onnx: Path, samples: np.ndarray) -> bytes:
    """QDQ int8 of the LSTM and MatMul nodes, activation ranges calibrated (MinMax) on `samples`."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Windows(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter([{"window": window[np.newaxis]} for window in samples])

        def get_next(self) -> dict | None:
            return next(self._feeds, None)

    with tempfile.TemporaryDirectory() as folder:
        quantized_path = Path(folder) / QUANTIZED_FILES["onnx-static-int8"]
        try:
            with silenced_stderr():
                quantize_static(float_onnx, quantized_path, Windows(), quant_format=QuantFormat.QDQ,
                                op_types_to_quantize=list(STATIC_OP_TYPES), activation_type=QuantType.QInt8,
                                weight_type=QuantType.QInt8, extra_options={"CalibTensorRangeSymmetric": False})
        except Exception as exc:  # onnxruntime.quantization raises bare exceptions of many kinds
            raise QuantizationError(f"onnx-static-int8: onnxruntime's quantize_static failed: {exc}") from None
        proto = onnx.load(str(quantized_path))
    if not any(node.op_type == "DequantizeLinear" for node in proto.graph.node):
        raise QuantizationError("onnx-static-int8: quantize_static found no LSTM or MatMul node to quantize")
    compact_onnx_names(proto)
    return proto.SerializeToString()


def compact_onnx_names(proto: onnx.ModelProto) -> None:
    """Drop value_info and shorten internal tensor and node names.

    Names are debugging aid only; in a 32-unit model they are a third of the quantized
    file. The graph's input/output names and metadata_props (the contract) are kept.
    """
    graph = proto.graph
    del graph.value_info[:]
    kept = {tensor.name for tensor in list(graph.input) + list(graph.output)}
    short: dict[str, str] = {}

    def rename(name: str) -> str:
        if not name or name in kept:
            return name
        return short.setdefault(name, f"t{len(short)}")

    for initializer in graph.initializer:
        initializer.name = rename(initializer.name)
    for index, node in enumerate(graph.node):
        node.name = f"n{index}"
        node.doc_string = ""
        node.input[:] = [rename(name) for name in node.input]
        node.output[:] = [rename(name) for name in node.output]


def tflite_weights_only(model: keras.Model, spec: Spec, float16: bool, calibration: Calibration | None = None) -> bytes:
    """fp16 or dynamic-range int8 weights on the same WHILE-loop graph as model.tflite (a
    schema-4 model's outputs with it)."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from .graph import raw_units_function
    from .tflite_export import TFLITE_BATCH

    function = raw_units_function(model, spec, batch=TFLITE_BATCH, calibration=calibration)
    frozen = convert_variables_to_constants_v2(function.get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen], model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if float16:
        converter.target_spec.supported_types = [tf.float16]
    return compact_tflite_names(_convert(converter, "tflite-fp16" if float16 else "tflite-dynamic-int8"))


def tflite_full_integer(
    model: keras.Model, spec: Spec, calibration_x: np.ndarray | None, int16_activations: bool,
    calibration: Calibration | None = None,
) -> bytes:
    """Every op integer but those without an integer kernel (the SIN/COS encodings and
    the ops around them stay float; the converter refuses anything else). A schema-4
    model's `calibration` adds its quantiles and exceedance: in int16 with the rest, in
    int8 beside it in float (`_int8_beside_float`)."""
    name = "tflite-int16x8" if int16_activations else "tflite-int8"
    samples = calibration_windows(calibration_x, spec, name)

    def representative() -> Iterator[list[np.ndarray]]:
        return ([window[np.newaxis]] for window in samples)

    def calibrate(converter: TFLiteConverterBaseV2) -> bytes:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        if calibration is not None and not int16_activations:
            return _int8_beside_float(converter, representative, name)
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS,
        ] if int16_activations else [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        return _convert(converter, name)

    if int16_activations:
        from .unrolled import unrolled_converter

        return compact_tflite_names(calibrate(unrolled_converter(model, spec, calibration)))
    return compact_tflite_names(_fused_int8(model, spec, calibrate, calibration))


# A schema-4 int8 file computes only these in integer. Through an int8 Log, Exp and Mean
# a Changping-like test model's probabilities moved by up to 0.54 and its quantiles by
# 28 µg/m³; with every other op kept float (TF's selective quantization, the quantization
# debugger's denylist) by 0.021 and 1.0, and its forecast by 0.99 instead of 1.44.
INTEGER_OPS = ("UNIDIRECTIONAL_SEQUENCE_LSTM", "FULLY_CONNECTED")
FLOAT_OPS = ("ADD", "SUB", "MUL", "DIV", "LOG", "EXP", "MEAN", "SUM", "MINIMUM", "MAXIMUM", "RELU", "PACK", "UNPACK",
             "RESHAPE", "EXPAND_DIMS", "SQUEEZE", "STRIDED_SLICE", "SLICE", "CONCATENATION", "GATHER", "CAST", "SIN",
             "COS", "GREATER_EQUAL", "LESS", "SELECT_V2", "LOGISTIC", "TANH", "SPLIT")


def _int8_beside_float(converter: TFLiteConverterBaseV2, representative: Callable[[], Iterator],
                       name: str) -> bytes:
    """int8 LSTM and dense layers (INTEGER_OPS); scaling, clip, quantiles and probabilities in float."""
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(FLOAT_OPS))
    try:
        with silenced_stderr():
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=representative, debug_options=options)
            return debugger.get_nondebug_quantized_model()
    except Exception as exc:  # the converter raises ConverterError and plain Exceptions
        raise QuantizationError(f"{name}: the TFLite converter refused: {str(exc).splitlines()[0]}") from None


def _fused_int8(model: keras.Model, spec: Spec, calibrate: Callable[[TFLiteConverterBaseV2], bytes],
                calibration: Calibration | None = None) -> bytes:
    from .fused_lstm import FUSED_OP, fused_converter
    from .oplist import tflite_ops

    try:
        with fused_converter(model, spec, calibration) as converter:
            data = calibrate(converter)
    except QuantizationError:
        raise
    except ExportError as exc:  # an LSTM the fused op cannot compute
        raise QuantizationError(f"tflite-int8: {exc}") from None
    except Exception as exc:  # saving the SavedModel it converts from; TF raises many kinds
        raise QuantizationError(f"tflite-int8: building the fused-LSTM graph failed: {str(exc).splitlines()[0]}") from None
    if FUSED_OP not in {op["op"] for op in tflite_ops(data)}:  # the converter fuses silently or not at all
        raise QuantizationError(f"tflite-int8: the TFLite converter did not fuse the LSTM into {FUSED_OP}")
    return data


def compact_tflite_names(data: bytes) -> bytes:
    """Drop tensor names except the main graph's inputs and outputs (as compact_onnx_names),
    and empty the buffers no tensor or metadata refers to.

    Signatures refer to tensors by index, so `window` and the output keep resolving. The
    full-integer converter leaves orphan buffers behind (beside the fused LSTM's variable
    state tensors) whose contents change from one conversion to the next: no op reads them,
    but they made two exports of one model differ.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(data, 0)
    used = {entry.buffer for entry in model.metadata or []}
    for index, subgraph in enumerate(model.subgraphs):
        kept = set(subgraph.inputs) | set(subgraph.outputs) if index == 0 else set()
        for position, tensor in enumerate(subgraph.tensors):
            used.add(tensor.buffer)
            if position not in kept:
                tensor.name = None
    for index, buffer in enumerate(model.buffers):
        if index not in used:
            buffer.data = None
    builder = flatbuffers.Builder(len(data))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def calibration_windows(calibration_x: np.ndarray | None, spec: Spec, mode_name: str) -> np.ndarray:
    """The bundle's raw-unit training windows plus constant windows across the training range."""
    shape = (spec.look_back, spec.n_features)
    if calibration_x is None or len(calibration_x) == 0:
        raise QuantizationError(
            f"{mode_name}: the bundle's windows.npz has no calibration_x (training windows) to calibrate on; "
            "retrain the bundle with this edgecast"
        )
    if calibration_x.shape[1:] != shape:
        raise QuantizationError(
            f"{mode_name}: calibration_x windows have shape {calibration_x.shape[1:]}, the model reads {shape}"
        )
    from .parity import raw_ranges  # per raw feature, encoded ones (directions, calendar) included

    low, high = (bound.astype(np.float32) for bound in raw_ranges(spec))
    levels = np.linspace(0.0, 1.0, RANGE_WINDOWS, dtype=np.float32)[:, None]
    constant = np.broadcast_to((low + levels * (high - low))[:, None, :], (RANGE_WINDOWS, *shape))
    return np.concatenate([calibration_x.astype(np.float32), constant])


def _convert(converter: TFLiteConverterBaseV2, mode_name: str) -> bytes:
    try:
        with silenced_stderr():
            return converter.convert()
    except Exception as exc:  # the converter raises ConverterError and plain Exceptions
        raise QuantizationError(f"{mode_name}: the TFLite converter refused: {str(exc).splitlines()[0]}") from None
