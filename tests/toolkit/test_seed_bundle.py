"""The committed models/pm25-seed bundle still matches its manifest and its Keras model."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import REPO_ROOT

from edgecast.exporter.parity import TOLERANCE, reference_forecast, tflite_forecast
from edgecast.exporter.pipeline import verify_bundle
from edgecast.trainer.bundle import read_bundle
from edgecast.tutorial import DEMO_WINDOW, series_sha256
from edgecast_runtime.manifest import file_sha256

SEED = REPO_ROOT / "models" / "pm25-seed"


def test_committed_artifacts_match_the_manifest():
    manifest = json.loads((SEED / "manifest.json").read_text())
    assert {"model.onnx", "model.tflite", "model.keras"} <= set(manifest["artifacts"])
    for name, entry in manifest["artifacts"].items():
        assert file_sha256(SEED / name) == entry["sha256"], name
        assert (SEED / name).stat().st_size == entry["bytes"], name
    assert manifest["training_data"]["sha256"] == series_sha256()


def test_committed_artifacts_still_give_the_keras_numbers():
    report = verify_bundle(SEED)
    assert report.passed, report
    assert max(check.max_abs for check in report.parity.checks) <= TOLERANCE


def test_demo_window_agrees_across_keras_runtime_and_tflite():
    from edgecast_runtime import Forecaster

    bundle = read_bundle(SEED)
    x = np.asarray(DEMO_WINDOW, np.float32).reshape(1, 4, 1)
    keras_value = reference_forecast(bundle.load_model(), bundle.spec, x)[0, 0]
    runtime_value = Forecaster(SEED / "model.onnx").predict(DEMO_WINDOW)[0]
    tflite_value = tflite_forecast(SEED / "model.tflite", x)[0, 0]
    assert runtime_value == pytest.approx(keras_value, abs=TOLERANCE)
    assert tflite_value == pytest.approx(keras_value, abs=TOLERANCE)
