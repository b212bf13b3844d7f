"""export/onnx_clean.py: tf2onnx's leftovers go, the numbers stay exactly the same."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgecast.base import import_tensorflow
from edgecast.exporter.onnx_clean import clean_graph
from edgecast.trainer.model import build_model

tf = import_tensorflow()


def convert(model, look_back: int, n_features: int) -> onnx.ModelProto:
    import tf2onnx

    signature = tf.TensorSpec([None, look_back, n_features], tf.float32, name="window")

    @tf.function(input_signature=[signature])
    def forecast(window):
        return {"forecast": model(window, training=False)}

    proto, _ = tf2onnx.convert.from_function(forecast, input_signature=forecast.input_signature, opset=17)
    return proto


def run(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["forecast"], {"window": x})[0]


@pytest.mark.parametrize(
    "shape",
    [
        {"look_back": 6, "n_features": 1, "horizon": 1, "units": 4, "layers": 1},
        {"look_back": 5, "n_features": 2, "horizon": 3, "units": 3, "layers": 2, "linear_skip": True},
    ],
    ids=["one-layer", "two-layers-linear-skip"],
)
def test_clean_graph_is_exact_and_drops_the_shape_arithmetic(shape):
    model = build_model(learning_rate=1e-3, **shape)
    proto = convert(model, shape["look_back"], shape["n_features"])
    entry = proto.metadata_props.add()
    entry.key, entry.value = "edgecast.schema_version", "1"
    original = onnx.ModelProto()
    original.CopyFrom(proto)

    changes = clean_graph(proto)

    assert changes, "the tf2onnx patterns were not found"
    onnx.checker.check_model(proto, full_check=True)
    ops = [node.op_type for node in proto.graph.node]
    assert "Shape" not in ops and "Expand" not in ops
    assert len(ops) < len(original.graph.node)
    for lstm in (n for n in proto.graph.node if n.op_type == "LSTM"):
        assert len(lstm.input) <= 5 or not any(lstm.input[5:7])  # default (zero) initial states
    assert [(p.key, p.value) for p in proto.metadata_props] == [("edgecast.schema_version", "1")]
    x = np.random.default_rng(1).normal(size=(7, shape["look_back"], shape["n_features"])).astype(np.float32)
    np.testing.assert_array_equal(run(proto, x), run(original, x))
    np.testing.assert_array_equal(run(proto, x[:1]), run(original, x[:1]))


def test_clean_graph_leaves_a_graph_without_the_patterns_alone():
    window = onnx.helper.make_tensor_value_info("window", onnx.TensorProto.FLOAT, ["batch", 3, 1])
    forecast = onnx.helper.make_tensor_value_info("forecast", onnx.TensorProto.FLOAT, ["batch", 3, 1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["window"], ["forecast"])], "g", [window], [forecast])
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    before = proto.SerializeToString()
    assert clean_graph(proto) == []
    assert proto.SerializeToString() == before
