"""The long-running commands `stream` and `serve`, and what they share with `mqtt`:
the streaming set-up from command-line options and the signal handling."""

import json
import signal
import sys
import threading

from .clock import parse_clock
from .errors import EdgecastRuntimeError, InputError, ModelError, StateError
from .logs import log_event
from .readings import Header, LineParser
from .reload import ModelHolder, ModelWatcher
from .streaming import StreamingForecaster, StreamPolicy

MAX_LINE_BYTES = 64 * 1024
DRAIN_SECONDS = 10.0


def policy_from_args(args) -> StreamPolicy:
    return StreamPolicy(on_missing=args.on_missing, on_gap=args.on_gap,
                        max_hold=args.max_hold, interval_seconds=args.interval)


def clock_from_args(args):
    return parse_clock(args.clock) if getattr(args, "clock", None) else None


def open_streamer(model, args) -> StreamingForecaster:
    return StreamingForecaster(model, state_path=args.state, policy=policy_from_args(args),
                               clock=clock_from_args(args))


def warn_if_memory_only(args) -> None:
    """Said once the command has started, so a start-up error stays the only line."""
    if not args.state:
        log_event({"event": "notice", "message": "no --state: buffered readings are kept in "
                                                 "memory only and lost on restart"})


def open_holder(args):
    """The model holder, a streamer that follows its swaps, and a started watcher
    thread that reloads the model when its file is replaced or on SIGHUP."""
    holder = ModelHolder(args.model, threads=args.threads, log=log_event)
    streamer = open_streamer(holder.current, args)

    def follow(new, old):
        outcome = streamer.use_model(new)
        log_event({"event": "stream_model_changed", "sha256": new.sha256, "outcome": outcome})

    holder.on_swap(follow)
    watcher = ModelWatcher(holder, interval=args.poll_interval or None)
    return holder, streamer, watcher.start()


def on_signals(handlers: dict) -> None:
    for name, handler in handlers.items():
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), lambda signum, frame, h=handler: h())


# --- stream ----------------------------------------------------------------------------


class _Stop(Exception):
    pass


def run_stream(args) -> int:
    from .model import Forecaster

    model = Forecaster(args.model, threads=args.threads)
    streamer = open_streamer(model, args)
    state = {"busy": False, "stop": False}

    def stop():
        # Waiting for input: stop now. Mid-reading: finish and answer it first.
        state["stop"] = True
        if not state["busy"]:
            raise _Stop()

    on_signals({"SIGTERM": stop, "SIGINT": stop})
    warn_if_memory_only(args)
    try:
        _stream_lines(streamer, model, sys.stdin.buffer, sys.stdout, state)
    except _Stop:
        pass
    finally:
        streamer.close()
    return 0


def _stream_lines(streamer, model, source, sink, state) -> None:
    parser = LineParser(model.layout, streamer.clock)
    number = 0
    while not state["stop"]:
        raw = source.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        state["busy"] = True
        number += 1
        answer = _answer_line(streamer, parser, raw, source)
        sink.write(json.dumps({"line": number, **answer}, separators=(",", ":")) + "\n")
        sink.flush()
        state["busy"] = False


def _answer_line(streamer, parser, raw: bytes, source) -> dict:
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


# --- serve -------------------------------------------------------------------------------


def run_serve(args) -> int:
    from .server import ForecastServer

    holder, streamer, watcher = open_holder(args)
    try:
        server = ForecastServer((args.host, args.port), holder, streamer,
                                max_body=args.max_body, max_batch=args.max_batch,
                                request_timeout=args.request_timeout)
    except OSError as exc:
        watcher.stop()
        streamer.close()
        raise EdgecastRuntimeError(f"cannot listen on {args.host}:{args.port}: "
                                   f"{exc.strerror or exc}") from None

    def shutdown():
        threading.Thread(target=server.shutdown, name="shutdown", daemon=True).start()

    on_signals({"SIGTERM": shutdown, "SIGINT": shutdown, "SIGHUP": watcher.request_reload})
    host, port = server.server_address[:2]
    model = holder.current
    log_event({"event": "listening", "host": host, "port": port, "model_name": model.model_name,
               "sha256": model.sha256, "state": args.state})
    warn_if_memory_only(args)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        drained = server.wait_idle(DRAIN_SECONDS)
        watcher.stop()
        streamer.close()
        log_event({"event": "stopped", "drained": drained})
    return 0
