"""`edgecast-runtime stream`: readings on stdin, one JSON answer line each on stdout."""

from __future__ import annotations

import json
import os
import select
import signal
import sys
from datetime import tzinfo
from typing import TYPE_CHECKING, Dict, Optional, Protocol, TextIO

from edgecast_runtime.admission import SERVICE_LOADING, ModelLoading
from edgecast_runtime.errors import InputError, ModelError, StateError
from edgecast_runtime.lifecycle import FilePath, on_signals, open_streamer, warn_if_memory_only
from edgecast_runtime.logs import log_event
from edgecast_runtime.model import DEFAULT_THREADS
from edgecast_runtime.policy import StreamPolicy
from edgecast_runtime.readings import Header, LineParser
from edgecast_runtime.reload import load_model
from edgecast_runtime.skill.rolling import SkillSettings
from edgecast_runtime.streaming import StreamingForecaster

if TYPE_CHECKING:
    from edgecast_runtime.model import Forecaster

MAX_LINE_BYTES = 64 * 1024


class _Stop(Exception):
    pass


class LineSource(Protocol):
    def readline(self, limit: int) -> bytes: ...


def run_stream(model_path: FilePath, *, threads: int = DEFAULT_THREADS,
               state: Optional[FilePath] = None, policy: Optional[StreamPolicy] = None,
               clock: Optional[tzinfo] = None, skill: Optional[SkillSettings] = None,
               loading: ModelLoading = SERVICE_LOADING) -> int:
    """Readings on stdin, one JSON answer line each on stdout, until end of input
    or SIGTERM/SIGINT (a reading in progress is answered first)."""
    model = load_model(model_path, threads, loading)
    streamer = open_streamer(model, state=state, policy=policy, clock=clock, skill=skill)
    progress = {"busy": False, "stop": False}

    def stop():
        # Waiting for input: stop now. Mid-reading: finish and answer it first.
        progress["stop"] = True
        if not progress["busy"]:
            raise _Stop()

    on_signals({"SIGTERM": stop, "SIGINT": stop})
    warn_if_memory_only(state)
    try:
        with WakeableLines(sys.stdin.fileno()) as source:
            _stream_lines(streamer, model, source, sys.stdout, progress)
    except _Stop:
        pass
    finally:
        streamer.close()
    return 0


class WakeableLines:
    """Lines of the file descriptor `fd`, read so that a signal wakes the wait.

    Linux gives a process's SIGTERM to any of its threads that does not block it
    (onnxruntime's, OpenBLAS's, the run deadline's watchdog), and Python's handler
    only runs on the main thread: blocked in read(2), that thread slept on for good
    (1 stop in 10 to 40 here, and once in CI). signal.set_wakeup_fd makes the C
    handler, on whichever thread, write a byte the main thread's select() waits for."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pending = bytearray()
        self._ended = False
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._previous_wakeup = signal.set_wakeup_fd(self._wake_write, warn_on_full_buffer=False)

    def __enter__(self) -> "WakeableLines":
        return self

    def __exit__(self, *exc_info) -> None:
        signal.set_wakeup_fd(self._previous_wakeup)
        os.close(self._wake_read)
        os.close(self._wake_write)

    def readline(self, limit: int) -> bytes:
        """The next line with its newline, at most `limit` bytes; b"" at the end."""
        while True:
            end = self._pending.find(b"\n", 0, limit)
            if end >= 0 or len(self._pending) >= limit or (self._ended and self._pending):
                size = end + 1 if end >= 0 else min(limit, len(self._pending))
                line = bytes(self._pending[:size])
                del self._pending[:size]
                return line
            if self._ended:
                return b""
            self._fill()

    def _fill(self) -> None:
        # Python runs a signal's handler (which may raise _Stop) as soon as select returns.
        ready, _, _ = select.select([self._fd, self._wake_read], [], [])
        if self._wake_read in ready:
            os.read(self._wake_read, 4096)
        if self._fd in ready:
            chunk = os.read(self._fd, 64 * 1024)
            self._pending += chunk
            self._ended = not chunk


def _stream_lines(streamer: StreamingForecaster, model: Forecaster, source: LineSource, sink: TextIO,
                  progress: Dict[str, bool]) -> None:
    parser = LineParser(model.layout, streamer.clock)
    number = 0
    while not progress["stop"]:
        raw = source.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        progress["busy"] = True
        number += 1
        answer = _answer_line(streamer, parser, raw, source, number)
        sink.write(json.dumps({"line": number, **answer}, separators=(",", ":")) + "\n")
        sink.flush()
        progress["busy"] = False


def _answer_line(streamer: StreamingForecaster, parser: LineParser, raw: bytes, source: LineSource,
                 number: int = 0) -> dict:
    if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
        while raw and not raw.endswith(b"\n"):  # drop the rest of the oversized line
            raw = source.readline(MAX_LINE_BYTES)
        return {"status": "error", "error": f"line longer than {MAX_LINE_BYTES} bytes"}
    try:
        parsed = parser.parse(raw.decode("utf-8"))
        if isinstance(parsed, Header):
            return {"status": "header", "columns": parsed.columns, "time_columns": parsed.time_columns}
        return streamer.observe_reading(parsed)
    except UnicodeDecodeError:
        return {"status": "error", "error": "line is not UTF-8 text"}
    except (InputError, StateError, ModelError) as exc:
        return {"status": "error", "error": str(exc)}
    except Exception as exc:  # one line's fault never ends the stream; logged, no traceback
        error = f"internal error: {type(exc).__name__}: {str(exc)[:200]}"
        log_event({"event": "internal_error", "line": number, "error": error})
        return {"status": "error", "error": error}
