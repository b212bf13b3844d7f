"""Exports are reproducible: the same bundle exported twice gives byte-identical artifacts,
so a hub (its state file, its manifest check, a signed release) sees the same model."""
from __future__ import annotations

import hashlib
import shutil

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgecast.exporter.onnx_canonical import canonicalize
from edgecast.exporter.pipeline import export_bundle
from edgecast.trainer.bundle import TRAINER_FILES

QUANTIZE = ["onnx-int8", "tflite-int8"]  # the full-integer TFLite once left stray bytes behind


def sha256s(folder) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.iterdir()) if path.suffix in (".onnx", ".tflite")
    }


def test_the_same_bundle_exported_twice_gives_the_same_bytes(trained_bundle, tmp_path):
    digests = []
    for copy in ("first", "second"):
        bundle = tmp_path / copy / trained_bundle.name  # the bundle's name is in the metadata
        bundle.mkdir(parents=True)
        for name in TRAINER_FILES:
            shutil.copy2(trained_bundle / name, bundle / name)
        result = export_bundle(bundle, quantize=QUANTIZE, builtin_ops=True, progress=lambda _: None)
        assert result.refused == {}
        digests.append(sha256s(bundle))
    first, second = digests
    assert sorted(first) == sorted(
        ["model.onnx", "model.tflite", "model.builtin.tflite", "model.int8.onnx", "model.int8.tflite"]
    )
    assert first == second
    # The session's bundle was exported earlier in this process, with other tf2onnx counters.
    fixture = sha256s(trained_bundle)
    assert {name: first[name] for name in fixture} == fixture


def two_namings_of_one_graph():
    """One small graph written twice: other node order (both topological), other names."""
    rng = np.random.default_rng(0)
    weights = {name: rng.normal(size=shape).astype(np.float32) for name, shape in
               (("scale", [3]), ("shift", [3]), ("left", [3, 2]), ("right", [3, 2]), ("out", [2, 1]))}

    def build(names: dict[str, str], swap: bool) -> onnx.ModelProto:
        def n(key):
            return names.get(key, key)

        left = helper.make_node("MatMul", [n("scaled"), n("left")], [n("a")], name=n("left_node"))
        right = helper.make_node("MatMul", [n("scaled"), n("right")], [n("b")], name=n("right_node"))
        nodes = [
            helper.make_node("Sub", ["window", n("shift")], [n("centred")], name=n("sub_node")),
            helper.make_node("Mul", [n("centred"), n("scale")], [n("scaled")], name=n("mul_node")),
            *([right, left] if swap else [left, right]),
            helper.make_node("Mul", [n("a"), n("b")], [n("product")], name=n("product_node")),
            helper.make_node("MatMul", [n("product"), n("out")], ["forecast"], name=n("out_node")),
        ]
        initializers = [numpy_helper.from_array(value, n(key)) for key, value in weights.items()]
        if swap:
            initializers.reverse()
        graph = helper.make_graph(
            nodes, n("graph"), [helper.make_tensor_value_info("window", TensorProto.FLOAT, ["batch", 3])],
            [helper.make_tensor_value_info("forecast", TensorProto.FLOAT, ["batch", 1])], initializers,
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    counter = {key: f"{key}__{100 + i}" for i, key in enumerate(
        ["scaled", "left", "right", "a", "b", "centred", "shift", "scale", "product", "out", "graph",
         "left_node", "right_node", "sub_node", "mul_node", "product_node", "out_node"])}
    return build({}, swap=False), build(counter, swap=True)


def test_canonical_form_ignores_node_order_and_names_and_keeps_the_numbers():
    original, renamed = two_namings_of_one_graph()
    x = np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32)
    expected = ort.InferenceSession(original.SerializeToString()).run(None, {"window": x})[0]
    assert original.SerializeToString() != renamed.SerializeToString()
    for proto in (original, renamed):
        canonicalize(proto)
        onnx.checker.check_model(proto, full_check=True)
    assert original.SerializeToString() == renamed.SerializeToString()
    assert [i.name for i in original.graph.input] == ["window"]
    assert [o.name for o in original.graph.output] == ["forecast"]
    got = ort.InferenceSession(original.SerializeToString()).run(None, {"window": x})[0]
    np.testing.assert_array_equal(got, expected)
