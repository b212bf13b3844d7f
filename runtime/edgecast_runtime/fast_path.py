"""One window through buffers bound once (onnxruntime's IOBinding).

`InferenceSession.run` builds an OrtValue for the feed and a fresh numpy array for the
answer on every call; for a tiny model (4 steps, 4 units) that is most of a call. Here
the input and output are float32 arrays allocated once and bound to the session by
address: a call copies the window into the input buffer, runs, and copies the forecast
out (the caller keeps its answer; the buffer is reused). benchmarks/README.md
(section C) has the measurements.

The buffers are shared, so one thread at a time uses them: a call that finds them busy
gets None and takes the ordinary path, which allocates as before and never waits.
"""

from __future__ import annotations

import threading
import warnings
from typing import Callable, Optional

import numpy as np
import onnxruntime as ort

from edgecast_runtime.deadline import BoundedRun

# The dot product with zeros meets NaN or inf on purpose: its NaN is the answer.
warnings.filterwarnings("ignore", "invalid value encountered in dot", RuntimeWarning, __name__)


class SingleWindowRun:
    """Forecasts for one window of `input_shape` ([1, look_back, n_features]) through
    `session`, with the output `output_name` of shape [1, horizon] bound in place."""

    def __init__(self, session: ort.InferenceSession, input_name: str, output_name: str,
                 input_shape: tuple[int, int, int], horizon: int) -> None:
        size = int(np.prod(input_shape))
        # Input and output side by side in one array, so that one dot product with zeros
        # (0 for finite values, NaN for NaN or inf) checks the window and its forecast.
        self._buffers = np.zeros(size + horizon, np.float32)
        self._zeros = np.zeros(size + horizon, np.float32)
        self._input_flat = self._buffers[:size]
        self._output = self._buffers[size:]
        self._binding = session.io_binding()
        self._binding.bind_input(input_name, "cpu", 0, np.float32, list(input_shape),
                                 self._input_flat.ctypes.data)
        self._binding.bind_output(output_name, "cpu", 0, np.float32, [1, horizon],
                                  self._output.ctypes.data)
        self._session, self._bound = _raw_parts(session, self._binding)
        self._run: Optional[Callable] = None  # set by bound(): the run under a deadline
        self._lock = threading.Lock()

    def bound(self, seconds: Optional[float], model: str) -> None:
        """Stop every call past `seconds` (deadline.py), as the ordinary path is."""
        if seconds is not None:
            session, bound = self._session, self._bound
            self._run = BoundedRun(lambda names, feed, options: session.run_with_iobinding(bound, options),
                                   seconds, model)

    def forecast(self, flat_window: np.ndarray) -> Optional[tuple[np.ndarray, bool]]:
        """(the [horizon] forecast for `flat_window`, a new array; whether the window and
        the forecast are all finite), from look_back * n_features float32 values in
        window order. None when another thread is using the buffers. Errors from
        onnxruntime (a run stopped by the deadline, an output whose shape is not
        [1, horizon]) are raised as they come."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            self._input_flat[:] = flat_window
            if self._run is None:
                self._session.run_with_iobinding(self._bound, None)
            else:
                self._run(None, None, None)
            return self._output.copy(), self._zeros.dot(self._buffers) == 0
        finally:
            self._lock.release()


def _raw_parts(session: ort.InferenceSession, binding: ort.IOBinding) -> tuple:
    """(session, binding) whose run_with_iobinding(binding, options) runs the model. The
    C++ objects skip the Python wrapper's per-call checks; the public ones are the
    fallback should onnxruntime ever rename its private attributes."""
    inner_session = getattr(session, "_sess", None)
    inner_binding = getattr(binding, "_iobinding", None)
    if inner_session is not None and inner_binding is not None:
        return inner_session, inner_binding
    return session, binding
