"""A time bound on every onnxruntime call of a service's model (`run_timeout`).

A model whose run time depends on the input's values (a Loop whose trip count is the
largest reading: 0.75 us per unit, 12 minutes for one reading of 10^9) passes the
trial on zeros, then holds the stream lock for as long as a reading asks. onnxruntime
checks `RunOptions.terminate` between kernels, inside a Loop's or Scan's subgraph
too (checked on onnxruntime 1.32: a Loop of 10^9 iterations stops within
milliseconds of the flag): one watchdog thread sets the flag of every call past its
deadline, and the call raises RunTimeoutError, naming the model and the limit.

What it cannot stop is one kernel that runs long by itself; a kernel's time follows
the size of its tensors, and so the memory the service may take (the unit's MemoryMax).
"""

from __future__ import annotations

import math
import threading
import time
from typing import Callable, Optional

import onnxruntime as ort

from edgecast_runtime.errors import EdgecastRuntimeError, RunTimeoutError

DEFAULT_RUN_TIMEOUT = 2.0  # seconds per call for serve, stream, mqtt and score; a real model: ms

Run = Callable[[list, dict, Optional[ort.RunOptions]], list]


class _Call:
    __slots__ = ("deadline", "options", "expired")

    def __init__(self, deadline: float, options: ort.RunOptions) -> None:
        self.deadline = deadline
        self.options = options
        self.expired = False


class _Watchdog:
    """One daemon thread for the process: it sleeps until the nearest deadline of the
    calls in progress (without a call, until one starts) and stops the calls past it."""

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._calls: set[_Call] = set()
        self._wake_at = math.inf
        self._thread: Optional[threading.Thread] = None

    def start(self, seconds: float, options: ort.RunOptions) -> _Call:
        call = _Call(time.monotonic() + seconds, options)
        with self._wake:
            self._calls.add(call)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="edgecast-run-deadline",
                                                daemon=True)
                self._thread.start()
            if call.deadline < self._wake_at:
                self._wake.notify()
        return call

    def finish(self, call: _Call) -> bool:
        """Whether the call was stopped (its options' terminate flag is then set)."""
        with self._wake:
            self._calls.discard(call)
            return call.expired

    def _watch(self) -> None:
        with self._wake:
            while True:
                now = time.monotonic()
                for call in [call for call in self._calls if call.deadline <= now]:
                    call.options.terminate = True
                    call.expired = True
                    self._calls.discard(call)
                self._wake_at = min((call.deadline for call in self._calls), default=math.inf)
                self._wake.wait(None if self._wake_at == math.inf else self._wake_at - now)


_WATCHDOG = _Watchdog()


class BoundedRun:
    """`run` (an onnxruntime session's run: names, feed, options) with each call stopped
    after `seconds`, raising RunTimeoutError that names `model` and the limit. A thread
    reuses its RunOptions until one is stopped (a stopped one stays stopped)."""

    def __init__(self, run: Run, seconds: float, model: str) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
                or not 0 < seconds < math.inf:
            raise EdgecastRuntimeError(f"run_timeout must be a positive number of seconds, "
                                       f"got {seconds!r}", setting="run_timeout")
        self.seconds = float(seconds)
        self.model = model
        self._run = run
        self._local = threading.local()

    def __call__(self, names: list, feed: dict, options: Optional[ort.RunOptions] = None) -> list:
        options = getattr(self._local, "options", None) or ort.RunOptions()
        self._local.options = None
        call = _WATCHDOG.start(self.seconds, options)
        try:
            result = self._run(names, feed, options)
        except Exception:
            if _WATCHDOG.finish(call):
                raise RunTimeoutError(
                    f"model {self.model!r} ran longer than the run_timeout of {self.seconds:g} s "
                    f"and was stopped (its run time depends on the input's values?)",
                    setting="run_timeout", model=self.model, seconds=self.seconds) from None
            self._local.options = options
            raise
        if not _WATCHDOG.finish(call):  # an answer in time; one that just made it stands too
            self._local.options = options
        return result
