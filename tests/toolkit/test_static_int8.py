"""The static (QDQ) int8 ONNX export and `--quantize auto` (issue 28).

The dynamic int8 file scales activations per call, so a window's forecast moves with
the other windows of its batch; the static file's scales are fixed at calibration, so a
window gets the same forecast alone and inside any batch (a hypothesis property), and on
Changping it stays within 1 % of the float model's test RMSE."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import run_cli, train_and_export
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgecast.exporter.quantize import MODES, STATIC_OP_TYPES

STATIC = MODES["onnx-static-int8"].file
DYNAMIC = MODES["onnx-int8"].file


@pytest.fixture(scope="module")
def static_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_and_export(tmp_path_factory.mktemp("static-int8"), hours=400, seed=3, epochs=2,
                            quantize=["onnx-int8", "onnx-static-int8"])


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def windows_of(bundle: Path) -> np.ndarray:
    """Test windows, plus random ones reaching past the training range on both sides."""
    stored = np.load(bundle / "windows.npz")
    test_x = stored["test_x"].astype(np.float32)
    low, high = test_x.min(axis=(0, 1)), test_x.max(axis=(0, 1))
    rng = np.random.default_rng(0)
    wide = rng.uniform(low - 0.2 * (high - low), high + 0.2 * (high - low), size=(64, *test_x.shape[1:]))
    return np.concatenate([test_x, wide.astype(np.float32)])


batches = st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=300)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(picks=batches, position=st.integers(min_value=0, max_value=10_000))
def test_static_int8_forecast_of_a_window_does_not_depend_on_its_batch(static_bundle, picks, position):
    model, pool = session(static_bundle / STATIC), windows_of(static_bundle)
    batch = pool[np.asarray(picks) % len(pool)]
    index = position % len(batch)
    alone = model.run(["forecast"], {"window": batch[index : index + 1]})[0][0]
    inside = model.run(["forecast"], {"window": batch})[0][index]
    np.testing.assert_array_equal(alone, inside)


def test_dynamic_int8_does_depend_on_its_batch_where_static_does_not(static_bundle):
    """The property above can fail: the dynamic file breaks it on the same windows."""
    pool = windows_of(static_bundle)
    window = pool[:1]
    with_extremes = np.concatenate([window, pool[-64:] * 3])
    dynamic, static = session(static_bundle / DYNAMIC), session(static_bundle / STATIC)
    moved = np.abs(dynamic.run(None, {"window": window})[0][0] - dynamic.run(None, {"window": with_extremes})[0][0])
    assert moved.max() > 1e-3
    np.testing.assert_array_equal(static.run(None, {"window": window})[0][0],
                                  static.run(None, {"window": with_extremes})[0][0])


def test_static_int8_quantizes_the_lstm_and_matmul_weights_and_is_listed(static_bundle):
    proto = onnx.load(str(static_bundle / STATIC))
    ops = [node.op_type for node in proto.graph.node]
    assert "DynamicQuantizeLinear" not in ops and not any(n.domain == "com.microsoft" for n in proto.graph.node)
    assert ops.count("LSTM") == 1 and "QuantizeLinear" in ops
    initializers = {tensor.name: tensor for tensor in proto.graph.initializer}
    produced_by = {output: node for node in proto.graph.node for output in node.output}
    (lstm,) = [node for node in proto.graph.node if node.op_type == "LSTM"]
    for weight in lstm.input[1:3]:  # W and R reach the float LSTM kernel through DequantizeLinear of int8
        source = produced_by[weight]
        assert source.op_type == "DequantizeLinear"
        assert initializers[source.input[0]].data_type == onnx.TensorProto.INT8
    matmuls = [node for node in proto.graph.node if node.op_type == "MatMul"]
    assert matmuls and all(produced_by[node.input[1]].op_type == "DequantizeLinear" for node in matmuls)
    assert STATIC_OP_TYPES == ("LSTM", "MatMul")
    entry = json.loads((static_bundle / "manifest.json").read_text())["artifacts"][STATIC]
    assert (entry["mode"], entry["precision"], entry["batch"]) == ("onnx-static-int8", "static-int8", "dynamic")
    assert entry["batch_effect"] == 0.0 if "batch_effect" in entry else True
    # the runtime serves it as any model file
    from edgecast_runtime import Forecaster

    window = windows_of(static_bundle)[0]
    forecaster = Forecaster(static_bundle / STATIC)
    np.testing.assert_allclose(forecaster.predict(window), session(static_bundle / STATIC).run(
        None, {"window": window[np.newaxis]})[0][0], atol=1e-6)


def test_quantize_auto_keeps_the_smallest_file_per_backend_within_the_budget(static_bundle, tmp_path):
    import shutil

    bundle = tmp_path / "auto"
    shutil.copytree(static_bundle, bundle)
    done = run_cli("export", bundle, "--quantize", "auto", "--max-rmse-change", "1%")
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = json.loads((bundle / "manifest.json").read_text())
    auto = manifest["quantization"]["auto"]
    assert auto["max_rmse_change_pct"] == 1.0
    assert set(auto["chosen"]) == {"onnx", "tflite"}
    accuracy = manifest["quantization"]["accuracy"]["artifacts"]
    for kind, chosen in auto["chosen"].items():
        assert (bundle / chosen).is_file() and chosen in manifest["artifacts"]
        assert auto["candidates"][chosen]["verdict"].startswith("chosen")
        assert chosen.endswith(f".{kind}")
    for name, verdict in auto["candidates"].items():
        assert verdict["verdict"], name
        if name in auto["chosen"].values():
            continue
        if name not in ("model.onnx", "model.tflite"):
            assert not (bundle / name).exists() and name not in manifest["artifacts"], name  # not kept
        if "bytes" in verdict and verdict["verdict"].startswith("within the budget"):
            kind = name.rsplit(".", 1)[1]
            assert verdict["bytes"] >= auto["candidates"][auto["chosen"][kind]]["bytes"], name
        if verdict["verdict"].startswith("test RMSE"):
            assert verdict["rmse_change_pct"] > 1.0
    # the dynamic file moves with its batch: never chosen, and said so
    assert auto["candidates"][DYNAMIC]["verdict"].startswith(("batch-dependent", "test RMSE"))
    chosen_onnx = auto["chosen"]["onnx"]
    assert accuracy[chosen_onnx]["rmse_change_pct"] <= 1.0 or chosen_onnx == "model.onnx"
    assert "chosen" in done.stdout or (bundle / chosen_onnx).is_file()

    # a budget of 0 keeps only what costs nothing: files over it say by how much
    done = run_cli("export", bundle, "--quantize", "auto", "--max-rmse-change", "0")
    assert done.returncode == 0, done.stderr[-2000:]
    auto = json.loads((bundle / "manifest.json").read_text())["quantization"]["auto"]
    for name, verdict in auto["candidates"].items():
        if verdict.get("rmse_change_pct", 0) > 0 and name not in ("model.onnx", "model.tflite"):
            assert "over the 0% budget" in verdict["verdict"], (name, verdict)


@pytest.mark.parametrize("value, fragment", [("abc", "is not a percentage"), ("-1%", "--max-rmse-change")])
def test_a_bad_budget_is_one_line_naming_the_flag(static_bundle, value, fragment):
    done = run_cli("export", static_bundle, "--quantize", "auto", "--max-rmse-change", value)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert fragment in done.stderr


def test_changping_static_int8_is_within_one_percent_and_batch_independent(shared_changping, tmp_path):
    """Real data, a small model (look-back 24, 8 units, one epoch): the static file's test
    RMSE within 1 % of the float model's, and the same forecasts at batch 1 and 256."""
    from edgecast.exporter.pipeline import export_bundle
    from edgecast.trainer.data import load_csv
    from edgecast.trainer.pipeline import TrainConfig, train

    series = load_csv(shared_changping, "PM2.5")
    result = train(series, TrainConfig(look_back=24, units=8, epochs=1), tmp_path / "changping")
    exported = export_bundle(result.path, progress=lambda _: None, tflite=False, quantize=["onnx-static-int8"])
    row = exported.accuracy.artifacts[STATIC]
    assert row.rmse_change_pct <= 1.0, (row.rmse, exported.accuracy.float_model)
    assert row.batch_effect == 0.0
