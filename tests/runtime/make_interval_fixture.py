"""Build fixtures/intervals/model.onnx: a schema-4 model (quantiles and exceedance
probabilities, docs/graph-contract.md) whose numbers a test can compute by hand,
with its manifest.json.

Run with the toolkit's Python (it needs onnx; tensorflow is not used):

    .venv/bin/python tests/runtime/make_interval_fixture.py

One feature (PM2.5, µg/m³, hourly), look-back 6, horizon 3, raw units. Per lead h:

    forecast[h] = mean(window)                       (the level)
    s[h]        = A[h] + B[h] * |forecast[h]|         (a logistic scale, widening with
                                                      the lead and with the level)
    quantiles[h, q] = max(forecast[h] + s[h] * logit(level_q), 0)
    exceedance[h, k] = sigmoid((forecast[h] - threshold_k) / s[h])   for op ">"
                       sigmoid((threshold_k - forecast[h]) / s[h])   for op "<"

that is the quantiles and probabilities of one logistic distribution per lead, so they
are consistent, and monotone along Q by construction (logit is increasing, s > 0, the
clip at 0 keeps the order). The output is deterministic: re-running writes the same bytes.
"""

import hashlib
import json

import numpy as np
import onnx
from make_fixtures import FIXTURES, IR_VERSION, OPSET, edgecast_metadata, spec_for, write
from onnx import TensorProto, helper, numpy_helper

LOOK_BACK, HORIZON = 6, 3
LEVELS = (0.05, 0.5, 0.95)
SCALE_BASE = (2.0, 2.5, 3.0)  # A[h], µg/m³
SCALE_SLOPE = (0.04, 0.05, 0.06)  # B[h], per µg/m³ of level
ALERTS = ({"name": "PM2.5>75", "column": "PM2.5", "op": ">", "threshold": 75.0},
          {"name": "PM2.5<10", "column": "PM2.5", "op": "<", "threshold": 10.0})
OUT = FIXTURES / "intervals"


def spec() -> dict:
    document = spec_for(LOOK_BACK, ["PM2.5"], HORIZON, 3600, [0.0], [1000.0])
    document.update(schema_version=4, scaler=None, target_min=0.0,
                    encodings=[{"feature": "PM2.5", "kind": "numeric"}], encoded_features=["PM2.5"],
                    probabilistic={"quantiles": list(LEVELS), "interval": 0.9, "alerts": list(ALERTS)})
    return document


def build() -> bytes:
    logits = np.log(np.array(LEVELS) / (1 - np.array(LEVELS))).astype(np.float32)
    signs = np.array([1.0 if a["op"] == ">" else -1.0 for a in ALERTS], np.float32)
    thresholds = np.array([a["threshold"] for a in ALERTS], np.float32)
    initializers = [
        numpy_helper.from_array(np.array([-1, LOOK_BACK], np.int64), "flat_shape"),
        numpy_helper.from_array(np.full((LOOK_BACK, HORIZON), 1.0 / LOOK_BACK, np.float32), "weights"),
        numpy_helper.from_array(np.array(SCALE_BASE, np.float32), "scale_base"),
        numpy_helper.from_array(np.array(SCALE_SLOPE, np.float32), "scale_slope"),
        numpy_helper.from_array(np.array([2], np.int64), "last_axis"),
        numpy_helper.from_array(logits, "logits"),
        numpy_helper.from_array(np.zeros(1, np.float32), "zero"),
        numpy_helper.from_array(thresholds, "thresholds"),
        numpy_helper.from_array(signs, "signs"),
    ]
    nodes = [
        helper.make_node("Reshape", ["window", "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "weights"], ["forecast"]),
        helper.make_node("Abs", ["forecast"], ["level"]),
        helper.make_node("Mul", ["level", "scale_slope"], ["level_spread"]),
        helper.make_node("Add", ["level_spread", "scale_base"], ["scale"]),
        helper.make_node("Unsqueeze", ["forecast", "last_axis"], ["centre"]),
        helper.make_node("Unsqueeze", ["scale", "last_axis"], ["scale3"]),
        helper.make_node("Mul", ["scale3", "logits"], ["offsets"]),
        helper.make_node("Add", ["centre", "offsets"], ["unclipped"]),
        helper.make_node("Max", ["unclipped", "zero"], ["quantiles"]),
        helper.make_node("Sub", ["centre", "thresholds"], ["above"]),
        helper.make_node("Mul", ["above", "signs"], ["signed"]),
        helper.make_node("Div", ["signed", "scale3"], ["standard"]),
        helper.make_node("Sigmoid", ["standard"], ["exceedance"]),
    ]
    graph = helper.make_graph(
        nodes, "edgecast_intervals",
        [helper.make_tensor_value_info("window", TensorProto.FLOAT, ["batch", LOOK_BACK, 1])],
        [helper.make_tensor_value_info("forecast", TensorProto.FLOAT, ["batch", HORIZON]),
         helper.make_tensor_value_info("quantiles", TensorProto.FLOAT, ["batch", HORIZON, len(LEVELS)]),
         helper.make_tensor_value_info("exceedance", TensorProto.FLOAT, ["batch", HORIZON, len(ALERTS)])],
        initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="edgecast-fixtures")
    model.ir_version = IR_VERSION
    for key, value in edgecast_metadata(spec(), "fixture-intervals", version="4").items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    return model.SerializeToString()


def main() -> None:
    data = build()
    write(OUT / "model.onnx", data)
    manifest = {"artifacts": {"model.onnx": {"bytes": len(data), "kind": "onnx",
                                             "sha256": hashlib.sha256(data).hexdigest()}},
                "created": "2026-01-01T00:00:00Z", "model_name": "fixture-intervals", "schema_version": 4}
    write(OUT / "manifest.json", (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())


if __name__ == "__main__":
    main()
