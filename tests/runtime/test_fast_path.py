"""One window through bound buffers (fast_path.py, issue 28): the same numbers as
onnxruntime's own run on the same window, an answer the next call cannot overwrite,
threads that each get their own buffers and their own window's forecast, and the
ordinary path when the bound run fails. The speed is measured by `edgecast bench`,
not here."""

import threading

import numpy as np
import onnxruntime as ort
import pytest
from support.runtime import ONE, THREE

from edgecast_runtime import Forecaster, InputValueError


def session_forecast(path, window: np.ndarray) -> np.ndarray:
    """The forecast of a plain InferenceSession.run on the same window (batch of one)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["forecast"], {"window": window.reshape((1, -1, window.shape[-1]))})[0][0]


def windows_for(model: Forecaster, count: int, seed: int) -> np.ndarray:
    low, high = 0.0, 300.0  # PM2.5-like levels; the three-feature fixture takes any floats
    return np.random.default_rng(seed).uniform(low, high, (count, *model.window_shape)).astype(np.float32)


@pytest.mark.parametrize("path", [ONE, THREE], ids=["one_feature", "three_features"])
def test_single_windows_equal_onnxruntimes_own_run_bit_for_bit(path, monkeypatch):
    model = Forecaster(path)

    def ordinary_run(*arguments):
        raise AssertionError("a single window took session.run, not the bound buffers")

    monkeypatch.setattr(model, "_run_raw", ordinary_run)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for window in windows_for(model, 200, seed=1):
        expected = session.run(["forecast"], {"window": window[np.newaxis]})[0][0]
        np.testing.assert_array_equal(model.predict(window), expected)


def test_a_flat_window_and_a_list_take_the_same_path_to_the_same_numbers():
    model = Forecaster(ONE)
    window = windows_for(model, 1, seed=2)[0]
    expected = session_forecast(ONE, window)
    np.testing.assert_array_equal(model.predict(window.reshape(-1)), expected)
    np.testing.assert_array_equal(model.predict(window.reshape(-1).tolist()), expected)


def test_an_answer_is_the_callers_and_the_next_call_leaves_it_alone():
    model = Forecaster(THREE)
    first_window, second_window = windows_for(model, 2, seed=3)
    first = model.predict(first_window)
    kept = first.copy()
    second = model.predict(second_window)
    np.testing.assert_array_equal(first, kept)
    assert not np.shares_memory(first, second)
    first[:] = -1.0  # the caller may write into its answer; the model's buffers do not change
    np.testing.assert_array_equal(model.predict(second_window), second)


def test_a_failing_bound_run_sends_the_call_down_the_ordinary_path():
    model = Forecaster(ONE)
    window = windows_for(model, 1, seed=4)[0]
    single = model._per_thread.single = model._single_window_run()

    def onnxruntime_refuses():
        raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : a stand-in for any error of the bound run")

    single._call = onnxruntime_refuses
    np.testing.assert_array_equal(model.predict(window), session_forecast(ONE, window))
    with pytest.raises(InputValueError, match=r"non-finite value at \[2, 0\]"):
        model.predict(np.array([[1.0], [2.0], [np.nan], [4.0]], np.float32))


def test_a_non_contiguous_window_is_read_as_it_is():
    model = Forecaster(THREE)
    wide = windows_for(model, 1, seed=7)[0].repeat(2, axis=1)  # [look_back, 6]
    window = wide[:, ::2]  # a strided view of shape [look_back, 3]
    assert not window.flags.c_contiguous
    np.testing.assert_array_equal(model.predict(window), session_forecast(THREE, np.ascontiguousarray(window)))


def test_a_bad_window_is_named_after_the_bound_run_as_before():
    model = Forecaster(THREE)
    window = windows_for(model, 1, seed=5)[0]
    window[3, 1] = np.inf
    with pytest.raises(InputValueError, match=r"non-finite value at \[3, 1\]"):
        model.predict(window)
    window[3, 1] = 1.0  # the buffers hold no trace of the bad window
    np.testing.assert_array_equal(model.predict(window), session_forecast(THREE, window))


def test_threads_calling_one_model_each_get_their_own_windows_forecast():
    model = Forecaster(THREE)
    windows = windows_for(model, 64, seed=6)
    expected = np.stack([session_forecast(THREE, window) for window in windows])
    wrong: list = []

    def caller(offset: int) -> None:
        for call in range(400):
            index = (offset + call) % len(windows)
            if not np.array_equal(model.predict(windows[index]), expected[index]):
                wrong.append((offset, call))

    runs = []  # held, so that no two runs can share an id

    def caller_with_its_run(offset: int) -> None:
        caller(offset)
        runs.append(model._per_thread.single)  # this thread's own buffers

    threads = [threading.Thread(target=caller_with_its_run, args=(offset,)) for offset in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
    assert len({id(run) for run in runs}) == 8
