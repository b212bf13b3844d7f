"""The option groups several `edgecast-runtime` commands share (streaming, broker
security, neighbours, reload), and their values as the services' named parameters."""

from __future__ import annotations

import argparse

from edgecast_runtime import neighbours
from edgecast_runtime.cli.arguments import (
    clock,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    window,
)
from edgecast_runtime.deadline import DEFAULT_RUN_TIMEOUT
from edgecast_runtime.policy import (
    DEFAULT_MAX_HOLD,
    DEFAULT_ON_GAP,
    DEFAULT_ON_MISSING,
    GAP_POLICIES,
    MISSING_POLICIES,
    STATE_MISMATCH_POLICIES,
)
from edgecast_runtime.reload import DEFAULT_POLL_SECONDS
from edgecast_runtime.skill.rolling import SkillSettings
from edgecast_runtime.skill.store import DEFAULT_GRACE_SECONDS


def stream_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("streaming")
    group.add_argument("--state", metavar="FILE",
                       help="durable state file (without it, readings live in memory only)")
    group.add_argument("--on-missing", choices=MISSING_POLICIES, default=DEFAULT_ON_MISSING,
                       help="a missing, non-finite or out-of-range value: reset the buffer, "
                            "hold the last value, or refuse the reading (default %(default)s)")
    group.add_argument("--on-gap", choices=GAP_POLICIES, default=DEFAULT_ON_GAP,
                       help="missed sampling steps between timestamps: reset the buffer "
                            "or hold the last value (default %(default)s)")
    group.add_argument("--max-hold", type=non_negative_int, default=DEFAULT_MAX_HOLD, metavar="N",
                       help="most consecutive steps filled by holding (default %(default)s), "
                            "then reset")
    group.add_argument("--interval", type=positive_float, default=None, metavar="SECONDS",
                       help="sampling interval for gap detection (default: the model's)")
    group.add_argument("--skill-window", type=window, action="append", metavar="SPAN",
                       help="a rolling window for forecast skill, e.g. 72h or 30d (repeatable; "
                            "default 72h and 30d)")
    group.add_argument("--grace", type=window, default=DEFAULT_GRACE_SECONDS, metavar="SPAN",
                       help="how long after its last target step a forecast waits for its "
                            "truth before it expires (default 6h)")
    group.add_argument("--alarm-checks", type=positive_int, default=SkillSettings.checks,
                       metavar="K", help="consecutive checks that raise or clear the input-drift "
                                         "alarm (default %(default)s)")
    skill_alarm_arguments(group)
    interval_arguments(group)
    group.add_argument("--alarm-min-scored", type=positive_int, default=SkillSettings.min_scored,
                       metavar="N", help="scored forecasts per lead before the skill alarm "
                                         "judges (default %(default)s)")
    group.add_argument("--drift-threshold", type=positive_float,
                       default=SkillSettings.drift_threshold, metavar="Z",
                       help="input-drift alarm: recent mean this many training standard "
                            "deviations from the training mean (default %(default)s)")
    group.add_argument("--no-score", dest="score", action="store_false",
                       help="do not keep forecasts for scoring (no store beside the state file)")
    group.add_argument("--clock", type=clock, default=None, metavar="ZONE",
                       help="the clock of the training data's timestamps, for calendar "
                            "features (hour_of_day, day_of_week) and for ISO times without "
                            "a zone: UTC, an offset like +08:00, or a zone name like "
                            "Asia/Shanghai (default: the model's recorded clock, else UTC)")
    group.add_argument("--on-state-mismatch", choices=STATE_MISMATCH_POLICIES, default=None,
                       help="a state file written for a model that reads other inputs: refuse "
                            "to start (exit 5) or start afresh with a logged notice (default "
                            "refuse; fresh with --trust)")
    group.add_argument("--max-future-seconds", type=non_negative_float, default=None, metavar="S",
                       help="refuse a reading stamped more than S seconds ahead of the hub's clock "
                            "(default: one sampling interval + 900; not checked before 2020)")
    group.add_argument("--run-timeout", type=positive_float, default=DEFAULT_RUN_TIMEOUT, metavar="S",
                       help="stop a model call that runs longer than S seconds; that reading is "
                            "refused with an error (HTTP 503) and the next one is served "
                            "(default %(default)s)")


def skill_alarm_arguments(group: argparse._ArgumentGroup) -> None:
    """The skill alarm's margin and hysteresis (skill/rolling.py)."""
    group.add_argument("--skill-raise-above", type=positive_float,
                       default=SkillSettings.skill_raise_above, metavar="R",
                       help="skill alarm: raised when the pooled model/persistence RMSE ratio "
                            "is above R (default %(default)s) ...")
    group.add_argument("--skill-clear-below", type=positive_float,
                       default=SkillSettings.skill_clear_below, metavar="R",
                       help="... and cleared only once it is below R (default %(default)s; "
                            "at most --skill-raise-above)")
    group.add_argument("--skill-alarm-window", type=window, default=SkillSettings.skill_alarm_window,
                       metavar="SPAN", help="the span over which the skill alarm judges the "
                                            "ratio (default 7d)")
    group.add_argument("--skill-checks", type=positive_int, default=SkillSettings.skill_checks,
                       metavar="K", help="consecutive scored forecasts past a threshold that "
                                         "raise or clear the skill alarm (default %(default)s)")


def interval_arguments(group: argparse._ArgumentGroup) -> None:
    """A schema-4 model's interval adjustment and alerts (skill/calibration.py)."""
    group.add_argument("--interval-step", type=positive_float, default=SkillSettings.interval_step,
                       metavar="ETA", help="step of the hub's interval offset per scored truth, in "
                                           "half-widths of the model's interval (default %(default)s)")
    group.add_argument("--alert-level", type=positive_float, default=SkillSettings.alert_level, metavar="P",
                       help="raise an alert when its probability (largest over the leads) is >= P "
                            "(default %(default)s) ...")
    group.add_argument("--alert-margin", type=non_negative_float, default=SkillSettings.alert_margin,
                       metavar="M", help="... and clear it below P - M (default %(default)s)")
    group.add_argument("--alert-checks", type=positive_int, default=SkillSettings.alert_checks, metavar="N",
                       help="consecutive forecasts past the level that raise or clear an alert "
                            "(default %(default)s)")


def broker_security_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("broker authentication and TLS")
    group.add_argument("--username", help="MQTT user name")
    group.add_argument("--password-file", metavar="FILE", help="MQTT password: the file's first line")
    group.add_argument("--password-env", metavar="VAR", help="MQTT password: this environment variable")
    group.add_argument("--ca-file", metavar="FILE", help="TLS: verify the broker with this CA")
    group.add_argument("--cert-file", metavar="FILE", help="TLS: client certificate")
    group.add_argument("--key-file", metavar="FILE", help="TLS: client certificate's key")
    group.add_argument("--tls", action="store_true", help="TLS with the system's CAs")


def broker_security(args: argparse.Namespace) -> dict:
    return {"username": args.username, "password_file": args.password_file,
            "password_env": args.password_env, "ca_file": args.ca_file,
            "cert_file": args.cert_file, "key_file": args.key_file, "tls": args.tls}


def neighbour_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("neighbours (a model that reads other stations' readings)")
    group.add_argument("--station", default=None, help="this hub's station id (as in the model's neighbours)")
    group.add_argument("--neighbour-topic", default=neighbours.READINGS_TOPIC, metavar="TEMPLATE",
                       help="topic of a station's readings, with {station} (default %(default)s)")
    group.add_argument("--neighbour-wait", type=non_negative_float, default=neighbours.DEFAULT_WAIT_SECONDS,
                       metavar="S", help="wait up to S seconds for the neighbours' readings of the same time, "
                       "then forecast with those present (default %(default)s; serve: GET /v1/forecast/latest "
                       "shows a forecast released so)")
    group.add_argument("--publish-readings", action="store_true",
                       help="publish this hub's own readings on the readings topic for its neighbours")


def neighbour_settings(args: argparse.Namespace) -> dict:
    return {"station": args.station, "topic_template": args.neighbour_topic,
            "wait_seconds": args.neighbour_wait, "publish_readings": args.publish_readings}


def reload_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--poll-interval", type=non_negative_float, default=DEFAULT_POLL_SECONDS,
                        metavar="S", help="check the model file for replacement every S seconds "
                                          "(default %(default)s; 0 = only on SIGHUP)")
