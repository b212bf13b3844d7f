"""The shadow slot: a challenger the hub runs beside its champion on the same readings,
whose forecasts are scored (skill/pairs.py) and never published.

The challenger reads the champion's buffer, so it must read the same inputs (the rule
a hot reload follows to keep the buffer: state.stream_inputs) and forecast the same
horizon; otherwise it is refused when installed. It forecasts after the champion has
answered a reading, in the scorer's step, so an answer is always the champion's. A
challenger that fails while forecasting (an onnxruntime error, a wrong shape) is
dropped with a reason and the champion goes on; so is one whose champion changes to a
model that reads other inputs. When the champion becomes the very model the shadow
runs (the challenger was promoted), the slot empties with state "promoted"."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable, List, Optional

import numpy as np

from edgecast_runtime.admission import SERVICE_LOADING, ModelLoading
from edgecast_runtime.errors import ModelError
from edgecast_runtime.model import DEFAULT_THREADS
from edgecast_runtime.state import stream_inputs
from edgecast_runtime.trial import one_line

if TYPE_CHECKING:
    from edgecast_runtime.model import Forecaster
    from edgecast_runtime.reload import ModelHolder

NONE, RUNNING, DROPPED, PROMOTED = "none", "running", "dropped", "promoted"


def incompatibility(champion: Forecaster, challenger: Forecaster) -> Optional[str]:
    """Why `challenger` cannot run beside `champion` on its buffer, None when it can."""
    if challenger.horizon != champion.horizon:
        return f"it forecasts {challenger.horizon} steps, the champion {champion.horizon}"
    ours, theirs = stream_inputs(champion), stream_inputs(challenger)
    different = [key for key in ours if ours[key] != theirs[key]]
    if different:
        return (f"it reads other inputs than the champion ({', '.join(different)} differ), "
                f"so it cannot forecast from the champion's readings")
    return None


class ShadowSlot:
    """The challenger (or none). `switch_to` is what the release folder calls to install
    a verified model (as ModelHolder's); `forecast(window)` is the stream's call."""

    def __init__(self, threads: int = DEFAULT_THREADS, loading: ModelLoading = SERVICE_LOADING,
                 log: Callable[[dict], None] = lambda event: None) -> None:
        self.threads, self.loading, self.log = threads, loading, log
        self._model: Optional[Forecaster] = None
        self._champion: Optional[Callable[[], Forecaster]] = None
        self._lock = threading.Lock()
        self.state, self.reason = NONE, None
        self.listeners: List[Callable[[str, Optional[str]], None]] = []  # (state, reason) on a change

    @property
    def current(self) -> Optional[Forecaster]:
        return self._model

    def champion_sha256(self) -> Optional[str]:
        return self._champion().sha256 if self._champion else None

    def attach(self, champion: ModelHolder) -> None:
        """Run beside `champion`'s model from now on; a shadow loaded at start that does
        not fit it is dropped."""
        self._champion = lambda: champion.current
        champion.on_swap(self._champion_swapped)
        model = self._model
        if model is not None:
            problem = incompatibility(champion.current, model)
            if model.sha256 == champion.current.sha256:
                self._empty(PROMOTED, "the champion runs this model")
            elif problem:
                self.drop(problem)

    def switch_to(self, path: str | Path, reason: str) -> Forecaster:
        """Load a verified challenger (ModelError when it does not load or fit)."""
        from edgecast_runtime.reload import load_model

        new = load_model(path, self.threads, self.loading)
        champion = self._champion() if self._champion else None
        problem = incompatibility(champion, new) if champion is not None else None
        if problem:
            raise ModelError(f"shadow model {new.model_name!r}: {problem}")
        with self._lock:
            self._model = new
        self._changed(RUNNING, None)
        self.log({"event": "shadow_loaded", "reason": reason, "model_name": new.model_name,
                  "sha256": new.sha256, "path": str(path)})
        return new

    def forecast(self, window: np.ndarray) -> Optional[tuple]:
        """(sha256, forecast as floats) of the challenger for `window`, None without one;
        a challenger that fails is dropped, the champion never sees it."""
        model = self._model
        if model is None:
            return None
        try:
            forecast = model.predict(window)
            values = [float(v) for v in np.asarray(forecast, dtype=np.float64).reshape(-1)]
            if len(values) != model.horizon or not all(np.isfinite(values)):
                raise ModelError(f"it gave {len(values)} values, not {model.horizon} finite ones")
        except Exception as exc:  # whatever broke, the champion goes on
            self.drop(f"failed while forecasting: {one_line(f'{type(exc).__name__}: {exc}', 300)}")
            return None
        return model.sha256, values

    def drop(self, reason: str) -> None:
        model = self._model
        self._empty(DROPPED, reason)
        self.log({"event": "shadow_dropped", "reason": reason,
                  "sha256": model.sha256 if model else None})

    def _empty(self, state: str, reason: Optional[str]) -> None:
        with self._lock:
            self._model = None
        self._changed(state, reason)

    def _changed(self, state: str, reason: Optional[str]) -> None:
        self.state, self.reason = state, reason
        for listener in self.listeners:
            listener(state, reason)

    def _champion_swapped(self, new: Forecaster, old: Forecaster) -> None:
        model = self._model
        if model is None:
            return
        if new.sha256 == model.sha256:
            self._empty(PROMOTED, "the champion runs this model now")
            self.log({"event": "shadow_promoted", "sha256": model.sha256})
            return
        problem = incompatibility(new, model)
        if problem:
            self.drop(f"the new champion does not fit it: {problem}")
