"""The long-running commands `stream` and `serve`, and what they share with `mqtt`:
the streaming set-up and the signal handling. Every setting is a named parameter
(the command line's parsing stays in cli.py)."""

from __future__ import annotations

import json
import signal
import sys
import threading
from datetime import tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Dict, Optional, Sequence, TextIO, Tuple, Union

from .errors import EdgecastRuntimeError, InputError, ModelError, StateError
from .http_auth import serve_token
from .http_limits import allowed_host_names
from .logs import log_event
from .metrics import HubMetrics
from .model import DEFAULT_THREADS
from .model_check import SERVICE_LOADING, ModelLoading
from .neighbours import open_link
from .policy import StreamPolicy
from .readings import Header, LineParser
from .reload import DEFAULT_POLL_SECONDS, ModelHolder, ModelWatcher, load_model
from .server import (
    DEFAULT_HOST,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_BODY,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_PORT,
    DEFAULT_REQUEST_TIMEOUT,
    ForecastServer,
)
from .skill import SkillSettings, open_scorer
from .streaming import StreamingForecaster
from .systemd_notify import Notifier

if TYPE_CHECKING:
    from .model import Forecaster

FilePath = Union[str, Path]  # a model or state file, as text or a Path
MAX_LINE_BYTES = 64 * 1024
DEFAULT_DRAIN_SECONDS = 10.0  # how long shutdown waits for requests in flight


def open_streamer(model: Forecaster, *, state: Optional[FilePath] = None,
                  policy: Optional[StreamPolicy] = None, clock: Optional[tzinfo] = None,
                  skill: Optional[SkillSettings] = None) -> StreamingForecaster:
    """The streaming forecaster of `model`, scoring its forecasts (skill.py) when the
    sampling interval is known; a state file written for another model with the
    same inputs is adopted with a notice in the log."""
    policy = policy or StreamPolicy()
    streamer = StreamingForecaster(model, state_path=state, policy=policy, clock=clock,
                                   log=log_event)
    try:  # after the state file's lock: its errors come first, and name the cause
        scorer = open_scorer(model, Path(state) if state else None,
                             policy.interval_seconds or model.interval_seconds,
                             skill or SkillSettings(), log_event)
        if scorer is not None:
            streamer.attach_scorer(scorer)
    except BaseException:
        streamer.close()
        raise
    return streamer


def warn_if_memory_only(state: Optional[FilePath]) -> None:
    """Said once the command has started, so a start-up error stays the only line."""
    if not state:
        log_event({"event": "notice", "message": "no --state: buffered readings are kept in "
                                                 "memory only and lost on restart"})


def open_holder(model_path: FilePath, *, threads: int = DEFAULT_THREADS,
                state: Optional[FilePath] = None, policy: Optional[StreamPolicy] = None,
                clock: Optional[tzinfo] = None, poll_interval: float = DEFAULT_POLL_SECONDS,
                skill: Optional[SkillSettings] = None, loading: ModelLoading = SERVICE_LOADING
                ) -> Tuple[ModelHolder, StreamingForecaster, ModelWatcher]:
    """The model holder, a streamer that follows its swaps, and a started watcher
    thread that reloads the model when its file is replaced or on SIGHUP
    (`poll_interval` 0: on SIGHUP only)."""
    holder = ModelHolder(model_path, threads=threads, log=log_event, loading=loading)
    streamer = open_streamer(holder.current, state=state, policy=policy, clock=clock, skill=skill)

    def follow(new: Forecaster, old: Forecaster) -> None:
        outcome = streamer.use_model(new)
        log_event({"event": "stream_model_changed", "sha256": new.sha256, "outcome": outcome})

    holder.on_swap(follow)
    watcher = ModelWatcher(holder, interval=poll_interval or None)
    return holder, streamer, watcher.start()


def on_signals(handlers: dict) -> None:
    for name, handler in handlers.items():
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), lambda signum, frame, h=handler: h())


# --- stream ----------------------------------------------------------------------------


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


def feed_watchdog(server: ForecastServer, notifier: Notifier, watcher: ModelWatcher) -> None:
    """Ping systemd's watchdog from the server's own loop (serve_forever calls
    service_actions() after every poll), and only while the model watcher runs:
    a hung loop or a dead watcher stops the pings and gets the service restarted."""
    loop_actions = server.service_actions

    def service_actions() -> None:
        loop_actions()
        notifier.watchdog(watcher.alive)

    server.service_actions = service_actions


# --- serve -------------------------------------------------------------------------------


def run_serve(model_path: FilePath, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
              threads: int = DEFAULT_THREADS, state: Optional[FilePath] = None,
              policy: Optional[StreamPolicy] = None, clock: Optional[tzinfo] = None,
              poll_interval: float = DEFAULT_POLL_SECONDS,
              max_body: int = DEFAULT_MAX_BODY, max_batch: int = DEFAULT_MAX_BATCH,
              request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
              drain_seconds: float = DEFAULT_DRAIN_SECONDS, token_file: Optional[FilePath] = None,
              trusted_network: bool = False, skill: Optional[SkillSettings] = None,
              neighbours: Optional[dict] = None, max_connections: int = DEFAULT_MAX_CONNECTIONS,
              allowed_hosts: Sequence[str] = (), loading: ModelLoading = SERVICE_LOADING) -> int:
    """Serve HTTP until SIGTERM/SIGINT, then wait up to `drain_seconds` for the
    requests in flight; SIGHUP reloads the model. Beyond loopback a bearer token
    (`token_file`) is required unless `trusted_network` (http_auth). With `neighbours`
    (a station id among them), POST /v1/observe takes neighbours' readings too
    ({"station": ID}). At most `max_connections` at once; a request's Host must be an
    IP address, localhost, this machine's name or one of `allowed_hosts` (http_limits)."""
    token = serve_token(host, token_file, trusted_network)
    allowed = allowed_host_names(allowed_hosts, host)
    holder, streamer, watcher = open_holder(model_path, threads=threads, state=state,
                                            policy=policy, clock=clock,
                                            poll_interval=poll_interval, skill=skill,
                                            loading=loading)
    try:
        server = ForecastServer((host, port), holder, streamer, max_body=max_body,
                                max_batch=max_batch, request_timeout=request_timeout, token=token,
                                metrics=HubMetrics(lambda: holder.current, streamer),
                                max_connections=max_connections, allowed_hosts=allowed)
    except OSError as exc:
        watcher.stop()
        streamer.close()
        raise EdgecastRuntimeError(f"cannot listen on {host}:{port}: "
                                   f"{exc.strerror or exc}") from None

    def shutdown():
        threading.Thread(target=server.shutdown, name="shutdown", daemon=True).start()

    notifier = Notifier()
    feed_watchdog(server, notifier, watcher)

    on_signals({"SIGTERM": shutdown, "SIGINT": shutdown, "SIGHUP": watcher.request_reload})
    if neighbours and neighbours.get("station"):
        server.neighbours = open_link(streamer, state=state, **neighbours)
        if server.neighbours is not None:
            server.neighbours.start_releasing(lambda answer: log_event({"event": "forecast", **answer}),
                                              threading.Event())
    bound_host, bound_port = server.server_address[:2]
    model = holder.current
    log_event({"event": "listening", "host": bound_host, "port": bound_port,
               "model_name": model.model_name, "sha256": model.sha256, "state": state,
               "token_required": token is not None, "max_connections": max_connections,
               "allowed_hosts": sorted(allowed)})
    warn_if_memory_only(state)
    notifier.ready(f"serving on {bound_host}:{bound_port}")
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        notifier.stopping()
        server.server_close()
        drained = server.wait_idle(drain_seconds)
        watcher.stop()
        streamer.close()
        log_event({"event": "stopped", "drained": drained})
    return 0
