"""The stream's state between readings, its file and the file's lock.

The file is whole JSON, replaced atomically (durable.atomic_write) before a reading
is answered, so a restart resumes exactly where the last answer left off. It names
the model it was written for; another model adopts it only when it reads the same
inputs (`stream_inputs`), the rule hot reload follows too.

The hub's own files (this one, its lock, the forecast store beside it) are private,
mode 0600, and never reached through a symlink: the path itself being one is refused
(O_NOFOLLOW), since a link planted in the state folder could otherwise point the
hub's writes or reads at any file it may reach."""

from __future__ import annotations

import errno
import json
import math
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Dict, Optional, Tuple

import numpy as np

from edgecast_runtime.durable import NOFOLLOW, PRIVATE_MODE, atomic_write, fsync_dir
from edgecast_runtime.errors import StateError, StateMismatchError
from edgecast_runtime.ring_buffer import RingBuffer

if TYPE_CHECKING:
    from edgecast_runtime.model import Forecaster

try:
    import fcntl
except ImportError:  # not on Linux: no cross-process lock on the state file
    fcntl = None

STATE_FORMAT = "edgecast-runtime/stream-state"
STATE_VERSION = 1
DISCARDED_SUFFIX = ".discarded"  # where a state file the stream no longer uses is kept


@dataclass
class StreamState:
    buffer: RingBuffer
    last_timestamp: Optional[float] = None
    last_values: Optional[list] = None  # the last accepted reading, None where missing
    held: int = 0  # consecutive steps filled by holding the last value
    accepted: int = 0  # readings accepted since the state was created
    last_answer: Optional[dict] = None  # replayed when that reading is sent again
    # Values treated as missing, {reason: {feature: count}} (see policy.MISSING_REASONS).
    missing_values: Dict[str, Dict[str, int]] = field(default_factory=dict)

    def copy(self) -> "StreamState":
        counts = {reason: dict(by_feature) for reason, by_feature in self.missing_values.items()}
        return StreamState(self.buffer.copy(), self.last_timestamp, self.last_values,
                           self.held, self.accepted, self.last_answer, counts)


def empty_state(model: Forecaster) -> StreamState:
    return StreamState(RingBuffer(model.look_back, model.n_features))


def stream_inputs(model: Forecaster) -> dict:
    """What the buffered readings mean to a model: which raw columns, encoded how,
    sampled how often, over how many steps, with calendar values in which clock.
    Two models with equal inputs can take over each other's buffer."""
    return {"features": list(model.features),
            "kinds": list(model.feature_kinds),
            "look_back": model.look_back,
            "interval_seconds": model.interval_seconds,
            "clock": model.spec.clock}


def same_inputs(recorded: Optional[dict], model: Forecaster) -> bool:
    return recorded == stream_inputs(model)


def save_state(path: Path, state: StreamState, model: Forecaster) -> None:
    document = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "model_sha256": model.sha256,
        "model_name": model.model_name,
        "features": model.features,
        "look_back": model.look_back,
        "inputs": stream_inputs(model),
        "buffer": state.buffer.rows(),
        "last_timestamp": state.last_timestamp,
        "last_values": state.last_values,
        "held": state.held,
        "accepted": state.accepted,
        "last_answer": state.last_answer,
        "missing_values": state.missing_values,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    data = (json.dumps(document, allow_nan=False, separators=(",", ":")) + "\n").encode()
    try:
        atomic_write(path, data, mode=PRIVATE_MODE)
    except OSError as exc:
        raise StateError(f"cannot save the stream state to {path}: "
                         f"{exc.strerror or exc}; the reading was not accepted") from None


def load_state(path: Path, model: Forecaster) -> Tuple[Optional[StreamState], Optional[dict]]:
    """(the state in the file or None when there is none, the model it was written
    for when `model` adopts it: {"model_name", "model_sha256"}, else None)."""
    try:
        text = read_private(path).decode("utf-8")
    except FileNotFoundError:
        return None, None
    except UnicodeDecodeError as exc:
        raise StateError(f"cannot read the state file {path}: {exc}") from None
    try:
        document = json.loads(text, parse_float=_finite_float, parse_constant=_no_constant)
        if not isinstance(document, dict) or document.get("format") != STATE_FORMAT:
            raise ValueError("not an edgecast-runtime stream state")
    except (ValueError, RecursionError) as exc:
        raise StateError(f"{path} is not a valid state file ({exc}); move it away "
                         f"to start afresh") from None
    if document.get("version") != STATE_VERSION:
        raise StateError(f"{path}: state version {document.get('version')!r} is not "
                         f"supported (expected {STATE_VERSION})")
    previous = None
    if document.get("model_sha256") != model.sha256:
        _require_same_inputs(path, document, model)
        previous = {"model_name": document.get("model_name"),
                    "model_sha256": document.get("model_sha256")}
    state = _state_from_document(path, document, model)
    if previous is not None:
        state.last_answer = None  # an answer of the other model must not be replayed
    return state, previous


def read_private(path: Path) -> bytes:
    """The bytes of a hub's own file, opened without following a symlink and only when
    it is a regular file (a FIFO would block); FileNotFoundError when there is none,
    StateError for anything else that stops it being read."""
    try:
        fd = os.open(path, os.O_RDONLY | NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise StateError(_open_error(path, exc)) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StateError(f"the state file {path} is not a regular file; move it away")
        with os.fdopen(fd, "rb", closefd=False) as stream:
            return stream.read()
    except OSError as exc:
        raise StateError(f"cannot read the state file {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _open_error(path: Path, exc: OSError) -> str:
    if exc.errno == errno.ELOOP or os.path.islink(path):  # (some systems say EMLINK)
        return (f"{path} is a symbolic link; the hub's state files must be regular files (a link "
                f"would send its writes elsewhere): put the file itself there")
    return f"cannot open {path}: {exc.strerror or exc}"


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"number {text[:40]} is beyond float range")
    return number


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number a state file may hold")


def set_aside(path: Path) -> Optional[Path]:
    """Rename a state file the stream no longer uses to NAME.discarded (replacing an
    older one), so that nothing is lost; returns the new path, None when there was none."""
    aside = path.with_name(path.name + DISCARDED_SUFFIX)
    try:
        if not os.path.lexists(path):
            return None
        os.replace(path, aside)
    except OSError as exc:
        raise StateError(f"cannot move {path} aside to {aside.name}: {exc.strerror or exc}") from None
    fsync_dir(path.parent)
    return aside


def _require_same_inputs(path: Path, document: dict, model: Forecaster) -> None:
    recorded = document.get("inputs")
    if same_inputs(recorded, model):
        return
    if isinstance(recorded, dict):
        current = stream_inputs(model)
        differences = ", ".join(f"{key} {recorded.get(key)!r} vs {value!r}"
                                for key, value in current.items() if recorded.get(key) != value)
        why = f"which reads other inputs ({differences})"
    else:
        why = "and does not record which inputs it read"
    raise StateMismatchError(
        f"{path} was written for another model (sha256 "
        f"{str(document.get('model_sha256'))[:12]}, {document.get('model_name')!r}) {why}, "
        f"not {model.sha256[:12]} ({model.model_name!r}); remove it or give "
        f"another state to start afresh (or on_state_mismatch fresh)",
        setting=("state", "on_state_mismatch"))


def _state_from_document(path: Path, document: dict, model: Forecaster) -> StreamState:
    try:
        rows = np.asarray(document["buffer"], dtype=np.float32).reshape(-1, model.n_features)
        missing_allowed = model.layout.may_be_missing  # neighbours' readings may be missing (NaN)
        if len(rows) > model.look_back or not (np.isfinite(rows) | (np.isnan(rows) & missing_allowed)).all():
            raise ValueError("buffer does not fit the model")
        last_ts = document["last_timestamp"]
        counts = document.get("missing_values") or {}
        return StreamState(
            buffer=RingBuffer.from_rows(rows, model.look_back, model.n_features),
            # Any finite number: one beyond the hub's clock or the calendar (written by an
            # older runtime) restarts the stream at the next reading (streaming), never
            # a refusal to start.
            last_timestamp=None if last_ts is None else _finite(last_ts, "last_timestamp"),
            last_values=document["last_values"],
            held=_count(document["held"], "held"),
            accepted=_count(document["accepted"], "accepted"),
            last_answer=document["last_answer"],
            missing_values={str(reason): {str(name): _count(count, "missing_values")
                                          for name, count in by.items()}
                            for reason, by in counts.items()},
        )
    except (AttributeError, KeyError, TypeError, ValueError, OverflowError) as exc:
        raise StateError(f"{path} is not a valid state file ({exc}); move it away "
                         f"to start afresh") from None


def _finite(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {str(value)[:40]}")
    return float(value)


def _count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a count (an integer >= 0), got {str(value)[:40]}")
    return value


def lock_state_file(path: Path) -> Optional[IO[bytes]]:
    """Hold an exclusive lock beside the state file so two processes never
    interleave their readings in one state (the kernel drops it if we die).
    Returns the open lock file (close it to release), or None without fcntl."""
    if fcntl is None:
        return None
    lock_path = path.with_name(path.name + ".lock")
    flags = os.O_RDWR | os.O_CREAT | NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(lock_path, flags, PRIVATE_MODE)
    except OSError as exc:
        if exc.errno == errno.ENOENT and not path.parent.is_dir():  # the lock is the first file made there
            raise StateError(f"the state file {path} cannot be made: its folder {path.parent} "
                             f"does not exist (create it first)") from None
        raise StateError(_open_error(lock_path, exc)) from None
    handle = os.fdopen(fd, "a+b")
    try:
        os.fchmod(fd, PRIVATE_MODE)  # also a lock file an older runtime left world-readable
    except OSError:
        pass
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise StateError(f"the state file {path} is in use by another process") from None
    return handle
