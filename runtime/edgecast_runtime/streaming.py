"""The streaming forecaster: readings in one at a time, a forecast once the last
look-back readings are buffered. It coordinates the parts: the calendar fill
(encodings.InputLayout), the valid ranges (validity), the policy for missing
values and gaps (policy), the ring buffer (ring_buffer) and the state file,
written durably before any answer is given (state); then the scorer
(skill.StreamScorer), which keeps each forecast until its truth arrives. Timestamps
are checked against the hub's clock (timeguard) before a reading moves the stream."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence, Tuple

import numpy as np

from edgecast_runtime.clock import checked_seconds, clock_name
from edgecast_runtime.distribution import answer_fields
from edgecast_runtime.errors import InputShapeError, InputValueError, StateError, StateMismatchError
from edgecast_runtime.formatting import comparable, float_list, seconds_text
from edgecast_runtime.policy import (
    MISSING,
    NON_FINITE,
    StreamPolicy,
    apply_gap,
    apply_missing,
    count_missing,
    screen_ranges,
)
from edgecast_runtime.readings import Reading, reading_values
from edgecast_runtime.ring_buffer import RingBuffer
from edgecast_runtime.state import (
    StreamState,
    empty_state,
    load_state,
    lock_state_file,
    same_inputs,
    save_state,
    set_aside,
    stream_inputs,
)
from edgecast_runtime.timeguard import FutureGuard, moment_text

if TYPE_CHECKING:
    from datetime import tzinfo

    from edgecast_runtime.model import Forecaster
    from edgecast_runtime.skill.rolling import StreamScorer


class StreamingForecaster:
    """Feed readings with `observe`; thread-safe. With `state_path`, every accepted
    reading is on disk (temporary file, fsync, rename, fsync of the folder) before
    `observe` returns, and a restart resumes from it. A state file written for a
    different model is adopted when that model read the same inputs (features,
    encodings, look-back, interval, clock), as on a hot reload, and said through
    `log(event_dict)`; otherwise it is refused with StateMismatchError, or, with the
    policy's on_state_mismatch "fresh", moved aside to NAME.discarded with a logged
    notice. `now` is the hub's clock (timeguard.FutureGuard)."""

    def __init__(self, forecaster: Forecaster, state_path: str | Path | None = None,
                 policy: Optional[StreamPolicy] = None, clock: Optional[tzinfo] = None,
                 log: Optional[Callable[[dict], None]] = None, scorer: Optional[StreamScorer] = None,
                 now: Callable[[], float] = time.time) -> None:
        self.scorer = scorer  # skill.StreamScorer: scores forecasts once their truth arrives
        self.policy = policy or StreamPolicy()
        # The data's clock for calendar features: given, else the model's own (spec
        # "clock"), else UTC (None).
        self.clock = clock if clock is not None else getattr(forecaster, "clock", None)
        self.state_path = Path(state_path) if state_path else None
        self.adopted_from = None  # the model a state file was written for, when adopted
        self._forecaster = forecaster
        self._lock = threading.Lock()
        self._closed = False
        self._log = log or (lambda event: None)
        self.guard = FutureGuard(self.policy.max_future_seconds, self._log, now)
        self._lock_file = lock_state_file(self.state_path) if self.state_path else None
        try:
            self._state = self._resume(self._log)
        except BaseException:
            self._release_lock_file()
            raise

    @property
    def forecaster(self) -> Forecaster:
        return self._forecaster

    def _resume(self, log: Callable[[dict], None]) -> StreamState:
        if self.state_path is None:
            return empty_state(self._forecaster)
        model = self._forecaster
        try:
            state, previous = load_state(self.state_path, model)
        except StateMismatchError as exc:
            if self.policy.on_state_mismatch != "fresh":
                raise
            # Written for a model that reads other inputs: its readings mean nothing to
            # this one. Kept aside, not deleted: someone may want to look at it.
            aside = set_aside(self.state_path)
            log({"event": "notice", "message": f"starting afresh (--on-state-mismatch fresh): {exc}; "
                 f"the old file is kept as {aside}",
                 "state_discarded": str(self.state_path), "kept_as": str(aside), "sha256": model.sha256})
            return empty_state(model)
        if state is None:
            return empty_state(model)
        if self.guard.untrusted(state.last_timestamp, self._interval(model)):
            log({"event": "notice", "message": f"state file {self.state_path}: its last reading "
                 f"({moment_text(state.last_timestamp)}) is beyond the hub's clock; the stream "
                 f"restarts at the next reading instead of refusing it as out of order"})
        if self.scorer is not None:  # a crash between the state file and the store
            self.scorer.after_reading(state, model)
        if previous is not None:
            save_state(self.state_path, state, model)  # from now on the file names this model
            self.adopted_from = previous
            log({"event": "notice", "message": f"state file {self.state_path} was written for "
                 f"{previous['model_name']!r} (sha256 {str(previous['model_sha256'])[:12]}); "
                 f"{model.model_name!r} (sha256 {model.sha256[:12]}) reads the same inputs "
                 f"and carries on from it",
                 "state_adopted_from": previous, "sha256": model.sha256})
        return state

    # --- observing ---------------------------------------------------------------

    def observe(self, values: Sequence[float | str | None] | np.ndarray | float | str | None,
                timestamp: Optional[float] = None) -> dict:
        """One reading (a value per feature, NaN/None for missing; a timestamp in
        seconds or None). Returns the answer: status "forecast" with the forecast,
        or "filling" while the buffer fills; "notice" says when a policy acted."""
        raw = list(values) if isinstance(values, (list, tuple, np.ndarray)) else [values]
        raw = [None if isinstance(v, float) and math.isnan(v) else v for v in raw]
        clean = reading_values(raw, self._forecaster.layout)  # compass points, left-out calendar
        return self.observe_reading(Reading(clean, timestamp))

    def observe_reading(self, reading: Reading) -> dict:
        with self._lock:
            if self._closed:
                raise StateError("the stream is shut down")
            model = self._forecaster
            if len(reading.values) != model.n_features:
                raise InputShapeError(f"reading needs {model.n_features} value(s) "
                                      f"({', '.join(model.features)}), got {len(reading.values)}")
            timestamp = self._checked_timestamp(reading.timestamp, model)
            values = model.layout.fill_calendar(list(reading.values), timestamp, self.clock)
            reading = Reading(values, timestamp)
            current, restarted = self._trusted_state(reading, model)
            replay = self._replay_duplicate(reading, model, current)
            if replay is not None:
                self._score(self._state, model)  # applied once: a resend scores nothing twice
                return replay
            state, answer = self._advance(current, reading, model, restarted)
            if restarted and self.state_path is not None:
                set_aside(self.state_path)
            self._save(state, model)
            if restarted:
                self._log({"event": "notice", "message": restarted, "state_restarted": True})
            self._state = state
            self._score(state, model)
            return dict(answer)

    def check_timestamp(self, timestamp: Optional[float]) -> Optional[float]:
        """The timestamp as a float when the stream may take it (finite, within the
        calendar, not beyond the hub's clock); InputValueError otherwise."""
        return self._checked_timestamp(timestamp, self._forecaster)

    def _checked_timestamp(self, timestamp: Optional[float], model: Forecaster) -> Optional[float]:
        if timestamp is None:
            return None
        seconds = checked_seconds(timestamp)
        self.guard.check(seconds, self._interval(model))
        return seconds

    def _interval(self, model: Forecaster) -> Optional[float]:
        return self.policy.interval_seconds or model.interval_seconds

    def _trusted_state(self, reading: Reading, model: Forecaster) -> Tuple[StreamState, Optional[str]]:
        """(the state to go on from, a notice when it restarts). A last timestamp beyond
        the hub's clock (accepted before timestamps were bounded, or while the clock was
        unset) cannot order an earlier reading: the stream restarts from this one."""
        state = self._state
        last = state.last_timestamp
        if (reading.timestamp is None or last is None or reading.timestamp >= last
                or not self.guard.untrusted(last, self._interval(model))):
            return state, None
        fresh = empty_state(model)
        fresh.accepted, fresh.missing_values = state.accepted, state.copy().missing_values
        notice = (f"the last accepted reading ({moment_text(last)}) is beyond the hub's clock: "
                  f"the stream restarts here (the old state file is kept as "
                  f"{self.state_path}.discarded)" if self.state_path else
                  f"the last accepted reading ({moment_text(last)}) is beyond the hub's clock: "
                  f"the stream restarts here")
        return fresh, notice

    def _score(self, state: StreamState, model: Forecaster) -> None:
        if self.scorer is None:
            return
        applied = self.scorer.last_timestamp
        if (applied is not None and state.last_timestamp is not None and state.last_timestamp < applied
                and self.guard.untrusted(applied, self._interval(model))):
            # The store followed a timeline the stream has left (see _trusted_state).
            limit = self.guard.limit(self._interval(model))
            if limit is not None:
                self.scorer.rewind(limit)
        self.scorer.after_reading(state, model)

    def _replay_duplicate(self, reading: Reading, model: Forecaster, state: StreamState) -> Optional[dict]:
        """A reading sent again after a crash (same timestamp, same values) gets the
        answer it had, so a producer can resend whatever it saw no answer for."""
        if reading.timestamp is None or state.last_timestamp is None:
            return None
        if reading.timestamp < state.last_timestamp:
            raise InputValueError(f"timestamp {seconds_text(reading.timestamp)} is before the "
                                  f"last accepted reading ({seconds_text(state.last_timestamp)}); "
                                  f"readings must arrive in time order")
        if reading.timestamp > state.last_timestamp:
            return None
        if comparable(reading.values) != state.last_values:
            raise InputValueError(f"a different reading was already accepted for timestamp "
                                  f"{seconds_text(reading.timestamp)}")
        answer = (dict(state.last_answer) if state.last_answer
                  else self._summary(state, model, state.last_timestamp))
        answer["duplicate"] = True
        return answer

    def _advance(self, current: StreamState, reading: Reading, model: Forecaster,
                 restarted: Optional[str] = None) -> Tuple[StreamState, dict]:
        """The next state and the answer for `reading`, leaving `current` untouched
        so that a refused reading or a failed save changes nothing."""
        state = current.copy()
        notices = [restarted] if restarted else []
        interval = self.policy.interval_seconds or model.interval_seconds
        apply_gap(state, reading.timestamp, interval, self.policy,
                  lambda seconds: model.layout.calendar_row(seconds, self.clock), notices)
        values = screen_ranges(state, reading.values, getattr(model, "valid_ranges", None),
                               model.features, notices)
        with np.errstate(over="ignore"):
            row = np.asarray(values, dtype=np.float64).astype(np.float32)
        finite = np.isfinite(row) | (np.isnan(row) & model.layout.may_be_missing)  # a neighbour may be silent
        if finite.all():
            state.buffer.append(row)
            state.held = 0
        else:
            for index in np.flatnonzero(~finite):
                original = reading.values[index]
                if math.isnan(values[index]) and not math.isnan(original):
                    continue  # outside its valid range: counted as such
                count_missing(state, MISSING if math.isnan(original) else NON_FINITE,
                              model.features[index])
            apply_missing(state, row, finite, model.features, model.layout.hold_indices,
                          self.policy, notices)
        if reading.timestamp is not None:
            state.last_timestamp = reading.timestamp
        state.last_values = comparable(reading.values)
        state.accepted += 1
        answer = self._summary(state, model, reading.timestamp)
        if notices:
            answer["notice"] = "; ".join(notices)
        state.last_answer = answer
        return state, answer

    def _summary(self, state: StreamState, model: Forecaster, timestamp: Optional[float] = None) -> dict:
        answer = {"status": "filling"}
        if state.buffer.full:
            started = time.perf_counter()
            extra = {}
            if getattr(model, "distribution", None) is None:
                forecast = model.predict(state.buffer.window())
            else:  # schema 4: the interval as the hub serves it, the probabilities
                distribution = model.predict_distribution(state.buffer.window())
                forecast = distribution.forecast
                offsets = self.scorer.offsets(model) if self.scorer is not None else None
                extra = answer_fields(distribution, model.spec.probabilistic, offsets, model.spec.target_min)
            if self.scorer is not None:
                self.scorer.predicted(time.perf_counter() - started)
            answer = {"status": "forecast", "forecast": float_list(forecast), **extra}
        if timestamp is not None:
            answer["timestamp"] = timestamp
        answer.update(buffered=len(state.buffer), look_back=model.look_back,
                      accepted=state.accepted)
        return answer

    # --- model swap and shutdown ------------------------------------------------------

    def attach_scorer(self, scorer: StreamScorer) -> None:
        """Score forecasts from now on, the state's last reading first (the store lags
        one reading behind after a crash between the two writes)."""
        with self._lock:
            scorer.after_reading(self._state, self._forecaster)
            self.scorer = scorer

    def use_model(self, forecaster: Forecaster) -> str:
        """Switch to a newly loaded model (hot reload). The buffered readings carry
        over when the new model reads the same inputs (state.stream_inputs, the
        rule a restart follows too); otherwise the buffer restarts. Returns a
        sentence saying which."""
        with self._lock:
            old = self._forecaster
            state = self._state.copy()
            state.last_answer = None  # an answer of the old model must not be replayed
            if same_inputs(stream_inputs(old), forecaster):
                outcome = "buffer kept"
            else:
                state.buffer = RingBuffer(forecaster.look_back, forecaster.n_features)
                state.held = 0
                outcome = "buffer reset (the new model reads other inputs)"
            self._save(state, forecaster)
            self._state, self._forecaster = state, forecaster
            return outcome

    def close(self) -> None:
        """Wait for an observation in progress to finish (its state is then on disk),
        refuse later ones, and release the state file."""
        with self._lock:
            self._closed = True
            self._release_lock_file()
            if self.scorer is not None:
                self.scorer.store.close()

    def status(self) -> dict:
        with self._lock:
            state = self._state
            return {"buffered": len(state.buffer), "look_back": self._forecaster.look_back,
                    "accepted": state.accepted, "last_timestamp": state.last_timestamp,
                    "missing_values": state.copy().missing_values,
                    "state": str(self.state_path) if self.state_path else None,
                    "clock": clock_name(self.clock)}

    # --- persistence -----------------------------------------------------------------

    def _save(self, state: StreamState, model: Forecaster) -> None:
        if self.state_path is not None:
            save_state(self.state_path, state, model)

    def _release_lock_file(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
