"""Build fixtures/skill/ar24.onnx: a least-squares autoregression of Changping's
hourly PM2.5 on its last 24 readings, six leads (the "ridge on 24 lags" baseline of
../shared/data/README.md, without the ridge), fitted on the first two years
(2013-03 to 2015-02). On the later years it is about as good as persistence (an RMSE
ratio a little under 1, wandering above it for days at a time), which is what a skill
alarm without a margin flaps on; test_skill_alarm.py replays those years.

fixtures/skill/ar24_short.onnx is the same autoregression fitted on the first 60 days
only: other weights, the same inputs, a little worse later on: the challenger that
test_shadow.py runs in shadow beside ar24.

Run with the toolkit's Python (it needs onnx and pandas):

    .venv/bin/python tests/runtime/make_skill_fixture.py

The graph is the contract's `window` [batch, 24, 1] -> Reshape -> MatMul -> Add ->
`forecast` [batch, 6], in raw units (µg/m³). The fit is deterministic: re-running
writes the same bytes.
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
from make_fixtures import FIXTURES, IR_VERSION, OPSET, edgecast_metadata, spec_for, write
from onnx import TensorProto, helper, numpy_helper

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CHANGPING = DATA / "PRSA_Data_Changping_20130301-20170228.csv"
LOOK_BACK, HORIZON = 24, 6
FIT_ROWS = 730 * 24  # 2013-03-01 to 2015-02-28


def fit(series: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ordinary least squares over every window whose inputs and targets are all present."""
    span = LOOK_BACK + HORIZON
    frames = np.lib.stride_tricks.sliding_window_view(series, span)
    frames = frames[~np.isnan(frames).any(axis=1)]
    inputs = np.hstack([frames[:, :LOOK_BACK], np.ones((len(frames), 1))])
    solution, *_ = np.linalg.lstsq(inputs, frames[:, LOOK_BACK:], rcond=None)
    return solution[:-1].astype(np.float32), solution[-1].astype(np.float32)


SHORT_FIT_ROWS = 60 * 24


def build(weights: np.ndarray, bias: np.ndarray, name: str = "fixture-ar24") -> bytes:
    spec = spec_for(LOOK_BACK, ["PM2.5"], HORIZON, 3600, [0.0], [1000.0])
    spec["scaler"] = None  # the graph works in raw units
    nodes = [helper.make_node("Reshape", ["window", "flat_shape"], ["flat"]),
             helper.make_node("MatMul", ["flat", "weights"], ["linear"]),
             helper.make_node("Add", ["linear", "bias"], ["forecast"])]
    initializers = [numpy_helper.from_array(np.array([-1, LOOK_BACK], dtype=np.int64), "flat_shape"),
                    numpy_helper.from_array(weights, "weights"),
                    numpy_helper.from_array(bias, "bias")]
    graph = helper.make_graph(
        nodes, "edgecast_ar24",
        [helper.make_tensor_value_info("window", TensorProto.FLOAT, ["batch", LOOK_BACK, 1])],
        [helper.make_tensor_value_info("forecast", TensorProto.FLOAT, ["batch", HORIZON])],
        initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="edgecast-fixtures")
    model.ir_version = IR_VERSION
    for key, value in edgecast_metadata(spec, name).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    return model.SerializeToString()


def main() -> int:
    if not CHANGPING.exists():
        print(f"{CHANGPING} is absent (../shared/data)", file=sys.stderr)
        return 1
    series = pd.read_csv(CHANGPING, usecols=["PM2.5"], nrows=FIT_ROWS)["PM2.5"].to_numpy(np.float64)
    weights, bias = fit(series)
    write(FIXTURES / "skill" / "ar24.onnx", build(weights, bias))
    write(FIXTURES / "skill" / "ar24_short.onnx", build(*fit(series[:SHORT_FIT_ROWS]), "fixture-ar24-short"))
    print(json.dumps({"weights_sum": [round(float(w), 4) for w in weights.sum(axis=0)],
                      "bias": [round(float(b), 3) for b in bias]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
