"""The streaming forecaster: readings in one at a time, a ring buffer of the last
look-back readings, a forecast once it is full, a stated policy for missing values
and timestamp gaps, and a state file written durably before any answer is given."""

import json
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .clock import clock_name
from .durable import atomic_write
from .errors import EdgecastRuntimeError, InputShapeError, InputValueError, StateError
from .readings import Reading, reading_values

try:
    import fcntl
except ImportError:  # not on Linux: no cross-process lock on the state file
    fcntl = None

STATE_FORMAT = "edgecast-runtime/stream-state"
STATE_VERSION = 1
MISSING_POLICIES = ("reset", "hold", "refuse")
GAP_POLICIES = ("reset", "hold")


@dataclass(frozen=True)
class StreamPolicy:
    """What to do when a reading has a missing or non-finite value, and when the
    time since the previous reading spans one or more missed sampling steps.

    The default resets the buffer in both cases: no forecast is ever made from a
    window with a hole in it, at the cost of waiting look_back readings again.
    "hold" repeats the last value for at most `max_hold` consecutive steps, then
    resets. "refuse" (missing values only) rejects the reading and leaves the
    state as it was; a later reading then shows the hole as a timestamp gap.
    `interval_seconds` overrides the model's sampling interval for gap detection.
    """

    on_missing: str = "reset"
    on_gap: str = "reset"
    max_hold: int = 3
    interval_seconds: Optional[float] = None

    def __post_init__(self):
        if self.on_missing not in MISSING_POLICIES:
            raise EdgecastRuntimeError(f"on_missing must be one of {MISSING_POLICIES}, "
                                       f"got {self.on_missing!r}")
        if self.on_gap not in GAP_POLICIES:
            raise EdgecastRuntimeError(f"on_gap must be one of {GAP_POLICIES}, got {self.on_gap!r}")
        if isinstance(self.max_hold, bool) or not isinstance(self.max_hold, int) or self.max_hold < 0:
            raise EdgecastRuntimeError(f"max_hold must be an integer >= 0, got {self.max_hold!r}")
        interval = self.interval_seconds
        if interval is not None and not (isinstance(interval, (int, float))
                                         and math.isfinite(interval) and interval > 0):
            raise EdgecastRuntimeError(f"interval_seconds must be a positive number, got {interval!r}")


class RingBuffer:
    """The last `capacity` rows of `width` float32 values, oldest first on read."""

    def __init__(self, capacity: int, width: int):
        self._data = np.zeros((capacity, width), dtype=np.float32)
        self._start = 0
        self._size = 0

    @property
    def capacity(self) -> int:
        return self._data.shape[0]

    @property
    def full(self) -> bool:
        return self._size == self.capacity

    def __len__(self) -> int:
        return self._size

    def append(self, row) -> None:
        self._data[(self._start + self._size) % self.capacity] = row
        if self.full:
            self._start = (self._start + 1) % self.capacity
        else:
            self._size += 1

    def clear(self) -> None:
        self._start = 0
        self._size = 0

    def last(self) -> Optional[np.ndarray]:
        if not self._size:
            return None
        return self._data[(self._start + self._size - 1) % self.capacity].copy()

    def window(self) -> np.ndarray:
        """The rows in time order, as a fresh C-contiguous array."""
        order = (self._start + np.arange(self._size)) % self.capacity
        return self._data[order]

    def rows(self) -> list:
        return [[float(v) for v in row] for row in self.window()]

    def copy(self) -> "RingBuffer":
        twin = RingBuffer(*self._data.shape)
        twin._data[:] = self._data
        twin._start, twin._size = self._start, self._size
        return twin

    @classmethod
    def from_rows(cls, rows, capacity: int, width: int) -> "RingBuffer":
        buffer = cls(capacity, width)
        for row in rows[-capacity:]:
            buffer.append(row)
        return buffer


@dataclass
class StreamState:
    buffer: RingBuffer
    last_timestamp: Optional[float] = None
    last_values: Optional[list] = None  # the last accepted reading, None where missing
    held: int = 0  # consecutive steps filled by holding the last value
    accepted: int = 0  # readings accepted since the state was created
    last_answer: Optional[dict] = None  # replayed when that reading is sent again

    def copy(self) -> "StreamState":
        return StreamState(self.buffer.copy(), self.last_timestamp, self.last_values,
                           self.held, self.accepted, self.last_answer)


class StreamingForecaster:
    """Feed readings with `observe`; thread-safe. With `state_path`, every accepted
    reading is on disk (temporary file, fsync, rename, fsync of the folder) before
    `observe` returns, and a restart resumes from it. A state file written for a
    different model is refused with StateError."""

    def __init__(self, forecaster, state_path=None, policy: Optional[StreamPolicy] = None,
                 clock=None):
        self.policy = policy or StreamPolicy()
        # The data's clock for calendar features: given, else the model's own (spec
        # "clock"), else UTC (None).
        self.clock = clock if clock is not None else getattr(forecaster, "clock", None)
        self.state_path = Path(state_path) if state_path else None
        self._forecaster = forecaster
        self._lock = threading.Lock()
        self._closed = False
        self._lock_file = _lock_state_file(self.state_path) if self.state_path else None
        try:
            loaded = self._load_state() if self.state_path else None
            self._state = loaded or self._empty_state()
        except BaseException:
            self._release_lock_file()
            raise

    @property
    def forecaster(self):
        return self._forecaster

    # --- observing ---------------------------------------------------------------

    def observe(self, values, timestamp=None) -> dict:
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
            reading = self._complete(reading, model)
            replay = self._replay_duplicate(reading, model)
            if replay is not None:
                return replay
            state, answer = self._advance(self._state, reading, model)
            self._save(state, model)
            self._state = state
            return dict(answer)

    def _complete(self, reading: Reading, model) -> Reading:
        """Calendar features (schema 2) come from the reading's own timestamp in the
        data's clock; a value given for one must agree with it."""
        layout = model.layout
        if not layout.calendar:
            return reading
        values = list(reading.values)
        names = layout.calendar_names
        if reading.timestamp is None:
            absent = [model.features[i] for i in layout.calendar if not math.isfinite(values[i])]
            if absent:
                raise InputValueError(f"reading has no timestamp, so {', '.join(absent)} cannot be "
                                      f"derived; send a timestamp (or the value of "
                                      f"{', '.join(names)})")
            return reading
        derived = layout.calendar_row(reading.timestamp, self.clock)
        for index, value in derived.items():
            given = values[index]
            if math.isfinite(given) and given != value:
                raise InputValueError(
                    f"{model.features[index]} {given:g} disagrees with the timestamp "
                    f"{_format_ts(reading.timestamp)} ({model.features[index]} {value:g} in the "
                    f"data's clock, {clock_name(self.clock)}); leave it out or fix the clock")
            values[index] = value
        return Reading(values, reading.timestamp)

    def _replay_duplicate(self, reading: Reading, model) -> Optional[dict]:
        """A reading sent again after a crash (same timestamp, same values) gets the
        answer it had, so a producer can resend whatever it saw no answer for."""
        state = self._state
        if reading.timestamp is None or state.last_timestamp is None:
            return None
        if reading.timestamp < state.last_timestamp:
            raise InputValueError(f"timestamp {_format_ts(reading.timestamp)} is before the last "
                                  f"accepted reading ({_format_ts(state.last_timestamp)}); "
                                  f"readings must arrive in time order")
        if reading.timestamp > state.last_timestamp:
            return None
        if _comparable(reading.values) != state.last_values:
            raise InputValueError(f"a different reading was already accepted for timestamp "
                                  f"{_format_ts(reading.timestamp)}")
        answer = (dict(state.last_answer) if state.last_answer
                  else self._summary(state, model, state.last_timestamp))
        answer["duplicate"] = True
        return answer

    def _advance(self, current: StreamState, reading: Reading, model):
        """The next state and the answer for `reading`, leaving `current` untouched
        so that a refused reading or a failed save changes nothing."""
        state = current.copy()
        notices = []
        self._apply_gap(state, reading, notices)
        row = np.asarray(reading.values, dtype=np.float64)
        with np.errstate(over="ignore"):
            row32 = row.astype(np.float32)
        finite = np.isfinite(row32)
        if finite.all():
            state.buffer.append(row32)
            state.held = 0
        else:
            self._apply_missing(state, row32, finite, model, notices)
        if reading.timestamp is not None:
            state.last_timestamp = reading.timestamp
        state.last_values = _comparable(reading.values)
        state.accepted += 1
        answer = self._summary(state, model, reading.timestamp)
        if notices:
            answer["notice"] = "; ".join(notices)
        state.last_answer = answer
        return state, answer

    def _apply_gap(self, state: StreamState, reading: Reading, notices: list) -> None:
        interval = self.policy.interval_seconds or self._forecaster.interval_seconds
        if not interval or reading.timestamp is None or state.last_timestamp is None:
            return
        # Readings are consecutive steps while less than 1.5 intervals apart.
        missed = int(round((reading.timestamp - state.last_timestamp) / interval)) - 1
        if missed < 1:
            return
        can_hold = (self.policy.on_gap == "hold" and len(state.buffer)
                    and state.held + missed <= self.policy.max_hold)
        if can_hold:
            last = state.buffer.last()
            layout = self._forecaster.layout
            for step in range(1, missed + 1):
                row = last.copy()
                # A held step keeps the last readings, but its calendar is its own.
                for index, value in layout.calendar_row(state.last_timestamp + step * interval,
                                                        self.clock).items():
                    row[index] = value
                state.buffer.append(row)
            state.held += missed
            notices.append(f"gap of {missed} missed step(s): last value held")
        else:
            state.buffer.clear()
            state.held = 0
            notices.append(f"gap of {missed} missed step(s): buffer reset")

    def _apply_missing(self, state: StreamState, row, finite, model, notices: list) -> None:
        names = [name for name, ok in zip(model.features, finite) if not ok]
        hold_last = model.layout.hold_indices
        only_held = all(i in hold_last for i, ok in enumerate(finite) if not ok)
        if only_held and len(state.buffer) and state.held < self.policy.max_hold:
            # Wind directions are never interpolated: a missing one repeats the last
            # (gap_policy.hold_last), whatever --on-missing says, up to --max-hold steps.
            state.buffer.append(np.where(finite, row, state.buffer.last()))
            state.held += 1
            notices.append(f"missing value for {', '.join(names)}: last value held (hold_last)")
            return
        policy = self.policy.on_missing
        if policy == "refuse":
            raise InputValueError(f"missing or non-finite value for {', '.join(names)}; "
                                  f"reading refused (policy on_missing=refuse)")
        if policy == "hold" and len(state.buffer) and state.held < self.policy.max_hold:
            state.buffer.append(np.where(finite, row, state.buffer.last()))
            state.held += 1
            notices.append(f"missing value for {', '.join(names)}: last value held")
            return
        state.buffer.clear()
        state.held = 0
        notices.append(f"missing value for {', '.join(names)}: buffer reset")

    def _summary(self, state: StreamState, model, timestamp=None) -> dict:
        answer = {"status": "filling"}
        if state.buffer.full:
            answer = {"status": "forecast",
                      "forecast": float_list(model.predict(state.buffer.window()))}
        if timestamp is not None:
            answer["timestamp"] = timestamp
        answer.update(buffered=len(state.buffer), look_back=model.look_back,
                      accepted=state.accepted)
        return answer

    # --- model swap and shutdown ------------------------------------------------------

    def use_model(self, forecaster) -> str:
        """Switch to a newly loaded model (hot reload). The buffered readings carry
        over when the new model reads the same features over the same look-back;
        otherwise the buffer restarts. Returns a sentence saying which."""
        with self._lock:
            old = self._forecaster
            state = self._state.copy()
            state.last_answer = None  # an answer of the old model must not be replayed
            if forecaster.features == old.features and forecaster.look_back == old.look_back:
                outcome = "buffer kept"
            else:
                state.buffer = RingBuffer(forecaster.look_back, forecaster.n_features)
                state.held = 0
                outcome = "buffer reset (the new model reads other features or look-back)"
            self._save(state, forecaster)
            self._state, self._forecaster = state, forecaster
            return outcome

    def close(self) -> None:
        """Wait for an observation in progress to finish (its state is then on disk),
        refuse later ones, and release the state file."""
        with self._lock:
            self._closed = True
            self._release_lock_file()

    def status(self) -> dict:
        with self._lock:
            state = self._state
            return {"buffered": len(state.buffer), "look_back": self._forecaster.look_back,
                    "accepted": state.accepted, "last_timestamp": state.last_timestamp,
                    "state_file": str(self.state_path) if self.state_path else None,
                    "clock": clock_name(self.clock)}

    # --- persistence -----------------------------------------------------------------

    def _empty_state(self) -> StreamState:
        model = self._forecaster
        return StreamState(RingBuffer(model.look_back, model.n_features))

    def _save(self, state: StreamState, model) -> None:
        if self.state_path is None:
            return
        document = {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "model_sha256": model.sha256,
            "model_name": model.model_name,
            "features": model.features,
            "look_back": model.look_back,
            "buffer": state.buffer.rows(),
            "last_timestamp": state.last_timestamp,
            "last_values": state.last_values,
            "held": state.held,
            "accepted": state.accepted,
            "last_answer": state.last_answer,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        data = (json.dumps(document, allow_nan=False, separators=(",", ":")) + "\n").encode()
        try:
            atomic_write(self.state_path, data)
        except OSError as exc:
            raise StateError(f"cannot save the stream state to {self.state_path}: "
                             f"{exc.strerror or exc}; the reading was not accepted") from None

    def _load_state(self) -> Optional[StreamState]:
        path, model = self.state_path, self._forecaster
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise StateError(f"cannot read the state file {path}: {exc}") from None
        try:
            document = json.loads(text)
            if not isinstance(document, dict) or document.get("format") != STATE_FORMAT:
                raise ValueError("not an edgecast-runtime stream state")
        except ValueError as exc:
            raise StateError(f"{path} is not a valid state file ({exc}); move it away "
                             f"to start afresh") from None
        if document.get("version") != STATE_VERSION:
            raise StateError(f"{path}: state version {document.get('version')!r} is not "
                             f"supported (expected {STATE_VERSION})")
        if document.get("model_sha256") != model.sha256:
            raise StateError(
                f"{path} was written for another model (sha256 "
                f"{str(document.get('model_sha256'))[:12]}, {document.get('model_name')!r}), "
                f"not {model.sha256[:12]} ({model.model_name!r}); remove it or pass "
                f"another --state to start afresh")
        return _state_from_document(path, document, model)

    def _release_lock_file(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None


def _state_from_document(path: Path, document: dict, model) -> StreamState:
    try:
        rows = np.asarray(document["buffer"], dtype=np.float32).reshape(-1, model.n_features)
        if len(rows) > model.look_back or not np.isfinite(rows).all():
            raise ValueError("buffer does not fit the model")
        last_ts = document["last_timestamp"]
        return StreamState(
            buffer=RingBuffer.from_rows(rows, model.look_back, model.n_features),
            last_timestamp=None if last_ts is None else float(last_ts),
            last_values=document["last_values"],
            held=int(document["held"]),
            accepted=int(document["accepted"]),
            last_answer=document["last_answer"],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StateError(f"{path} is not a valid state file ({exc}); move it away "
                         f"to start afresh") from None


def _lock_state_file(path: Path):
    """Hold an exclusive lock beside the state file so two processes never
    interleave their readings in one state (the kernel drops it if we die)."""
    if fcntl is None:
        return None
    lock_path = path.with_name(path.name + ".lock")
    try:
        handle = open(lock_path, "a+b")
    except OSError as exc:
        raise StateError(f"cannot open {lock_path}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise StateError(f"the state file {path} is in use by another process") from None
    return handle


def _comparable(values) -> list:
    return [float(v) if math.isfinite(v) else None for v in values]


def _format_ts(seconds: float) -> str:
    return f"{seconds:.3f}".rstrip("0").rstrip(".")


def float_list(array) -> list:
    """Float32 values as the shortest decimals that round-trip to them, for JSON."""
    return [float(str(np.float32(v))) for v in np.ravel(array)]
