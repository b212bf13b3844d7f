"""`edgecast-runtime stream`: readings on stdin, one JSON answer line each on stdout."""

from __future__ import annotations

import json
import sys
from datetime import tzinfo
from typing import TYPE_CHECKING, BinaryIO, Dict, Optional, TextIO

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
        _stream_lines(streamer, model, sys.stdin.buffer, sys.stdout, progress)
    except _Stop:
        pass
    finally:
        streamer.close()
    return 0


def _stream_lines(streamer: StreamingForecaster, model: Forecaster, source: BinaryIO, sink: TextIO,
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


def _answer_line(streamer: StreamingForecaster, parser: LineParser, raw: bytes, source: BinaryIO,
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
