"""One window through buffers bound once (onnxruntime's IOBinding).

`InferenceSession.run` builds an OrtValue for the feed and a fresh numpy array for the
answer on every call; for a tiny model (4 steps, 4 units) that is most of a call. Here
the input and output are float32 arrays allocated once and bound to the session by
address: a call copies the window into the input buffer, runs, and copies the forecast
out (the caller keeps its answer; the buffer is reused). benchmarks/README.md
(section C2) has the measurements.

Buffers cannot be shared between threads, and a lock costs more than the rest of the
bookkeeping, so each thread that predicts gets its own SingleWindowRun (the Forecaster
keeps them in a threading.local; a thread's run goes when the thread does).
"""

from __future__ import annotations

import functools
import warnings
from typing import Optional

import numpy as np
import onnxruntime as ort

from edgecast_runtime.deadline import BoundedRun

# The dot product with zeros meets NaN or inf on purpose: its NaN is the answer.
warnings.filterwarnings("ignore", "invalid value encountered in dot", RuntimeWarning, __name__)


class SingleWindowRun:
    """Forecasts for one window of `input_shape` ([1, look_back, n_features]) through
    `session`, with the output `output_name` of shape [1, horizon] bound in place; with
    `run_timeout` seconds, each run is stopped past it (deadline.py) as the ordinary
    path's are. One thread's: not to be shared."""

    def __init__(self, session: ort.InferenceSession, input_name: str, output_name: str,
                 input_shape: tuple[int, int, int], horizon: int,
                 run_timeout: Optional[float] = None, model: str = "") -> None:
        size = int(np.prod(input_shape))
        # Input and output side by side in one array, so that one dot product with zeros
        # (0 for finite values, NaN for NaN or inf) checks the window and its forecast.
        self._buffers = np.zeros(size + horizon, np.float32)
        self._zeros = np.zeros(size + horizon, np.float32)
        self._input_flat = self._buffers[:size]  # views: writes land in the bound buffer
        self._input_window = self._input_flat.reshape(input_shape[1:])
        self._output = self._buffers[size:]
        self._binding = session.io_binding()
        self._binding.bind_input(input_name, "cpu", 0, np.float32, list(input_shape),
                                 self._input_flat.ctypes.data)
        self._binding.bind_output(output_name, "cpu", 0, np.float32, [1, horizon],
                                  self._output.ctypes.data)
        inner_session, bound = _raw_parts(session, self._binding)
        if run_timeout is None:
            self._call = functools.partial(inner_session.run_with_iobinding, bound, None)
        else:
            stopped = BoundedRun(lambda names, feed, options: inner_session.run_with_iobinding(bound, options),
                                 run_timeout, model)
            self._call = functools.partial(stopped, None, None, None)

    def forecast(self, window: np.ndarray) -> tuple[np.ndarray, bool]:
        """(the [horizon] forecast for `window`, a new array; whether the window and the
        forecast are all finite). `window`: float32, [look_back, n_features] or its
        look_back * n_features values flat. Errors from onnxruntime (a run stopped by
        the deadline, an output whose shape is not [1, horizon]) are raised as they come."""
        (self._input_window if window.ndim == 2 else self._input_flat)[...] = window
        self._call()
        return self._output.copy(), self._zeros.dot(self._buffers) == 0


def _raw_parts(session: ort.InferenceSession, binding: ort.IOBinding) -> tuple:
    """(session, binding) whose run_with_iobinding(binding, options) runs the model. The
    C++ objects skip the Python wrapper's per-call checks; the public ones are the
    fallback should onnxruntime ever rename its private attributes."""
    inner_session = getattr(session, "_sess", None)
    inner_binding = getattr(binding, "_iobinding", None)
    if inner_session is not None and inner_binding is not None:
        return inner_session, inner_binding
    return session, binding
