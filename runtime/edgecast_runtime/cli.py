"""`edgecast-runtime`: info, predict, stream, serve, mqtt.

Every failure ends with one line on stderr, `edgecast-runtime: error: ...`, and a
non-zero exit code (see EXIT_CODES); never a traceback.
"""

import argparse
import os
import sys

from . import __version__, commands, neighbours, service
from . import mqtt as mqtt_module
from .clock import parse_clock
from .errors import (
    EdgecastRuntimeError,
    InputError,
    ModelError,
    StateError,
)
from .model import DEFAULT_THREADS
from .policy import (
    DEFAULT_MAX_HOLD,
    DEFAULT_ON_GAP,
    DEFAULT_ON_MISSING,
    GAP_POLICIES,
    MISSING_POLICIES,
    StreamPolicy,
)
from .reload import DEFAULT_POLL_SECONDS
from .server import (
    DEFAULT_HOST,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_BODY,
    DEFAULT_PORT,
    DEFAULT_REQUEST_TIMEOUT,
)

PROG = "edgecast-runtime"

# Exit codes, most specific first: scripts on a hub can tell a bad model from bad input.
EXIT_CODES = (
    (ModelError, 3),  # also SchemaVersionError, IntegrityError
    (InputError, 4),
    (StateError, 5),
    (EdgecastRuntimeError, 1),
)
USAGE_EXIT = 2


class UsageError(Exception):
    pass


class OneLineParser(argparse.ArgumentParser):
    """argparse prints the usage and then the error; a hub's log wants one line."""

    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')")


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.run(args)
    except UsageError as exc:
        return fail(str(exc), USAGE_EXIT)
    except EdgecastRuntimeError as exc:
        return fail(str(exc), exit_code_for(exc))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _silence_stdout()  # the reader went away (`| head`): stop quietly, as cat would
        return 141
    except Exception as exc:  # the promise is one line, not a traceback
        if os.environ.get("EDGECAST_DEBUG"):
            raise
        return fail(f"internal error: {type(exc).__name__}: {exc} "
                    f"(set EDGECAST_DEBUG=1 for a traceback)", 1)


def fail(message: str, code: int) -> int:
    first_line = " ".join(str(message).split("\n"))
    try:
        sys.stderr.write(f"{PROG}: error: {first_line}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    return code


def exit_code_for(exc: Exception) -> int:
    for kind, code in EXIT_CODES:
        if isinstance(exc, kind):
            return code
    return 1


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


# --- argument parsing ------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Run edgecast ONNX forecasters on a hub (onnxruntime + numpy only).",
        epilog="Exit codes: 0 ok, 1 error, 2 usage, 3 bad model, 4 bad input, 5 state file.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.set_defaults(run=lambda args: parser.error("choose a command: "
                                                      "info, predict, stream, serve or mqtt"))
    subcommands = parser.add_subparsers(title="commands", metavar="COMMAND")

    info = subcommands.add_parser("info", help="show a model's metadata after validating it")
    _model_arguments(info)
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(run=run_info)

    predict = subcommands.add_parser(
        "predict", help="forecast from one window (or a batch)",
        description="Forecast from one window: its values in time order for a one-feature "
                    "model, or --json with [look_back][n_features] (one window) or "
                    "[batch][look_back][n_features] (a batch).")
    _model_arguments(predict)
    predict.add_argument("values", nargs="*", default=[], metavar="V", help="window values, oldest first")
    predict.add_argument("--json", dest="json_input", metavar="JSON",
                         help="the window(s) as JSON; '-' reads it from stdin")
    predict.add_argument("--output", choices=commands.OUTPUTS, default=commands.DEFAULT_OUTPUT,
                         help="text: one line of values per window (default); json: an object")
    predict.set_defaults(run=run_predict)

    stream = subcommands.add_parser(
        "stream", help="readings on stdin (CSV or JSON lines), one JSON answer line each",
        description="Read one reading per line on stdin (CSV: [timestamp,]v1,...; or JSON: "
                    '{"values": [...], "timestamp": ...}) and answer each line with one '
                    "JSON line on stdout once the reading is durably stored.")
    _model_arguments(stream)
    _stream_arguments(stream)
    stream.set_defaults(run=run_stream)

    serve = subcommands.add_parser("serve", help="serve forecasts over HTTP (JSON)")
    _model_arguments(serve)
    serve.add_argument("--host", default=DEFAULT_HOST,
                       help="address to bind (default %(default)s: loopback only)")
    serve.add_argument("--port", type=_port, default=DEFAULT_PORT,
                       help="port (default %(default)s; 0 = any free)")
    serve.add_argument("--max-body", type=_positive_int, default=DEFAULT_MAX_BODY, metavar="BYTES",
                       help="largest request body accepted (default %(default)s; larger: 413)")
    serve.add_argument("--max-batch", type=_positive_int, default=DEFAULT_MAX_BATCH, metavar="N",
                       help="most windows in one /v1/predict request (default %(default)s)")
    serve.add_argument("--request-timeout", type=_positive_float, default=DEFAULT_REQUEST_TIMEOUT,
                       metavar="S", help="drop a connection that sends nothing for S seconds "
                                         "(default %(default)s)")
    serve.add_argument("--drain-seconds", type=_non_negative_float,
                       default=service.DEFAULT_DRAIN_SECONDS, metavar="S",
                       help="on SIGTERM, wait up to S seconds for requests in flight "
                            "(default %(default)s)")
    _stream_arguments(serve)
    _reload_arguments(serve)
    _neighbour_arguments(serve)
    serve.set_defaults(run=run_serve)

    mqtt = subcommands.add_parser("mqtt", help="readings from an MQTT topic, forecasts to another")
    _model_arguments(mqtt)
    mqtt.add_argument("--broker", required=True, metavar="HOST[:PORT]",
                      help=f"MQTT broker (port {mqtt_module.DEFAULT_PORT} when omitted)")
    mqtt.add_argument("--subscribe", required=True, metavar="TOPIC", help="topic of the readings")
    mqtt.add_argument("--publish", required=True, metavar="TOPIC", help="topic for the answers")
    mqtt.add_argument("--client-id", default=None,
                      help=f"MQTT client id (default {mqtt_module.CLIENT_ID_PREFIX}HOSTNAME); "
                           f"the broker keeps this client's session and queued readings under it")
    mqtt.add_argument("--keepalive", type=_positive_int, default=mqtt_module.DEFAULT_KEEPALIVE,
                      metavar="S", help="MQTT keep-alive in seconds (default %(default)s)")
    mqtt.add_argument("--reconnect-max", type=_positive_int,
                      default=mqtt_module.DEFAULT_RECONNECT_MAX, metavar="S",
                      help="longest wait between reconnection attempts (default %(default)s; "
                           "the wait doubles from 1 s)")
    _stream_arguments(mqtt)
    _reload_arguments(mqtt)
    _neighbour_arguments(mqtt)
    mqtt.set_defaults(run=run_mqtt)
    return parser


def _model_arguments(parser) -> None:
    parser.add_argument("model", metavar="MODEL.onnx", help="an ONNX model exported by edgecast")
    parser.add_argument("--threads", type=_positive_int, default=DEFAULT_THREADS,
                        help="onnxruntime intra-op threads (default %(default)s)")


def _stream_arguments(parser) -> None:
    group = parser.add_argument_group("streaming")
    group.add_argument("--state", metavar="FILE",
                       help="durable state file (without it, readings live in memory only)")
    group.add_argument("--on-missing", choices=MISSING_POLICIES, default=DEFAULT_ON_MISSING,
                       help="a missing, non-finite or out-of-range value: reset the buffer, "
                            "hold the last value, or refuse the reading (default %(default)s)")
    group.add_argument("--on-gap", choices=GAP_POLICIES, default=DEFAULT_ON_GAP,
                       help="missed sampling steps between timestamps: reset the buffer "
                            "or hold the last value (default %(default)s)")
    group.add_argument("--max-hold", type=_non_negative_int, default=DEFAULT_MAX_HOLD, metavar="N",
                       help="most consecutive steps filled by holding (default %(default)s), "
                            "then reset")
    group.add_argument("--interval", type=_positive_float, default=None, metavar="SECONDS",
                       help="sampling interval for gap detection (default: the model's)")
    group.add_argument("--clock", type=_clock, default=None, metavar="ZONE",
                       help="the clock of the training data's timestamps, for calendar "
                            "features (hour_of_day, day_of_week) and for ISO times without "
                            "a zone: UTC, an offset like +08:00, or a zone name like "
                            "Asia/Shanghai (default: the model's recorded clock, else UTC)")


def _neighbour_arguments(parser) -> None:
    group = parser.add_argument_group("neighbours (a model that reads other stations' readings)")
    group.add_argument("--station", default=None, help="this hub's station id (as in the model's neighbours)")
    group.add_argument("--neighbour-topic", default=neighbours.READINGS_TOPIC, metavar="TEMPLATE",
                       help="topic of a station's readings, with {station} (default %(default)s)")
    group.add_argument("--neighbour-wait", type=_non_negative_float, default=neighbours.DEFAULT_WAIT_SECONDS,
                       metavar="S", help="wait up to S seconds for the neighbours' readings of the same time, "
                       "then forecast with those present (default %(default)s)")
    group.add_argument("--publish-readings", action="store_true",
                       help="publish this hub's own readings on the readings topic for its neighbours")


def _neighbour_settings(args) -> dict:
    return {"station": args.station, "topic_template": args.neighbour_topic,
            "wait_seconds": args.neighbour_wait, "publish_readings": args.publish_readings}


def _reload_arguments(parser) -> None:
    parser.add_argument("--poll-interval", type=_non_negative_float, default=DEFAULT_POLL_SECONDS,
                        metavar="S", help="check the model file for replacement every S seconds "
                                          "(default %(default)s; 0 = only on SIGHUP)")


def _positive_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 1, "a positive integer")


def _non_negative_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 0, "an integer >= 0")


def _positive_float(text: str) -> float:
    return _number(text, float, lambda v: 0 < v < float("inf"), "a positive number")


def _non_negative_float(text: str) -> float:
    return _number(text, float, lambda v: 0 <= v < float("inf"), "a number >= 0")


def _clock(text: str) -> str:
    try:
        parse_clock(text)
    except EdgecastRuntimeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _port(text: str) -> int:
    return _number(text, int, lambda v: 0 <= v <= 65535, "a port number (0-65535)")


def _number(text, kind, ok, wanted):
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not ok(value):
        raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
    return value


# --- the long-running commands: the parsed options as named parameters -------------------


def _stream_settings(args) -> dict:
    policy = StreamPolicy(on_missing=args.on_missing, on_gap=args.on_gap,
                          max_hold=args.max_hold, interval_seconds=args.interval)
    clock = parse_clock(args.clock) if args.clock else None
    return {"threads": args.threads, "state": args.state, "policy": policy, "clock": clock}


def run_stream(args) -> int:
    return service.run_stream(args.model, **_stream_settings(args))


def run_serve(args) -> int:
    return service.run_serve(args.model, host=args.host, port=args.port,
                             poll_interval=args.poll_interval, max_body=args.max_body,
                             max_batch=args.max_batch, request_timeout=args.request_timeout,
                             drain_seconds=args.drain_seconds, neighbours=_neighbour_settings(args),
                             **_stream_settings(args))


def run_mqtt(args) -> int:
    return mqtt_module.run_mqtt(args.model, broker=args.broker, subscribe=args.subscribe,
                                publish=args.publish, client_id=args.client_id,
                                keepalive=args.keepalive, reconnect_max=args.reconnect_max,
                                poll_interval=args.poll_interval, neighbours=_neighbour_settings(args),
                                **_stream_settings(args))


# --- info and predict ----------------------------------------------------------------------


def run_info(args) -> int:
    return commands.show_info(args.model, threads=args.threads, as_json=args.json)


def run_predict(args) -> int:
    if args.json_input is not None and args.values:
        raise UsageError("give the window either as values or with --json, not both")
    if args.json_input is None and not args.values:
        raise UsageError("give the window's values (V1 V2 ...) or --json (see "
                         "'edgecast-runtime predict --help')")
    return commands.predict(args.model, threads=args.threads, values=args.values,
                            json_text=args.json_input, output=args.output)
