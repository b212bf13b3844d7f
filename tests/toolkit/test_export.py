"""The exported graphs: contract, metadata, parity, manifest, and refusal on parity failure."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgecast.exporter.errors import ExportError, ParityError
from edgecast.exporter.parity import TOLERANCE, check_parity, random_windows, reference_forecast, tflite_forecast
from edgecast.exporter.pipeline import export_bundle, verify_bundle
from edgecast.trainer.bundle import read_bundle
from edgecast_runtime.manifest import file_sha256


@pytest.fixture(params=["local", "global"])
def trained_bundle(request, trained_bundle):
    """Every test here runs on a local model's bundle and on a station's bundle of a global
    model (conftest.global_bundle, the same settings): export must not care which."""
    return trained_bundle if request.param == "local" else request.getfixturevalue("global_bundle")


def test_onnx_graph_follows_the_contract(trained_bundle):
    model = onnx.load(trained_bundle / "model.onnx")
    onnx.checker.check_model(model, full_check=True)
    assert "LSTM" in {node.op_type for node in model.graph.node}  # native op, not an unrolled loop
    (window,), (forecast,) = model.graph.input, model.graph.output
    assert window.name == "window" and forecast.name == "forecast"
    assert [d.dim_param or d.dim_value for d in window.type.tensor_type.shape.dim] == ["batch", 6, 2]
    assert [d.dim_param or d.dim_value for d in forecast.type.tensor_type.shape.dim] == ["batch", 2]
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["edgecast.schema_version"] == "1"
    spec = json.loads(meta["edgecast.spec"])
    assert spec["features"] == ["PM2.5", "TEMP"] and spec["target"] == "PM2.5"
    assert spec == read_bundle(trained_bundle).spec.to_dict()


def test_onnx_takes_raw_units_at_any_batch(trained_bundle):
    bundle = read_bundle(trained_bundle)
    x = bundle.windows()["test_x"][:7]
    session = ort.InferenceSession(str(trained_bundle / "model.onnx"))
    batch7 = session.run(None, {"window": x})[0]
    singles = np.concatenate([session.run(None, {"window": w[None]})[0] for w in x])
    expected = reference_forecast(bundle.load_model(), bundle.spec, x)
    assert batch7.shape == (7, 2)
    np.testing.assert_allclose(batch7, expected, atol=TOLERANCE)
    np.testing.assert_allclose(singles, batch7, atol=1e-5)


def test_tflite_has_static_batch_one_and_matches_keras(trained_bundle):
    bundle = read_bundle(trained_bundle)
    x = random_windows(bundle.spec, seed=3)[:20]
    expected = reference_forecast(bundle.load_model(), bundle.spec, x)
    np.testing.assert_allclose(tflite_forecast(trained_bundle / "model.tflite", x), expected, atol=TOLERANCE)


def test_random_parity_windows_leave_the_training_range(trained_bundle):
    spec = read_bundle(trained_bundle).spec
    x = random_windows(spec)
    low, high = np.array(spec.scaler.data_min), np.array(spec.scaler.data_max)
    assert (x > high).any(axis=(0, 1)).all() and (x < low).any(axis=(0, 1)).all()


def test_manifest_records_every_artifact(trained_bundle):
    manifest = json.loads((trained_bundle / "manifest.json").read_text())
    for name in ("model.onnx", "model.tflite", "model.keras", "preprocessing.json"):
        entry = manifest["artifacts"][name]
        assert entry["sha256"] == file_sha256(trained_bundle / name)
        assert entry["bytes"] == (trained_bundle / name).stat().st_size
    assert manifest["parity"]["passed"] is True
    assert {"tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime"} <= set(manifest["versions"])
    assert len(manifest["training_data"]["sha256"]) == 64
    kinds = {c["artifact"]: set() for c in manifest["parity"]["checks"]}
    for check in manifest["parity"]["checks"]:
        kinds[check["artifact"]].add((check["windows"], check["batch"] > 1))
    assert kinds["model.onnx"] == {("held-out", False), ("held-out", True), ("random", False), ("random", True)}


def test_verify_recomputes_parity_and_catches_a_replaced_file(trained_bundle, tmp_path):
    import shutil

    report = verify_bundle(trained_bundle)
    assert report.passed and report.integrity.passed
    copy = tmp_path / "copy"
    shutil.copytree(trained_bundle, copy)
    with open(copy / "model.tflite", "ab") as handle:
        handle.write(b"\0")
    tampered = verify_bundle(copy)
    assert not tampered.passed and "sha256 differs" in tampered.integrity.problems[0]


def test_parity_detects_a_graph_of_another_model(trained_bundle, tmp_path):
    """An ONNX file whose weights differ from the Keras model must fail parity."""
    from edgecast.exporter.onnx_export import to_onnx

    bundle = read_bundle(trained_bundle)
    other = bundle.load_model()
    other.set_weights([w * 1.05 for w in other.get_weights()])
    (tmp_path / "other.onnx").write_bytes(to_onnx(other, bundle.spec, "other"))
    report = check_parity(bundle.load_model(), bundle.spec, bundle.windows()["test_x"], {"other.onnx": tmp_path / "other.onnx"})
    assert not report.passed
    assert max(check.max_abs for check in report.checks) > TOLERANCE


def test_export_refuses_to_write_artifacts_that_fail_parity(trained_bundle, tmp_path, monkeypatch):
    import shutil

    import edgecast.exporter.pipeline as pipeline
    from edgecast.exporter.onnx_export import to_onnx

    copy = tmp_path / "bundle"
    shutil.copytree(trained_bundle, copy)
    for name in ("model.onnx", "model.tflite", "manifest.json"):
        (copy / name).unlink()

    def perturbed_onnx(model, spec, name, opset, calibration=None):
        import keras

        other = keras.models.clone_model(model)
        other.set_weights([w * 1.05 for w in model.get_weights()])
        return to_onnx(other, spec, name, opset, calibration)

    monkeypatch.setattr(pipeline, "to_onnx", perturbed_onnx)
    with pytest.raises(ParityError, match="parity failed") as failure:
        export_bundle(copy, tflite=False, progress=lambda _: None)
    assert failure.value.report.passed is False
    assert sorted(p.name for p in copy.iterdir()) == sorted(
        ["model.keras", "preprocessing.json", "metrics.json", "training.json", "windows.npz"]
    )


def test_unsupported_opset_is_refused(trained_bundle):
    from edgecast.exporter.onnx_export import to_onnx

    bundle = read_bundle(trained_bundle)
    with pytest.raises(ExportError, match="opset 99 is not supported"):
        to_onnx(bundle.load_model(), bundle.spec, "x", opset=99)


def test_selected_opset_is_written(trained_bundle):
    from edgecast.exporter.onnx_export import to_onnx

    bundle = read_bundle(trained_bundle)
    model = onnx.load_from_string(to_onnx(bundle.load_model(), bundle.spec, "x", opset=15))
    assert {o.domain: o.version for o in model.opset_import}[""] == 15
