"""Build fixtures/hostile/value_loop.onnx: a model whose run time depends on the
input's values (issue 26). Within the graph contract (float32 `window` [batch, 4, 1]
-> `forecast` [batch, 1] = mean(window)), it runs a Loop whose trip count is the
largest value of the window: nothing on a window of zeros (the trial passes it), about
a microsecond per unit of the largest reading after that (a reading of 6e6 held the
stream lock for 4.6 s; one of 1e9 for about 12 minutes). tests/runtime/test_run_deadline.py
stops it with the runtime's run_timeout.

Run with a toolkit Python that has `onnx` (the runtime test environment does not):

    python tests/runtime/make_slow_fixture.py
"""

import json

import numpy as np
from make_fixtures import FIXTURES, MEAN_INITIALIZERS, contract_graph, spec_for, window_mean, write
from onnx import TensorProto, helper, numpy_helper


def value_loop_model() -> bytes:
    one = spec_for(4, ["PM2.5"], 1, 3600, [10.0], [200.0])
    spec = dict(one, input={"name": "window"}, output={"name": "forecast"})
    # The loop's body: carry the condition, add one to a counter.
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["count_in", "one"], ["count_out"])],
        "spin",
        [helper.make_tensor_value_info("step", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("count_in", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("count_out", TensorProto.FLOAT, [1])],
        [numpy_helper.from_array(np.ones(1, np.float32), "one")])
    # forecast = mean(window) + 0 * (a count up to the largest value of the window)
    nodes = window_mean() + [
        helper.make_node("ReduceMax", ["window"], ["largest"], keepdims=0),
        helper.make_node("Cast", ["largest"], ["trips"], to=TensorProto.INT64),
        helper.make_node("Loop", ["trips", "", "count_start"], ["count"], body=body),
        helper.make_node("Mul", ["count", "zero"], ["nothing"]),
        helper.make_node("Add", ["level_col", "nothing"], ["forecast"])]
    initializers = MEAN_INITIALIZERS + [
        numpy_helper.from_array(np.zeros(1, np.float32), "zero"),
        numpy_helper.from_array(np.zeros(1, np.float32), "count_start")]
    metadata = {"edgecast.schema_version": "1", "edgecast.spec": json.dumps(spec, sort_keys=True),
                "edgecast.model_name": "hostile-value-loop"}
    return contract_graph(nodes, initializers, metadata, 4, 1, 1)


if __name__ == "__main__":
    write(FIXTURES / "hostile" / "value_loop.onnx", value_loop_model())
