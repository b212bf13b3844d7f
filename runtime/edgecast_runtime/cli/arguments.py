"""Value types of the runtime CLI's options: each turns a bad value into argparse's
one-line usage error naming what was expected."""
from __future__ import annotations

import argparse
import os
import re
from typing import Callable, TypeVar

from edgecast_runtime.admission import DEFAULT_MAX_MODEL_BYTES, TRIAL_TIMEOUT_SECONDS, ModelLoading
from edgecast_runtime.clock import parse_clock
from edgecast_runtime.errors import EdgecastRuntimeError
from edgecast_runtime.model import DEFAULT_THREADS
from edgecast_runtime.skill.rolling import parse_window

TRIAL_SECONDS_VARIABLE = "EDGECAST_RUNTIME_TRIAL_SECONDS"

Number = TypeVar("Number", int, float)


def positive_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 1, "a positive integer")


def non_negative_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 0, "an integer >= 0")


def positive_float(text: str) -> float:
    return _number(text, float, lambda v: 0 < v < float("inf"), "a positive number")


def non_negative_float(text: str) -> float:
    return _number(text, float, lambda v: 0 <= v < float("inf"), "a number >= 0")


def clock(text: str) -> str:
    try:
        parse_clock(text)
    except EdgecastRuntimeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def window(text: str) -> float:
    try:
        return parse_window(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a span like 72h, 30d or 3600, "
                                         f"got {text!r}") from None


def span_or_zero(text: str) -> float:
    """A span like `window`'s, or 0."""
    return 0.0 if text.strip() in ("0", "0s") else window(text)


def port(text: str) -> int:
    return _number(text, int, lambda v: 0 <= v <= 65535, "a port number (0-65535)")


def _number(text: str, kind: Callable[[str], Number], ok: Callable[[Number], bool], wanted: str) -> Number:
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not ok(value):
        raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
    return value


def model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model file and how it is loaded: options every command takes."""
    parser.add_argument("model", metavar="MODEL.onnx", help="an ONNX model exported by edgecast")
    parser.add_argument("--threads", type=positive_int, default=DEFAULT_THREADS,
                        help="onnxruntime intra-op threads (default %(default)s)")
    parser.add_argument("--require-manifest", action="store_true",
                        help="refuse a model without a manifest.json beside it listing its "
                             "sha256 (exit 3; a refused reload)")
    parser.add_argument("--max-model-bytes", type=positive_int, default=DEFAULT_MAX_MODEL_BYTES,
                        metavar="BYTES", help="refuse a larger model file unread "
                                              "(default %(default)s)")
    parser.add_argument("--trial-seconds", type=positive_float, default=default_trial_seconds(), metavar="S",
                        help="stop a model's trial (a load and one forecast in a child process) after "
                             f"S seconds (default %(default)s, or ${TRIAL_SECONDS_VARIABLE}; a slow board "
                             "may need more)")
    parser.add_argument("--allow-control-flow", action="store_true",
                        help="admit a model with Loop, Scan or If (an edgecast export has none; "
                             "its run time can depend on the readings: --run-timeout bounds it)")


def default_trial_seconds() -> float:
    """The trial's time limit unless the command line says otherwise: a slow board sets it
    once for every command (the unit's Environment=)."""
    text = os.environ.get(TRIAL_SECONDS_VARIABLE)
    if text is None:
        return TRIAL_TIMEOUT_SECONDS
    try:
        return positive_float(text)
    except argparse.ArgumentTypeError as exc:
        raise EdgecastRuntimeError(f"${TRIAL_SECONDS_VARIABLE}: {exc}") from None


def model_loading(args: argparse.Namespace) -> ModelLoading:
    """Every model the command line loads is tried first in a bounded child process;
    the long-running commands bound each model call (--run-timeout)."""
    return ModelLoading(require_manifest=args.require_manifest,
                        max_model_bytes=args.max_model_bytes, trial=True, trial_seconds=args.trial_seconds,
                        run_timeout=getattr(args, "run_timeout", None),
                        allow_control_flow=args.allow_control_flow)


# The library's names for settings whose option is spelled otherwise (`allowed_hosts` is
# the list `--allowed-host` builds).
SETTING_DESTS = {"allowed_hosts": "allowed_host"}


def option_table(parser: argparse.ArgumentParser) -> dict[str, str]:
    """{dest: '--long-option'} of every option of the parser and its subcommands."""
    table: dict[str, str] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                for dest, option in option_table(subparser).items():
                    table.setdefault(dest, option)
        longs = [option for option in action.option_strings if option.startswith("--")]
        if longs:
            table.setdefault(action.dest, max(longs, key=len))
    return table


def as_flags(message: str, settings: tuple[str, ...], table: dict[str, str]) -> str:
    """A library message that names settings (`neighbour_wait`), said with the command
    line's flags (`--neighbour-wait`): each named setting standing as a word of its own."""
    for setting in settings:
        flag = table.get(SETTING_DESTS.get(setting, setting))
        if flag:
            message = re.sub(rf"(?:(?<=^)|(?<=[\s(])){re.escape(setting)}(?=[\s),:;]|$)", flag, message)
    return message
