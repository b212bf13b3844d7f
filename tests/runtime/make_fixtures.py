"""Build the small ONNX models the runtime tests use, honoring docs/graph-contract.md.

Run with a toolkit Python that has `onnx` (the runtime test environment does not):

    python tests/runtime/make_fixtures.py

Each model is: raw window -> MinMax scaling (Mul, Add) -> a linear layer (MatMul,
Add) -> inverse scaling (Sub, Div) -> forecast. Its weights make the forecast easy
to compute independently in the tests:

    forecast[h] = mean(window[:, 0]) + (h + 1) + offset

(`offset` is 0 for the v1 models and 1000 for the v2 one, so answers tell the
versions apart). The output is deterministic: re-running writes identical bytes.

The schema-2 fixture (fixtures/schema2/, a real tiny export with wind direction and
calendar inputs) is made by make_schema2_fixture.py with the toolkit's Python.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FIXTURES = Path(__file__).resolve().parent / "fixtures"
OPSET = 17
IR_VERSION = 8  # loadable by every onnxruntime the runtime supports (>= 1.17)


def spec_for(look_back, features, horizon, interval, data_min, data_max):
    return {
        "schema_version": 1,
        "target": features[0],
        "features": features,
        "look_back": look_back,
        "horizon": horizon,
        "interval_seconds": interval,
        "time_columns": [],
        "scaler": {"kind": "minmax", "feature_range": [0.0, 1.0],
                   "data_min": data_min, "data_max": data_max},
        "gap_policy": {"max_gap": 6, "method": "linear"},
        "input": {"name": "window", "dtype": "float32",
                  "shape": ["batch", look_back, len(features)], "units": "raw"},
        "output": {"name": "forecast", "dtype": "float32",
                   "shape": ["batch", horizon], "units": "raw"},
    }


def build_model(look_back, n_features, horizon, data_min, data_max, offset=0.0,
                input_name="window", metadata=None, suffix=""):
    """The graph described in the module docstring, with `metadata` as metadata_props.
    `suffix` renames the inner tensors, as a converter run again may (tf2onnx does):
    other bytes, the same model."""
    data_min = np.asarray(data_min, dtype=np.float32)
    data_max = np.asarray(data_max, dtype=np.float32)
    scale = (1.0 / (data_max - data_min)).astype(np.float32)
    shift = (-data_min * scale).astype(np.float32)
    weights = np.zeros((look_back * n_features, horizon), dtype=np.float32)
    weights[0::n_features, :] = 1.0 / look_back  # mean of the scaled target column
    steps = np.arange(1, horizon + 1, dtype=np.float32)
    bias = ((steps + offset) * scale[0]).astype(np.float32)

    initializers = [
        numpy_helper.from_array(scale, "scale"),
        numpy_helper.from_array(shift, "shift"),
        numpy_helper.from_array(np.array([-1, look_back * n_features], dtype=np.int64), "flat_shape"),
        numpy_helper.from_array(weights, "weights"),
        numpy_helper.from_array(bias, "bias"),
        numpy_helper.from_array(shift[:1].copy(), "target_shift"),
        numpy_helper.from_array(scale[:1].copy(), "target_scale"),
    ]
    a, b, c, d, e, f = (name + suffix for name in ("scaled_a", "scaled", "flat", "y_mm", "y",
                                                    "y_shifted"))
    nodes = [
        helper.make_node("Mul", [input_name, "scale"], [a]),
        helper.make_node("Add", [a, "shift"], [b]),
        helper.make_node("Reshape", [b, "flat_shape"], [c]),
        helper.make_node("MatMul", [c, "weights"], [d]),
        helper.make_node("Add", [d, "bias"], [e]),
        helper.make_node("Sub", [e, "target_shift"], [f]),
        helper.make_node("Div", [f, "target_scale"], ["forecast"]),
    ]
    graph = helper.make_graph(
        nodes, "edgecast_fixture",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT,
                                       ["batch", look_back, n_features])],
        [helper.make_tensor_value_info("forecast", TensorProto.FLOAT, ["batch", horizon])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="edgecast-fixtures")
    model.ir_version = IR_VERSION
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    return model.SerializeToString()


def edgecast_metadata(spec, name, version="1"):
    return {"edgecast.schema_version": version,
            "edgecast.spec": json.dumps(spec, sort_keys=True),
            "edgecast.model_name": name}


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    print(f"{path.relative_to(FIXTURES.parent)}: {len(data)} bytes")


def main() -> None:
    one = spec_for(4, ["PM2.5"], 1, 3600, [10.0], [200.0])
    one_args = {"look_back": 4, "n_features": 1, "horizon": 1, "data_min": [10.0], "data_max": [200.0]}
    three = spec_for(6, ["PM2.5", "TEMP", "PRES"], 3, 60,
                     [3.0, -20.0, 990.0], [500.0, 40.0, 1040.0])
    three_args = {"look_back": 6, "n_features": 3, "horizon": 3,
                      "data_min": [3.0, -20.0, 990.0], "data_max": [500.0, 40.0, 1040.0]}

    one_model = build_model(**one_args, metadata=edgecast_metadata(one, "fixture-one"))
    # Valid ranges of readings; TEMP is not a feature of this model, so it is ignored.
    ranged = dict(one, valid_ranges={"PM2.5": [0.0, 500.0], "TEMP": [-40.0, None]})
    files = {
        "one_feature.onnx": one_model,
        "one_feature_v2.onnx": build_model(**one_args, offset=1000.0,
                                           metadata=edgecast_metadata(one, "fixture-one-v2")),
        "one_feature_reexport.onnx": build_model(**one_args, suffix="_1",
                                                 metadata=edgecast_metadata(one, "fixture-one")),
        "one_feature_ranges.onnx": build_model(
            **one_args, metadata=edgecast_metadata(ranged, "fixture-one-ranges")),
        "bad_valid_ranges.onnx": build_model(**one_args, metadata=edgecast_metadata(
            dict(one, valid_ranges={"PM2.5": [500.0, 0.0]}), "fixture-bad-ranges")),
        "three_features.onnx": build_model(**three_args,
                                           metadata=edgecast_metadata(three, "fixture-three")),
        "schema_99.onnx": build_model(**one_args,
                                      metadata=edgecast_metadata(one, "fixture-99", version="99")),
        "no_metadata.onnx": build_model(**one_args),
        "spec_mismatch.onnx": build_model(
            **one_args, metadata=edgecast_metadata(dict(one, look_back=5, input=dict(
                one["input"], shape=["batch", 5, 1])), "fixture-mismatch")),
        "missing_spec.onnx": build_model(
            **one_args, metadata={"edgecast.schema_version": "1"}),
        "bad_spec_json.onnx": build_model(
            **one_args, metadata={"edgecast.schema_version": "1", "edgecast.spec": "{not json"}),
        "wrong_input_name.onnx": build_model(**one_args, input_name="input",
                                             metadata=edgecast_metadata(one, "fixture-input")),
        "truncated.onnx": one_model[: len(one_model) // 2],
    }
    for name, data in files.items():
        write(FIXTURES / name, data)

    # A model with its manifest, as `edgecast export` lays them out in a bundle.
    write(FIXTURES / "bundle" / "model.onnx", one_model)
    manifest = {
        "schema_version": 1,
        "model_name": "fixture-one",
        "created": "2026-01-01T00:00:00Z",
        "artifacts": {"model.onnx": {"sha256": hashlib.sha256(one_model).hexdigest(),
                                     "bytes": len(one_model), "kind": "onnx"}},
    }
    write(FIXTURES / "bundle" / "manifest.json",
          (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())


if __name__ == "__main__":
    main()
