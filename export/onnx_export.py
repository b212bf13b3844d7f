"""ONNX through tf2onnx's `from_function` (its `from_keras` fails on Keras 3 models)."""
from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import onnx

from edgecast_runtime.contract import (
    EXCEEDANCE_NAME,
    INPUT_NAME,
    NAME_KEY,
    OUTPUT_NAME,
    QUANTILES_NAME,
    SCHEMA_KEY,
    SPEC_KEY,
    schema_version_text,
)

from .errors import ExportError
from .graph import raw_units_function
from .onnx_canonical import canonicalize
from .onnx_clean import clean_graph
from .settings import DEFAULT_OPSET

if TYPE_CHECKING:
    import keras

    from edgecast.trainer.intervals import Calibration
    from edgecast_runtime.spec import Spec

# tf2onnx 1.17 is tested from opset 13 on; older opsets convert some graphs and fail
# others deep inside the converter, so they are refused up front.
OLDEST_OPSET = 13


def supported_opsets() -> range:
    from tf2onnx import constants

    return range(OLDEST_OPSET, max(constants.OPSET_TO_IR_VERSION) + 1)


def to_onnx(model: keras.Model, spec: Spec, model_name: str, opset: int = DEFAULT_OPSET,
            calibration: Calibration | None = None) -> bytes:
    """Serialized ONNX model: dynamic batch, scaling as graph ops, spec in metadata_props;
    a schema-4 spec's quantiles and exceedance outputs from `calibration`."""
    opsets = supported_opsets()
    if opset not in opsets:
        raise ExportError(f"opset {opset} is not supported by tf2onnx: choose {opsets.start}..{opsets.stop - 1}")
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.CRITICAL)  # failures reach the user as ExportError
    function = raw_units_function(model, spec, batch=None, calibration=calibration)
    try:
        proto, _ = tf2onnx.convert.from_function(function, input_signature=function.input_signature, opset=opset)
    except Exception as exc:  # tf2onnx raises bare exceptions of many kinds
        raise ExportError(f"tf2onnx could not convert the model at opset {opset}: {_first_line(exc)}") from None
    clean_graph(proto)  # exact rewrites only: see onnx_clean.py and benchmarks/README.md
    _name_dimensions(proto, spec)
    canonicalize(proto)  # the same model gives the same bytes: see onnx_canonical.py
    _attach_metadata(proto, spec, model_name)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the converted ONNX model fails onnx.checker: {_first_line(exc)}") from None
    return proto.SerializeToString()


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _name_dimensions(proto: onnx.ModelProto, spec: Spec) -> None:
    """Replace tf2onnx's `unk__N` batch dimension with a readable `batch`."""
    (window,) = [i for i in proto.graph.input if i.name == INPUT_NAME]
    probabilistic = spec.probabilistic
    expected = {INPUT_NAME: [spec.look_back, spec.n_features], OUTPUT_NAME: [spec.horizon]}
    if probabilistic is not None:
        expected.update({QUANTILES_NAME: [spec.horizon, len(probabilistic.quantiles)],
                         EXCEEDANCE_NAME: [spec.horizon, len(probabilistic.alerts)]})
    outputs = [o for o in proto.graph.output if o.name in expected]
    for tensor in (window, *outputs):
        dims = tensor.type.tensor_type.shape.dim
        dims[0].ClearField("dim_value")
        dims[0].dim_param = "batch"
        for dim, size in zip(dims[1:], expected[tensor.name]):
            dim.dim_value = size


def _attach_metadata(proto: onnx.ModelProto, spec: Spec, model_name: str) -> None:
    del proto.metadata_props[:]
    for key, value in (
        (SCHEMA_KEY, schema_version_text(spec.schema_version)),
        (SPEC_KEY, json.dumps(spec.to_dict(), separators=(",", ":"), ensure_ascii=False)),
        (NAME_KEY, model_name),
    ):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = (
        f"edgecast forecaster '{model_name}': window [batch, {spec.look_back}, {spec.n_features}] "
        f"in raw units -> forecast [batch, {spec.horizon}] of {spec.target} in raw units"
    )
