"""Quantized exports, the builtin-ops-only TFLite graph, and what verify reports about them."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import hourly_frame, run_cli, train_and_export

from edgecast.exporter.fused_lstm import FUSED_OP
from edgecast.exporter.oplist import (
    builtin_only_problems,
    has_variable_state,
    onnx_summary,
    tflite_ops,
    tflite_summary,
)
from edgecast.exporter.parity import TOLERANCE, random_windows, reference_forecast, tflite_forecast
from edgecast.exporter.pipeline import export_bundle, verify_bundle
from edgecast.exporter.quantize import MODES, QuantizationError, calibration_windows, check_modes
from edgecast.trainer.bundle import read_bundle
from edgecast_runtime.contract import BUILTIN_TFLITE_FILE as BUILTIN_FILE
from edgecast_runtime.contract import WINDOWS_FILE
from edgecast_runtime.manifest import file_sha256

ALL_MODES = list(MODES)


@pytest.fixture(scope="module")
def quantized_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Exported in every form once for this module."""
    return train_and_export(tmp_path_factory.mktemp("quantized"), hours=400, seed=2, epochs=2,
                            quantize=ALL_MODES, builtin_ops=True)


def interpreter_ops(path: Path) -> list[str]:
    """LiteRT's own op list, with XNNPACK off so ops are not reported as DELEGATE."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    return sorted(op["op_name"] for op in interpreter._get_ops_details())


def manifest_of(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def test_every_mode_is_its_own_listed_artifact(quantized_bundle):
    manifest = manifest_of(quantized_bundle)
    assert manifest["quantization"]["refused"] == {}
    for mode in MODES.values():
        entry = manifest["artifacts"][mode.file]
        assert entry["sha256"] == file_sha256(quantized_bundle / mode.file)
        assert entry["bytes"] == (quantized_bundle / mode.file).stat().st_size
        assert (entry["kind"], entry["precision"], entry["mode"]) == (mode.kind, mode.precision, mode.name)
    assert manifest["artifacts"][BUILTIN_FILE]["precision"] == "float32"
    # Quantized files are not held to parity; only the float32 ones are.
    assert {check["artifact"] for check in manifest["parity"]["checks"]} == {"model.onnx", "model.tflite", BUILTIN_FILE}


def test_builtin_tflite_has_only_builtin_ops_and_keras_parity(quantized_bundle):
    path = quantized_bundle / BUILTIN_FILE
    ops = {op["op"] for op in tflite_ops(path)}
    assert builtin_only_problems(path) == []
    assert not any(op.startswith("CUSTOM") for op in ops)
    assert not ops & {"WHILE", "IF", "VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "CALL_ONCE"}
    assert {"FULLY_CONNECTED", "LOGISTIC", "TANH"} <= ops
    assert interpreter_ops(path) == sorted(op["op"] for op in tflite_ops(path))  # one subgraph: both readings agree
    bundle = read_bundle(quantized_bundle)
    model = bundle.load_model()
    for x in (bundle.windows()["test_x"][:40], random_windows(bundle.spec, seed=5)[:40]):
        np.testing.assert_allclose(tflite_forecast(path, x), reference_forecast(model, bundle.spec, x), atol=TOLERANCE)


def test_builtin_check_rejects_control_flow_and_resource_variables(quantized_bundle, tmp_path):
    import tensorflow as tf

    assert any("WHILE" in problem for problem in builtin_only_problems(quantized_bundle / "model.tflite"))

    holder = tf.Module()
    holder.counter = tf.Variable(tf.zeros([1, 2]))

    @tf.function(input_signature=[tf.TensorSpec([1, 2], tf.float32)])
    def accumulate(x):
        holder.counter.assign_add(x)
        return holder.counter.read_value()

    converter = tf.lite.TFLiteConverter.from_concrete_functions([accumulate.get_concrete_function()], holder)
    converter.experimental_enable_resource_variables = True
    problems = builtin_only_problems(converter.convert())
    assert any("resource-variable op" in problem for problem in problems)


def test_onnx_int8_quantizes_the_lstm_and_runs_in_plain_onnxruntime(quantized_bundle):
    path = quantized_bundle / "model.int8.onnx"
    summary = onnx_summary(path)
    assert summary["quantized_ops"].get("com.microsoft.DynamicQuantizeLSTM") == 1
    assert "MatMulInteger" in summary["quantized_ops"] and "LSTM" not in summary["ops"]
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    bundle = read_bundle(quantized_bundle)
    assert json.loads(meta["edgecast.spec"]) == bundle.spec.to_dict() and meta["edgecast.schema_version"] == "1"

    x = bundle.windows()["test_x"][:7]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (output,) = session.get_outputs()
    assert [i.name for i in session.get_inputs()] == ["window"] and output.name == "forecast"
    quantized = session.run(None, {"window": x})[0]
    expected = reference_forecast(bundle.load_model(), bundle.spec, x)
    target_range = bundle.spec.scaler.data_max[0] - bundle.spec.scaler.data_min[0]
    assert quantized.shape == (7, 2)
    assert np.abs(quantized - expected).max() < 0.05 * target_range


def test_runtime_forecaster_serves_the_int8_onnx_model(quantized_bundle):
    runtime = pytest.importorskip("edgecast_runtime", reason="edgecast-runtime is not installed in this venv")
    path = quantized_bundle / "model.int8.onnx"
    x = read_bundle(quantized_bundle).windows()["test_x"][:5]
    forecaster = runtime.Forecaster(path)  # checks the sha256 listed in manifest.json
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # as the runtime runs; thread count changes float rounding
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    # Dynamic quantization scales by the whole input tensor: compare at the same batch.
    np.testing.assert_allclose(forecaster.predict_batch(x), session.run(None, {"window": x})[0], atol=1e-4)
    np.testing.assert_allclose(forecaster.predict(x[0]), session.run(None, {"window": x[:1]})[0][0], atol=1e-4)


# The arithmetic of the LSTM (fused, or unrolled for 16x8) and the dense head. The
# converter has been seen to leave a data-movement op (SPLIT) in float on some runs,
# which costs a dequantize/quantize pair but no float arithmetic; verify lists such
# ops by name.
INTEGER_COMPUTE_OPS = {"FULLY_CONNECTED", "TANH", "LOGISTIC", "MUL", "ADD", FUSED_OP}


def test_full_integer_tflite_computes_in_integer_with_float_io(quantized_bundle):
    for mode, lstm_op, activation in (("tflite-int8", FUSED_OP, "INT8"), ("tflite-int16x8", "TANH", "INT16")):
        path = quantized_bundle / MODES[mode].file
        assert not INTEGER_COMPUTE_OPS & set(tflite_summary(path)["float_ops"]), mode
        assert builtin_only_problems(path) == [], mode
        dtypes = {dtype for op in tflite_ops(path) if op["op"] == lstm_op for dtype in op["dtypes"]}
        assert activation in dtypes and not dtypes & {"FLOAT32", "FLOAT16"}, (mode, dtypes)
        bundle = read_bundle(quantized_bundle)
        x = bundle.windows()["test_x"][:3]
        assert tflite_forecast(path, x).shape == (3, 2)  # float32 raw windows in, raw forecasts out


def test_fused_int8_lstm_state_is_reset_before_each_window(quantized_bundle):
    """The fused LSTM keeps h and c in variable tensors between invokes: the manifest
    says to reset them, an invoke leaves them non-zero, and with the reset a window's
    forecast does not depend on the window run before it."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter

    path = quantized_bundle / "model.int8.tflite"
    assert has_variable_state(path) and not has_variable_state(quantized_bundle / BUILTIN_FILE)
    artifacts = manifest_of(quantized_bundle)["artifacts"]
    assert artifacts["model.int8.tflite"]["reset_variables_before_invoke"] is True
    assert "reset_variables_before_invoke" not in artifacts["model.int16x8.tflite"]
    (graph,) = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0).subgraphs
    # Variable tensors and their zero points: a quantized zero state is the zero point.
    state = {index: np.asarray(tensor.quantization.zeroPoint if tensor.quantization and
                               tensor.quantization.zeroPoint is not None else 0)
             for index, tensor in enumerate(graph.tensors) if tensor.isVariable}
    windows = read_bundle(quantized_bundle).windows()["test_x"]
    high, low, probe = windows[np.argmax(windows[:, :, 0].mean(1))], windows[np.argmin(windows[:, :, 0].mean(1))], windows[0]

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (window,), (forecast,) = interpreter.get_input_details(), interpreter.get_output_details()

    def run(x: np.ndarray) -> np.ndarray:
        interpreter.set_tensor(window["index"], x[np.newaxis])
        interpreter.invoke()
        return interpreter.get_tensor(forecast["index"])[0].copy()

    def probe_after(previous: np.ndarray) -> np.ndarray:
        interpreter.reset_all_variables()
        run(previous)
        assert any((interpreter.get_tensor(i) != zero).any() for i, zero in state.items())  # carried over
        interpreter.reset_all_variables()
        assert all((interpreter.get_tensor(i) == zero).all() for i, zero in state.items())
        return run(probe)

    np.testing.assert_array_equal(probe_after(high), probe_after(low))
    np.testing.assert_array_equal(tflite_forecast(path, probe[np.newaxis])[0], probe_after(high))


def test_weight_only_tflite_modes_keep_float_compute_and_shrink(quantized_bundle):
    sizes = {name: (quantized_bundle / name).stat().st_size for name in ("model.tflite", "model.dynamic-int8.tflite")}
    assert sizes["model.dynamic-int8.tflite"] < sizes["model.tflite"]
    fp16 = tflite_summary(quantized_bundle / "model.fp16.tflite")
    assert fp16["ops"].get("DEQUANTIZE", 0) > 0 and fp16["float_ops"]


def test_calibration_adds_windows_across_the_training_range(quantized_bundle):
    bundle = read_bundle(quantized_bundle)
    calibration = bundle.windows()["calibration_x"]
    samples = calibration_windows(calibration, bundle.spec, "tflite-int8")
    np.testing.assert_array_equal(samples[: len(calibration)], calibration)
    assert samples[:, :, 0].max() == pytest.approx(bundle.spec.scaler.data_max[0])
    assert samples[:, :, 1].min() == pytest.approx(bundle.spec.scaler.data_min[1])
    with pytest.raises(QuantizationError, match="calibration_x"):
        calibration_windows(None, bundle.spec, "tflite-int8")
    with pytest.raises(QuantizationError, match="shape"):
        calibration_windows(calibration[:, :3], bundle.spec, "tflite-int8")


def test_calendar_features_calibrate_in_raw_units_and_stay_float_in_16x8(tmp_path):
    """hour_of_day enters raw and is encoded (sin/cos) in the graph: calibration windows
    stay raw-shaped; 16x8 quantization, which has no SIN or COS kernel, keeps those two in
    float and the LSTM in int16, and the file forecasts like the model (0.06 measured)."""
    from edgecast.exporter.quantize import quantize
    from edgecast.trainer.data import load_csv
    from edgecast.trainer.pipeline import TrainConfig, train

    csv = tmp_path / "hourly.csv"
    hourly_frame(hours=200).to_csv(csv, index=False)
    series = load_csv(csv, "PM2.5", ["hour_of_day"])
    bundle = read_bundle(train(series, TrainConfig(look_back=6, units=4, epochs=1, batch_size=32), tmp_path / "b").path)
    calibration = bundle.windows()["calibration_x"]
    samples = calibration_windows(calibration, bundle.spec, "tflite-int8")
    assert samples.shape[1:] == calibration.shape[1:] == (6, 2)
    assert samples[:, :, 1].max() == pytest.approx(24.0)  # one calendar period, as parity's random windows
    path = tmp_path / MODES["tflite-int16x8"].file
    path.write_bytes(quantize(MODES["tflite-int16x8"], bundle.load_model(), bundle.spec, tmp_path / "unused.onnx",
                              calibration))
    assert set(tflite_summary(path)["float_ops"]) == {"SIN", "COS"}
    assert {dtype for op in tflite_ops(path) if op["op"] == "TANH" for dtype in op["dtypes"]} == {"INT16"}
    x = bundle.windows()["test_x"]
    deviation = np.abs(tflite_forecast(path, x) - reference_forecast(bundle.load_model(), bundle.spec, x)).max()
    assert deviation < 1.0, deviation


def test_verify_reports_size_error_deviation_and_ops_for_every_artifact(quantized_bundle):
    report = verify_bundle(quantized_bundle)
    assert report.passed
    rows = report.accuracy.artifacts
    assert set(rows) == {"model.onnx", "model.tflite", BUILTIN_FILE, *(m.file for m in MODES.values())}
    bundle = read_bundle(quantized_bundle)
    windows = bundle.windows()
    truth = windows["test_y"].astype(np.float64)
    reference = reference_forecast(bundle.load_model(), bundle.spec, windows["test_x"])
    float_rmse = np.sqrt(np.mean((reference - truth) ** 2))
    assert report.accuracy.float_model["rmse"] == pytest.approx(float_rmse)
    for name, row in rows.items():
        assert row.bytes == (quantized_bundle / name).stat().st_size
        assert row.ops and row.rmse > 0 and row.mae > 0
        assert row.rmse_change_pct == pytest.approx(100 * (row.rmse / float_rmse - 1))
    assert rows["model.onnx"].max_abs_deviation <= TOLERANCE
    dynamic = tflite_forecast(quantized_bundle / "model.dynamic-int8.tflite", windows["test_x"])
    assert rows["model.dynamic-int8.tflite"].max_abs_deviation == pytest.approx(np.abs(dynamic - reference).max())
    assert rows["model.dynamic-int8.tflite"].rmse == pytest.approx(np.sqrt(np.mean((dynamic - truth) ** 2)))
    assert rows["model.int8.onnx"].size_vs_float32 < 1
    assert rows["model.onnx"].batch_effect <= TOLERANCE and rows["model.tflite"].batch_effect is None
    assert "batch_effect" not in report.to_dict()["accuracy"]["artifacts"]["model.tflite"]
    assert {check.artifact for check in report.parity.checks} == {"model.onnx", "model.tflite", BUILTIN_FILE}


def test_unknown_mode_is_refused_before_anything_is_written():
    with pytest.raises(QuantizationError, match="choose from onnx-int8"):
        check_modes(["onnx-int8", "int4"])
    assert check_modes(["onnx-int8", "onnx-int8", "tflite-fp16"]) == ["onnx-int8", "tflite-fp16"]


def test_refused_mode_says_why_and_float_artifacts_are_still_written(quantized_bundle, tmp_path):
    bundle = tmp_path / "no-calibration"
    shutil.copytree(quantized_bundle, bundle)
    windows = dict(np.load(bundle / WINDOWS_FILE))
    del windows["calibration_x"]
    np.savez_compressed(bundle / WINDOWS_FILE, **windows)
    for name in ("model.onnx", "model.tflite", "model.int8.onnx"):
        (bundle / name).unlink()

    result = run_cli("export", bundle, "--quantize", "tflite-int8", "--quantize", "onnx-int8")

    assert result.returncode == 2, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("edgecast: error:")]
    assert len(error_lines) == 1 and "tflite-int8" in error_lines[0] and "calibration_x" in error_lines[0]
    manifest = manifest_of(bundle)
    assert set(manifest["quantization"]["refused"]) == {"tflite-int8"}
    for name in ("model.onnx", "model.tflite", "model.int8.onnx"):
        assert manifest["artifacts"][name]["sha256"] == file_sha256(bundle / name)
    # Files of modes not asked for this time are gone with their manifest entries.
    for stale in ("model.fp16.tflite", "model.int8.tflite", BUILTIN_FILE):
        assert not (bundle / stale).exists() and stale not in manifest["artifacts"]


def test_changping_int8_artifacts_meet_the_size_and_accuracy_targets(shared_changping, tmp_path):
    """The size and accuracy targets on real data at look-back 24 and the default width (one epoch:
    the ratios compare each model with its own float version)."""
    from edgecast.trainer.data import load_csv
    from edgecast.trainer.pipeline import TrainConfig, train

    series = load_csv(shared_changping, "PM2.5")
    result = train(series, TrainConfig(look_back=24, epochs=1), tmp_path / "changping")
    exported = export_bundle(result.path, progress=lambda _: None,
                             quantize=["onnx-int8", "tflite-dynamic-int8", "tflite-int8"])
    rows = exported.accuracy.artifacts
    for name in ("model.int8.onnx", "model.dynamic-int8.tflite", "model.int8.tflite"):
        assert rows[name].size_vs_float32 <= 0.40, (name, rows[name].bytes)
        assert rows[name].rmse_change_pct <= 3.0, (name, rows[name].rmse)
