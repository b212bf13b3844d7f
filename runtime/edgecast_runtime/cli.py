"""`edgecast-runtime`: info, predict, stream, serve, mqtt.

Every failure ends with one line on stderr, `edgecast-runtime: error: ...`, and a
non-zero exit code (see EXIT_CODES); never a traceback.
"""

import argparse
import json
import os
import sys

from . import __version__
from .errors import (
    EdgecastRuntimeError,
    InputError,
    InputShapeError,
    InputValueError,
    ModelError,
    StateError,
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
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    info = commands.add_parser("info", help="show a model's metadata after validating it")
    _model_arguments(info)
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(run=run_info)

    predict = commands.add_parser(
        "predict", help="forecast from one window (or a batch)",
        description="Forecast from one window: its values in time order for a one-feature "
                    "model, or --json with [look_back][n_features] (one window) or "
                    "[batch][look_back][n_features] (a batch).")
    _model_arguments(predict)
    predict.add_argument("values", nargs="*", default=[], metavar="V", help="window values, oldest first")
    predict.add_argument("--json", dest="json_input", metavar="JSON",
                         help="the window(s) as JSON; '-' reads it from stdin")
    predict.add_argument("--output", choices=("text", "json"), default="text",
                         help="text: one line of values per window (default); json: an object")
    predict.set_defaults(run=run_predict)

    stream = commands.add_parser(
        "stream", help="readings on stdin (CSV or JSON lines), one JSON answer line each",
        description="Read one reading per line on stdin (CSV: [timestamp,]v1,...; or JSON: "
                    '{"values": [...], "timestamp": ...}) and answer each line with one '
                    "JSON line on stdout once the reading is durably stored.")
    _model_arguments(stream)
    _stream_arguments(stream)
    stream.set_defaults(run=_run_lazily("service", "run_stream"))

    serve = commands.add_parser("serve", help="serve forecasts over HTTP (JSON)")
    _model_arguments(serve)
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default 127.0.0.1: loopback only)")
    serve.add_argument("--port", type=_port, default=8080, help="port (default 8080; 0 = any free)")
    serve.add_argument("--max-body", type=_positive_int, default=1024 * 1024, metavar="BYTES",
                       help="largest request body accepted (default 1 MiB; larger: 413)")
    serve.add_argument("--max-batch", type=_positive_int, default=1024, metavar="N",
                       help="most windows in one /v1/predict request (default 1024)")
    serve.add_argument("--request-timeout", type=_positive_float, default=10.0, metavar="S",
                       help="drop a connection that sends nothing for S seconds (default 10)")
    _stream_arguments(serve)
    _reload_arguments(serve)
    serve.set_defaults(run=_run_lazily("service", "run_serve"))

    mqtt = commands.add_parser("mqtt", help="readings from an MQTT topic, forecasts to another")
    _model_arguments(mqtt)
    mqtt.add_argument("--broker", required=True, metavar="HOST[:PORT]",
                      help="MQTT broker (port 1883 when omitted)")
    mqtt.add_argument("--subscribe", required=True, metavar="TOPIC", help="topic of the readings")
    mqtt.add_argument("--publish", required=True, metavar="TOPIC", help="topic for the answers")
    mqtt.add_argument("--client-id", default=None,
                      help="MQTT client id (default edgecast-runtime-HOSTNAME); the broker "
                           "keeps this client's session and queued readings under it")
    mqtt.add_argument("--keepalive", type=_positive_int, default=30, metavar="S",
                      help="MQTT keep-alive in seconds (default 30)")
    mqtt.add_argument("--reconnect-max", type=_positive_int, default=30, metavar="S",
                      help="longest wait between reconnection attempts (default 30; "
                           "the wait doubles from 1 s)")
    _stream_arguments(mqtt)
    _reload_arguments(mqtt)
    mqtt.set_defaults(run=_run_lazily("mqtt", "run_mqtt"))
    return parser


def _model_arguments(parser) -> None:
    parser.add_argument("model", metavar="MODEL.onnx", help="an ONNX model exported by edgecast")
    parser.add_argument("--threads", type=_positive_int, default=1,
                        help="onnxruntime intra-op threads (default 1)")


def _stream_arguments(parser) -> None:
    group = parser.add_argument_group("streaming")
    group.add_argument("--state", metavar="FILE",
                       help="durable state file (without it, readings live in memory only)")
    group.add_argument("--on-missing", choices=("reset", "hold", "refuse"), default="reset",
                       help="a missing or non-finite value: reset the buffer (default), hold "
                            "the last value, or refuse the reading")
    group.add_argument("--on-gap", choices=("reset", "hold"), default="reset",
                       help="missed sampling steps between timestamps: reset the buffer "
                            "(default) or hold the last value")
    group.add_argument("--max-hold", type=_non_negative_int, default=3, metavar="N",
                       help="most consecutive steps filled by holding (default 3), then reset")
    group.add_argument("--interval", type=_positive_float, default=None, metavar="SECONDS",
                       help="sampling interval for gap detection (default: the model's)")
    group.add_argument("--clock", type=_clock, default=None, metavar="ZONE",
                       help="the clock of the training data's timestamps, for calendar "
                            "features (hour_of_day, day_of_week) and for ISO times without "
                            "a zone: UTC, an offset like +08:00, or a zone name like "
                            "Asia/Shanghai (default: the model's recorded clock, else UTC)")


def _reload_arguments(parser) -> None:
    parser.add_argument("--poll-interval", type=_non_negative_float, default=2.0, metavar="S",
                        help="check the model file for replacement every S seconds "
                             "(default 2; 0 = only on SIGHUP)")


def _run_lazily(module: str, function: str):
    """Import the long-running commands only when used (paho-mqtt is optional)."""
    def run(args):
        from importlib import import_module
        return getattr(import_module(f"{__package__}.{module}"), function)(args)
    return run


def _positive_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 1, "a positive integer")


def _non_negative_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 0, "an integer >= 0")


def _positive_float(text: str) -> float:
    return _number(text, float, lambda v: 0 < v < float("inf"), "a positive number")


def _non_negative_float(text: str) -> float:
    return _number(text, float, lambda v: 0 <= v < float("inf"), "a number >= 0")


def _clock(text: str) -> str:
    from .clock import parse_clock
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


# --- info and predict ----------------------------------------------------------------------


def load_forecaster(args):
    from .model import Forecaster
    return Forecaster(args.model, threads=args.threads)


def run_info(args) -> int:
    model = load_forecaster(args)
    info = model.describe()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    interval = info["interval_seconds"]
    rows = [
        ("model", info["model_name"]),
        ("file", info["path"]),
        ("sha256", info["sha256"]),
        ("bytes", info["bytes"]),
        ("schema", info["schema_version"]),
        ("target", info["target"]),
        ("features", ", ".join(info["features"])),
        ("encodings", ", ".join(f"{e['feature']} {e['kind']}" for e in info["encodings"])),
        ("hold_last", ", ".join(info["hold_last"]) or "none"),
        ("formulation", (info["target_formulation"] or {}).get("kind", "level")),
        ("units", info["target_units"] or "not stated"),
        ("look_back", info["look_back"]),
        ("horizon", info["horizon"]),
        ("interval", f"{interval:g} s" if interval else "unknown (no timestamps in training)"),
        ("clock", info["clock"] or "not recorded (UTC unless --clock)"),
        ("input", f"{info['input']['name']} float32 [batch, {model.look_back}, {model.n_features}]"),
        ("output", f"{info['output']['name']} float32 [batch, {model.horizon}]"),
        ("manifest", f"sha256 checked against {info['manifest']}" if info["manifest"]
         else "none beside the model (sha256 not checked)"),
        ("onnxruntime", info["onnxruntime"]),
    ]
    for key, value in rows:
        print(f"{key:<12} {value}")
    return 0


def run_predict(args) -> int:
    if args.json_input is not None and args.values:
        raise UsageError("give the window either as values or with --json, not both")
    if args.json_input is None and not args.values:
        raise UsageError("give the window's values (V1 V2 ...) or --json (see "
                         "'edgecast-runtime predict --help')")
    model = load_forecaster(args)
    if args.json_input is not None:
        document = _json_argument(args.json_input)
        forecasts, batch = _predict_document(model, document)
    else:
        forecasts, batch = model.predict(_command_line_values(args.values, model))[None], False
    _print_forecasts(model, forecasts, batch, args.output)
    return 0


def _command_line_values(texts, model):
    if model.n_features != 1:
        raise InputShapeError(f"this model reads {model.n_features} features "
                              f"({', '.join(model.features)}); pass the window with --json "
                              f"as [[...], ...] of shape [{model.look_back}, {model.n_features}]")
    values = []
    for position, text in enumerate(texts, start=1):
        try:
            values.append(float(text))
        except ValueError:
            raise InputValueError(f"value {position} of the window is not a number: "
                                  f"{text[:40]!r}") from None
    return values


def _json_argument(text: str):
    if text == "-":
        text = sys.stdin.read()
    try:
        return json.loads(text)
    except RecursionError:
        raise InputValueError("--json: nested too deeply") from None
    except ValueError as exc:
        raise InputValueError(f"--json is not valid JSON: {exc}") from None


def _predict_document(model, document):
    """One window ([look_back][n_features], or [look_back] for one feature) or a
    batch ([batch][look_back][n_features], or [batch][look_back] for one feature)."""
    import numpy as np

    from .inputs import to_float32

    array = to_float32(model.layout.directions_to_degrees(document, "--json"), "--json")
    one_window = array.shape == model.window_shape or (
        model.n_features == 1 and array.shape == (model.look_back,))
    if one_window:
        return model.predict(array)[None], False
    if array.ndim == 3 or (model.n_features == 1 and array.ndim == 2):
        return model.predict_batch(array), True
    expected = f"[{model.look_back}, {model.n_features}] or [batch, {model.look_back}, " \
               f"{model.n_features}]"
    raise InputShapeError(f"--json: expected a window of shape {expected}, "
                          f"got shape {list(np.shape(array))}")


def _print_forecasts(model, forecasts, batch: bool, output: str) -> None:
    from .streaming import float_list
    rows = [float_list(row) for row in forecasts]
    if output == "json":
        body = {"forecasts": rows} if batch else {"forecast": rows[0]}
        body.update(target=model.target, horizon=model.horizon,
                    model_name=model.model_name, model_sha256=model.sha256)
        print(json.dumps(body))
        return
    for row in rows:
        print(" ".join(repr(value) for value in row))
