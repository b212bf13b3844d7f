"""The Forecaster: loading and validating against the graph contract and the
manifest, predicting one window and batches, and the errors for bad input."""

import json
import math
import shutil

import numpy as np
import onnxruntime as ort
import pytest
from support.runtime import FIXTURES, ONE, ONE_REEXPORT, ONE_V2, THREE, expected_forecast

from edgecast_runtime import (
    EdgecastRuntimeError,
    Forecaster,
    InputShapeError,
    InputValueError,
    IntegrityError,
    ModelError,
    SchemaVersionError,
)
from edgecast_runtime.inputs import to_float32


def test_loads_metadata_of_one_feature_model():
    model = Forecaster(ONE)
    assert (model.look_back, model.n_features, model.horizon) == (4, 1, 1)
    assert model.features == ["PM2.5"] and model.target == "PM2.5"
    assert model.interval_seconds == 3600
    assert model.model_name == "fixture-one"
    assert model.schema_version == "1"
    assert model.input_name == "window" and model.output_name == "forecast"
    assert len(model.sha256) == 64 and model.manifest_path is None
    info = model.describe()
    assert info["input"]["shape"] == ["batch", 4, 1] and info["output"]["shape"] == ["batch", 1]
    json.dumps(info)  # describe() is what /v1/model and `info --json` print


def test_single_threaded_sequential_session_by_default():
    options = Forecaster(ONE).session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.inter_op_num_threads == 1
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert Forecaster(ONE, threads=2).session.get_session_options().intra_op_num_threads == 2


@pytest.mark.parametrize("threads", [0, -1, 1.5, True, "2"])
def test_bad_thread_counts_are_refused(threads):
    with pytest.raises(EdgecastRuntimeError, match="threads"):
        Forecaster(ONE, threads=threads)


def test_predict_one_window_flat_and_two_dimensional():
    model = Forecaster(ONE)
    window = [70, 72, 75, 80]
    expected = expected_forecast(window)
    for form in (window, [[v] for v in window], np.array(window, dtype=np.float64),
                 np.array(window, dtype=np.int64).reshape(4, 1)):
        forecast = model.predict(form)
        assert forecast.shape == (1,) and forecast.dtype == np.float32
        np.testing.assert_allclose(forecast, expected, rtol=1e-6)


def test_predict_three_features_and_batches():
    model = Forecaster(THREE)
    rng = np.random.default_rng(7)
    windows = rng.uniform([0, -10, 995], [400, 35, 1035], size=(5, 6, 3)).astype(np.float32)
    batch = model.predict_batch(windows)
    assert batch.shape == (5, 3)
    for row, window in zip(batch, windows):
        np.testing.assert_allclose(row, expected_forecast(window.tolist()), rtol=1e-5)
        np.testing.assert_array_equal(model.predict(window), row)


def test_large_batches_run_in_chunks_with_the_same_answers(monkeypatch):
    import edgecast_runtime.model as model_module

    model = Forecaster(THREE)
    windows = np.random.default_rng(3).uniform(0, 100, size=(23, 6, 3)).astype(np.float32)
    whole = model.predict_batch(windows)
    monkeypatch.setattr(model_module, "BATCH_CHUNK", 5)
    np.testing.assert_array_equal(model.predict_batch(windows), whole)


def test_batch_of_flat_windows_for_one_feature_model():
    model = Forecaster(ONE)
    forecasts = model.predict_batch([[1, 2, 3, 4], [10, 20, 30, 40]])
    np.testing.assert_allclose(forecasts[:, 0], [3.5, 26.0], rtol=1e-6)


def test_contiguous_float32_input_is_used_without_a_copy():
    window = np.arange(4, dtype=np.float32).reshape(4, 1)
    assert to_float32(window) is window
    assert to_float32(window.astype(np.float64)) is not window
    strided = np.arange(8, dtype=np.float32)[::2]
    converted = to_float32(strided)
    assert converted.flags.c_contiguous and converted is not strided


@pytest.mark.parametrize("window, kind, fragment", [
    ([1, 2, 3], InputShapeError, "expected a window of shape [4, 1]"),
    ([[1, 2, 3, 4]], InputShapeError, "got shape [1, 4]"),
    ([[1], [2, 3], [4], [5]], InputShapeError, "equal-length rows"),
    ([1, 2, "x", 4], InputValueError, "non-numeric value 'x' at [2]"),
    ([1, 2, None, 4], InputValueError, "missing value (null) at [2]"),
    ([1, True, 3, 4], InputValueError, "non-numeric value True at [1]"),
    ([1, 2, math.nan, 4], InputValueError, "non-finite value at [2]"),
    ([1, 2, math.inf, 4], InputValueError, "non-finite value at [2]"),
    ([1e39, 2, 3, 4], InputValueError, "beyond float32 range"),
    ([10 ** 400, 2, 3, 4], InputValueError, "beyond float32 range"),
    ("1 2 3 4", InputValueError, "got a string"),
    (np.array(["1", "2", "3", "4"]), InputValueError, "dtype <U1"),
    ([{"a": 1}, 2, 3, 4], InputValueError, "non-numeric value {'a': 1} at [0]"),
])
def test_bad_windows_raise_typed_errors_naming_the_problem(window, kind, fragment):
    with pytest.raises(kind) as caught:
        Forecaster(ONE).predict(window)
    assert fragment in str(caught.value)


def test_bad_batches_name_expected_and_got_shapes():
    model = Forecaster(THREE)
    with pytest.raises(InputShapeError, match=r"expected windows of shape \[batch, 6, 3\], got shape \[2, 6, 2\]"):
        model.predict_batch(np.zeros((2, 6, 2)))
    with pytest.raises(InputShapeError, match="empty batch"):
        model.predict_batch(np.zeros((0, 6, 3)))


class _OverflowingSession:
    """Stands in for a graph whose arithmetic overflows on extreme inputs."""

    def run(self, names, feeds, run_options=None):
        return [np.full((len(feeds["window"]), 1), np.inf, dtype=np.float32)]


def test_a_non_finite_forecast_is_an_input_error(monkeypatch):
    model = Forecaster(ONE)
    monkeypatch.setattr(model, "_run_raw", _OverflowingSession().run)
    # the same for this thread's bound buffers (fast_path.py): inf lands in the output
    single = model._per_thread.single = model._single_window_run()
    monkeypatch.setattr(single, "_call", lambda: single._output.fill(np.inf))
    with pytest.raises(InputValueError, match="non-finite forecast"):
        model.predict([3e38, 3e38, 3e38, 3e38])
    with pytest.raises(InputValueError, match="non-finite forecast"):
        model.predict_batch([[3e38] * 4] * 3)


@pytest.mark.parametrize("name, kind, fragment", [
    ("schema_99.onnx", SchemaVersionError, "schema version '99' is not supported"),
    ("no_metadata.onnx", ModelError, "no edgecast metadata"),
    ("spec_mismatch.onnx", ModelError, "inconsistent with the spec's ['batch', 5, 1]"),
    ("missing_spec.onnx", ModelError, "edgecast.spec metadata is missing"),
    ("bad_spec_json.onnx", ModelError, "edgecast.spec is not valid JSON"),
    ("wrong_input_name.onnx", ModelError, "expected one input named 'window'"),
    ("truncated.onnx", ModelError, "not a loadable ONNX model"),
    ("absent.onnx", ModelError, "model file not found"),
])
def test_models_breaking_the_contract_are_refused(name, kind, fragment):
    with pytest.raises(kind) as caught:
        Forecaster(FIXTURES / name)
    assert fragment in str(caught.value)
    assert name in str(caught.value)


def test_empty_file_and_folder_are_refused(tmp_path):
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match="empty"):
        Forecaster(empty)
    with pytest.raises(ModelError, match="folder"):
        Forecaster(tmp_path)


def test_manifest_beside_the_model_is_checked():
    model = Forecaster(FIXTURES / "bundle" / "model.onnx")
    assert model.manifest_path.name == "manifest.json"
    assert model.sha256 == Forecaster(ONE).sha256


def _bundle(tmp_path, model_source, manifest_text):
    shutil.copyfile(model_source, tmp_path / "model.onnx")
    (tmp_path / "manifest.json").write_text(manifest_text)
    return tmp_path / "model.onnx"


def test_sha256_mismatch_with_manifest_is_refused(tmp_path):
    manifest = (FIXTURES / "bundle" / "manifest.json").read_text()
    path = _bundle(tmp_path, ONE_REEXPORT, manifest)  # the bundle's model, other bytes
    with pytest.raises(IntegrityError, match="does not match .*manifest.json.*changed or corrupted"):
        Forecaster(path)
    assert Forecaster(path, check_manifest=False).model_name == "fixture-one"


def test_manifest_of_another_model_is_named_as_such(tmp_path):
    manifest = (FIXTURES / "bundle" / "manifest.json").read_text()
    (tmp_path / "other").mkdir()
    path = _bundle(tmp_path / "other", ONE_V2, manifest)
    with pytest.raises(IntegrityError, match=r"manifest.json describes another model \('fixture-one'"):
        Forecaster(path)
    assert Forecaster(path, check_manifest=False).model_name == "fixture-one-v2"


@pytest.mark.parametrize("manifest, fragment", [
    ("{not json", "cannot read the manifest"),
    ('{"artifacts": {}}', "has no sha256 for model.onnx"),
    ('[1, 2]', "has no sha256 for model.onnx"),
])
def test_unusable_manifest_is_refused(tmp_path, manifest, fragment):
    with pytest.raises(IntegrityError, match=fragment):
        Forecaster(_bundle(tmp_path, ONE, manifest))
