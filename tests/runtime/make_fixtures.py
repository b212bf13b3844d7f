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


def contract_graph(nodes, initializers, metadata, look_back="steps", n_features="features",
                   horizon="horizon", check=True):
    """A model with the contract's input and output (float32 `window` [batch, look_back,
    n_features] -> `forecast` [batch, horizon]; a dimension given as text is dynamic)
    around `nodes`, for the hostile models below."""
    graph = helper.make_graph(
        nodes, "edgecast_hostile",
        [helper.make_tensor_value_info("window", TensorProto.FLOAT, ["batch", look_back, n_features])],
        [helper.make_tensor_value_info("forecast", TensorProto.FLOAT, ["batch", horizon])],
        initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="edgecast-fixtures")
    model.ir_version = IR_VERSION
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    if check:
        onnx.checker.check_model(model)
    return model.SerializeToString()


def window_mean(output="level"):
    """Nodes computing mean(window) per window as [batch, 1]."""
    return [helper.make_node("ReduceMean", ["window"], [output], axes=[1, 2], keepdims=0),
            helper.make_node("Unsqueeze", [output, "unsqueeze_axes"], [output + "_col"])]


MEAN_INITIALIZERS = [numpy_helper.from_array(np.array([1], dtype=np.int64), "unsqueeze_axes")]


def hostile_models(one):
    """Models that attack the runtime while keeping to the graph contract (see
    tests/runtime/test_hostile_models.py for what each one did before it was refused)."""
    def metadata(spec_text, name):
        return {"edgecast.schema_version": "1", "edgecast.spec": spec_text,
                "edgecast.model_name": name}

    one_text = json.dumps(one, sort_keys=True)
    # The spec nested 5000 levels deep under a key the runtime ignores: RecursionError.
    deep = one_text[:-1] + ', "notes": ' + "[" * 5000 + "]" * 5000 + "}"
    plain_one = dict(one, input={"name": "window"}, output={"name": "forecast"})
    # forecast = mean(window): a sound graph with dynamic dimensions, whose spec asks for
    # a window of 10^12 steps (np.zeros of 4 TB).
    huge = json.dumps(dict(plain_one, look_back=10**12), sort_keys=True)
    # forecast = mean(window) + 0 * sum(ConstantOfShape([10^8])): 400 MB folded at load.
    bomb_nodes = window_mean() + [
        helper.make_node("ConstantOfShape", ["bomb_shape"], ["big"],
                         value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])),
        helper.make_node("ReduceSum", ["big"], ["total"], keepdims=1),
        helper.make_node("Mul", ["total", "zero"], ["nothing"]),
        helper.make_node("Add", ["level_col", "nothing"], ["forecast"])]
    bomb_initializers = MEAN_INITIALIZERS + [
        numpy_helper.from_array(np.array([10**8], dtype=np.int64), "bomb_shape"),
        numpy_helper.from_array(np.zeros(1, dtype=np.float32), "zero")]
    # forecast = 0 * mean(window) + the first 4 bytes of ./planted.bin, as numbers.
    leak = TensorProto(name="leak", data_type=TensorProto.UINT8, dims=[1, 4],
                       data_location=TensorProto.EXTERNAL)
    for key, value in (("location", "planted.bin"), ("offset", "0"), ("length", "4")):
        entry = leak.external_data.add()
        entry.key, entry.value = key, value
    leak_nodes = window_mean() + [
        helper.make_node("Mul", ["level_col", "zero"], ["nothing"]),
        helper.make_node("Cast", ["leak"], ["leaked"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["nothing", "leaked"], ["forecast"])]
    leak_initializers = MEAN_INITIALIZERS + [
        leak, numpy_helper.from_array(np.zeros(1, dtype=np.float32), "zero")]
    # A node whose name is a line break and a JSON log line, in a graph that fails when
    # run (4 values cannot be reshaped to 3 rows): onnxruntime logs the name on stderr.
    forged_name = '\n{"ts": "2026-01-01T00:00:00.000Z", "event": "reloaded", "forged": true}\n'
    forged_nodes = window_mean() + [
        helper.make_node("Reshape", ["window", "three_rows"], ["rows"], name=forged_name),
        helper.make_node("ReduceSum", ["rows"], ["total"], keepdims=1),
        helper.make_node("Mul", ["total", "zero"], ["nothing"]),
        helper.make_node("Add", ["level_col", "nothing"], ["forecast"])]
    forged_initializers = MEAN_INITIALIZERS + [
        numpy_helper.from_array(np.array([3, -1], dtype=np.int64), "three_rows"),
        numpy_helper.from_array(np.zeros(1, dtype=np.float32), "zero")]
    leak_spec = json.dumps(dict(plain_one, horizon=4), sort_keys=True)
    return {
        "deep_spec.onnx": build_model(4, 1, 1, [10.0], [200.0],
                                      metadata=metadata(deep, "hostile-deep-spec")),
        "huge_look_back.onnx": contract_graph(window_mean("forecast_flat")[:1] + [
            helper.make_node("Unsqueeze", ["forecast_flat", "unsqueeze_axes"], ["forecast"])],
            MEAN_INITIALIZERS, metadata(huge, "hostile-huge-look-back"), horizon=1),
        "constant_bomb.onnx": contract_graph(bomb_nodes, bomb_initializers,
                                             metadata(json.dumps(plain_one, sort_keys=True),
                                                      "hostile-constant-bomb"), 4, 1, 1),
        "external_data.onnx": contract_graph(leak_nodes, leak_initializers,
                                             metadata(leak_spec, "hostile-external-data"),
                                             4, 1, 4, check=False),
        "forged_log.onnx": contract_graph(forged_nodes, forged_initializers,
                                          metadata(json.dumps(plain_one, sort_keys=True),
                                                   "hostile-forged-log"), 4, 1, 1),
    }


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
    for name, data in hostile_models(one).items():
        write(FIXTURES / "hostile" / name, data)

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
