"""`edgecast-runtime`: info, predict, stream, serve, mqtt.

Every failure ends with one line on stderr, `edgecast-runtime: error: ...`, and a
non-zero exit code (see EXIT_CODES); never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn, Optional, Sequence

from edgecast_runtime import __version__
from edgecast_runtime.cli import commands, option_groups, replay
from edgecast_runtime.cli import stream as stream_command
from edgecast_runtime.cli.arguments import (
    as_flags,
    model_arguments,
    model_loading,
    non_negative_float,
    option_table,
    port,
    positive_float,
    positive_int,
    span_or_zero,
)
from edgecast_runtime.clock import parse_clock
from edgecast_runtime.errors import (
    EdgecastRuntimeError,
    InputError,
    ModelError,
    OptionError,
    StateError,
)
from edgecast_runtime.http.defaults import (
    DEFAULT_DRAIN_SECONDS,
    DEFAULT_HOST,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_BODY,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_PORT,
    DEFAULT_REQUEST_TIMEOUT,
)
from edgecast_runtime.mqtt import bridge as mqtt_module
from edgecast_runtime.mqtt import policy as mqtt_policy
from edgecast_runtime.mqtt import security as mqtt_security
from edgecast_runtime.policy import (
    DEFAULT_ON_STATE_MISMATCH,
    StreamPolicy,
)
from edgecast_runtime.releases.delivery import SHADOW_REPORT_SECONDS
from edgecast_runtime.skill.rolling import DEFAULT_WINDOWS, SkillSettings
from edgecast_runtime.trial import one_line

PROG = "edgecast-runtime"

# Exit codes, most specific first: scripts on a hub can tell a bad model from bad input.
EXIT_CODES = (
    (OptionError, 2),  # options that contradict each other: a usage error
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

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = None
    try:
        parser = build_parser()  # its defaults may come from the environment, and be wrong
        args = parse_command_line(parser, argv)
        return args.run(args)
    except UsageError as exc:
        return fail(str(exc), USAGE_EXIT)
    except EdgecastRuntimeError as exc:  # the library names settings; the command line says flags
        flags = option_table(parser) if parser is not None else {}
        return fail(as_flags(str(exc), exc.settings, flags), exit_code_for(exc))
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
    first_line = one_line(message, 2000)  # no newline or control character from a model
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


def parse_command_line(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """argparse fills a list positional only from the arguments right after the one before
    it: `predict MODEL --threads 1 70 72` left 70 72 unrecognized. A command with such a
    positional (its `intermixed` default) is parsed again with its options anywhere."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args, unrecognized = parser.parse_known_args(argv)
    if unrecognized and getattr(args, "intermixed", None):
        return args.intermixed(argv[1:])  # argv[0] is the command: the top level takes no other
    if unrecognized:
        parser.error(f"unrecognized arguments: {' '.join(unrecognized)}")
    return args


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Run edgecast ONNX forecasters on a hub (onnxruntime + numpy only).",
        epilog="Exit codes: 0 ok, 1 error, 2 usage, 3 bad model, 4 bad input, 5 state file.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.set_defaults(run=lambda args: parser.error("choose a command: "
                                                      "info, predict, stream, serve, score or mqtt"))
    subcommands = parser.add_subparsers(title="commands", metavar="COMMAND")

    info = subcommands.add_parser("info", help="show a model's metadata after validating it")
    model_arguments(info)
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(run=run_info)

    predict = subcommands.add_parser(
        "predict", help="forecast from one window (or a batch)",
        description="Forecast from one window: its values in time order for a one-feature "
                    "model, or --json with [look_back][n_features] (one window) or "
                    "[batch][look_back][n_features] (a batch).")
    model_arguments(predict)
    predict.add_argument("values", nargs="*", default=[], metavar="V", help="window values, oldest first")
    predict.add_argument("--json", dest="json_input", metavar="JSON",
                         help="the window(s) as JSON; '-' reads it from stdin")
    predict.add_argument("--output", choices=commands.OUTPUTS, default=commands.DEFAULT_OUTPUT,
                         help="text: one line of values per window (default); json: an object")
    predict.set_defaults(run=run_predict, intermixed=predict.parse_intermixed_args)

    stream = subcommands.add_parser(
        "stream", help="readings on stdin (CSV or JSON lines), one JSON answer line each",
        description="Read one reading per line on stdin (CSV: [timestamp,]v1,...; or JSON: "
                    '{"values": [...], "timestamp": ...}) and answer each line with one '
                    "JSON line on stdout once the reading is durably stored.")
    model_arguments(stream)
    option_groups.stream_arguments(stream)
    stream.set_defaults(run=run_stream)

    serve = subcommands.add_parser("serve", help="serve forecasts over HTTP (JSON)")
    model_arguments(serve)
    serve.add_argument("--host", default=DEFAULT_HOST,
                       help="address to bind (default %(default)s: loopback only)")
    serve.add_argument("--port", type=port, default=DEFAULT_PORT,
                       help="port (default %(default)s; 0 = any free)")
    serve.add_argument("--max-body", type=positive_int, default=DEFAULT_MAX_BODY, metavar="BYTES",
                       help="largest request body accepted (default %(default)s; larger: 413)")
    serve.add_argument("--max-batch", type=positive_int, default=DEFAULT_MAX_BATCH, metavar="N",
                       help="most windows in one /v1/predict request (default %(default)s)")
    serve.add_argument("--request-timeout", type=positive_float, default=DEFAULT_REQUEST_TIMEOUT,
                       metavar="S", help="drop a connection that sends nothing for S seconds "
                                         "(default %(default)s)")
    serve.add_argument("--drain-seconds", type=non_negative_float,
                       default=DEFAULT_DRAIN_SECONDS, metavar="S",
                       help="on SIGTERM, wait up to S seconds for requests in flight "
                            "(default %(default)s)")
    serve.add_argument("--token-file", metavar="FILE",
                       help="require 'Authorization: Bearer TOKEN' (the file's first line; the file "
                            "owner-only, mode 0600) on every endpoint; /healthz without it says only "
                            "ok or degraded; needed beyond loopback")
    serve.add_argument("--trusted-network", action="store_true",
                       help="serve beyond loopback without a token (the network is trusted)")
    serve.add_argument("--max-connections", type=positive_int, default=DEFAULT_MAX_CONNECTIONS, metavar="N",
                       help="most connections at once (default %(default)s; more: 503)")
    serve.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                       help="also serve Host: NAME (repeatable; IP addresses, localhost, this machine's name are)")
    option_groups.stream_arguments(serve)
    option_groups.reload_arguments(serve)
    option_groups.neighbour_arguments(serve)
    serve.set_defaults(run=run_serve)

    score = subcommands.add_parser(
        "score", help="replay a recorded CSV offline and print the forecast skill table",
        description="Replay readings (a header line naming the features, then "
                    "timestamp,values... lines) through the streaming forecaster in memory and "
                    "print rolling MAE and RMSE per lead of the model and of persistence.")
    model_arguments(score)
    score.add_argument("csv", metavar="CSV", help="recorded readings")
    score.add_argument("--json", action="store_true", help="print JSON")
    option_groups.stream_arguments(score)
    score.set_defaults(run=run_score)

    mqtt = subcommands.add_parser("mqtt", help="readings from an MQTT topic, forecasts to another")
    model_arguments(mqtt)
    mqtt.add_argument("--broker", required=True, metavar="HOST[:PORT]",
                      help=f"MQTT broker (port {mqtt_security.DEFAULT_PORT} when omitted)")
    mqtt.add_argument("--subscribe", required=True, metavar="TOPIC", help="topic of the readings")
    mqtt.add_argument("--publish", required=True, metavar="TOPIC", help="topic for the answers")
    mqtt.add_argument("--client-id", default=None,
                      help="MQTT client id (default: edgecast-[HUB-ID-]HASH, HASH from /etc/machine-id and "
                           "the --subscribe topic); the broker keeps this client's session and queued "
                           "readings under it. No credential: bind ids to user names on the broker "
                           "(docs/releases.md)")
    mqtt.add_argument("--max-payload", type=positive_int, default=mqtt_policy.DEFAULT_MAX_READING_BYTES,
                      metavar="BYTES", help="largest reading accepted (default %(default)s, at most "
                                            f"{mqtt_policy.MAX_READING_BYTES}); larger ones are dropped unread")
    mqtt.add_argument("--keepalive", type=positive_int, default=mqtt_module.DEFAULT_KEEPALIVE,
                      metavar="S", help="MQTT keep-alive in seconds (default %(default)s)")
    mqtt.add_argument("--reconnect-max", type=positive_int,
                      default=mqtt_module.DEFAULT_RECONNECT_MAX, metavar="S",
                      help="longest wait between reconnection attempts (default %(default)s; "
                           "the wait doubles from 1 s)")
    option_groups.broker_security_arguments(mqtt)
    updates = mqtt.add_argument_group("signed releases (docs/releases.md)")
    updates.add_argument("--trust", metavar="PUBKEY.pem",
                         help="install signed releases sent to this hub over MQTT, verified "
                              "with this operator public key; publish the hub's status")
    updates.add_argument("--hub-id", metavar="ID", help="this hub's id in the topics "
                         "edgecast/hub/ID/... (default: --username)")
    updates.add_argument("--release-dir", metavar="DIR", help="where installed releases are "
                         "kept (default: a folder 'releases' beside MODEL.onnx)")
    updates.add_argument("--shadow-report-every", type=span_or_zero, default=SHADOW_REPORT_SECONDS,
                         metavar="SPAN", help="publish the status with a shadow's newly scored pairs at most "
                         "this often (default 6h: up to 56 days of per-origin losses; 0: every pair)")
    mqtt.add_argument("--status-topic", default=None, metavar="TOPIC",
                      help="publish the metrics summary (as GET /v1/metrics), retained, here")
    mqtt.add_argument("--status-interval", type=positive_float,
                      default=mqtt_module.DEFAULT_STATUS_INTERVAL, metavar="S",
                      help="seconds between status messages (default %(default)s)")
    mqtt.add_argument("--alert-topic", default=None, metavar="TOPIC",
                      help="retained alert states here, raise/clear events on TOPIC/events (default "
                           "edgecast/hub/ID/alerts with --hub-id, for a model with alerts)")
    option_groups.stream_arguments(mqtt)
    option_groups.reload_arguments(mqtt)
    option_groups.neighbour_arguments(mqtt)
    mqtt.set_defaults(run=run_mqtt)
    return parser


# --- the long-running commands: the parsed options as named parameters -------------------


def _stream_settings(args: argparse.Namespace) -> dict:
    on_mismatch = args.on_state_mismatch or (
        "fresh" if getattr(args, "trust", None) else DEFAULT_ON_STATE_MISMATCH)
    policy = StreamPolicy(on_missing=args.on_missing, on_gap=args.on_gap,
                          max_hold=args.max_hold, interval_seconds=args.interval,
                          on_state_mismatch=on_mismatch, max_future_seconds=args.max_future_seconds)
    data_clock = parse_clock(args.clock) if args.clock else None
    if args.skill_clear_below > args.skill_raise_above:
        raise UsageError("--skill-clear-below must be at most --skill-raise-above")
    skill = SkillSettings(windows=tuple(args.skill_window or DEFAULT_WINDOWS),
                          grace_seconds=args.grace, checks=args.alarm_checks,
                          min_scored=args.alarm_min_scored, drift_threshold=args.drift_threshold,
                          skill_raise_above=args.skill_raise_above,
                          skill_clear_below=args.skill_clear_below, skill_checks=args.skill_checks,
                          skill_alarm_window=args.skill_alarm_window, interval_step=args.interval_step,
                          alert_level=args.alert_level, alert_margin=args.alert_margin,
                          alert_checks=args.alert_checks, enabled=getattr(args, "score", True))
    return {"threads": args.threads, "state": args.state, "policy": policy, "clock": data_clock,
            "skill": skill, "loading": model_loading(args)}


def run_stream(args: argparse.Namespace) -> int:
    return stream_command.run_stream(args.model, **_stream_settings(args))


def run_serve(args: argparse.Namespace) -> int:
    from edgecast_runtime.http import command as serve_command  # only `serve` loads the HTTP server

    return serve_command.run_serve(args.model, host=args.host, port=args.port,
                                   poll_interval=args.poll_interval, max_body=args.max_body,
                                   max_batch=args.max_batch, request_timeout=args.request_timeout,
                                   drain_seconds=args.drain_seconds, token_file=args.token_file,
                                   trusted_network=args.trusted_network,
                                   neighbours=option_groups.neighbour_settings(args),
                                   max_connections=args.max_connections, allowed_hosts=args.allowed_host,
                                   **_stream_settings(args))


def run_score(args: argparse.Namespace) -> int:
    settings = _stream_settings(args)
    if settings.pop("state"):
        raise UsageError("score replays in memory; --state is not used")
    if not settings["skill"].enabled:
        raise UsageError("score scores forecasts; --no-score is for stream, serve and mqtt")
    return replay.score_csv(args.model, args.csv, as_json=args.json, **settings)


def run_mqtt(args: argparse.Namespace) -> int:
    return mqtt_module.run_mqtt(args.model, broker=args.broker, subscribe=args.subscribe,
                                publish=args.publish, client_id=args.client_id,
                                keepalive=args.keepalive, reconnect_max=args.reconnect_max,
                                poll_interval=args.poll_interval,
                                security=option_groups.broker_security(args), trust=args.trust,
                                hub_id=args.hub_id or args.username,
                                release_dir=args.release_dir, status_topic=args.status_topic,
                                status_interval=args.status_interval, neighbours=option_groups.neighbour_settings(args),
                                max_payload=args.max_payload, alert_topic=args.alert_topic,
                                shadow_report_seconds=args.shadow_report_every, **_stream_settings(args))


# --- info and predict ----------------------------------------------------------------------


def run_info(args: argparse.Namespace) -> int:
    return commands.show_info(args.model, threads=args.threads, as_json=args.json,
                              loading=model_loading(args))


def run_predict(args: argparse.Namespace) -> int:
    if args.json_input is not None and args.values:
        raise UsageError("give the window either as values or with --json, not both")
    if args.json_input is None and not args.values:
        raise UsageError("give the window's values (V1 V2 ...) or --json (see "
                         "'edgecast-runtime predict --help')")
    return commands.predict(args.model, threads=args.threads, values=args.values,
                            json_text=args.json_input, output=args.output,
                            loading=model_loading(args))
