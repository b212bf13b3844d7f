"""The trial's time limit (`--trial-seconds`, or $EDGECAST_RUNTIME_TRIAL_SECONDS for every
command of a slow board): a model whose load and first forecast take longer is refused,
and a bad value is one line."""

import os
import subprocess

from support.runtime import ONE, assert_one_line_error, cli_path, run_cli

MODEL_ERROR, USAGE_ERROR = 3, 2


def run_with_environment(*args, **variables):
    environment = {**os.environ, **variables}
    return subprocess.run([cli_path(), *map(str, args)], capture_output=True, text=True, timeout=120,
                          env=environment, stdin=subprocess.DEVNULL)


def test_a_trial_past_its_limit_refuses_the_model():
    result = run_cli("stream", ONE, "--trial-seconds", "0.001", stdin="")
    assert_one_line_error(result, MODEL_ERROR, "took longer than 0.001 s to load and forecast once")


def test_the_environment_sets_the_limit_and_the_option_wins():
    refused = run_with_environment("info", ONE, EDGECAST_RUNTIME_TRIAL_SECONDS="0.001")
    assert_one_line_error(refused, MODEL_ERROR, "took longer than 0.001 s")
    allowed = run_with_environment("info", ONE, "--trial-seconds", "120", EDGECAST_RUNTIME_TRIAL_SECONDS="0.001")
    assert allowed.returncode == 0, allowed.stderr


def test_bad_limits_are_one_line():
    assert_one_line_error(run_cli("info", ONE, "--trial-seconds", "0"), USAGE_ERROR, "--trial-seconds")
    result = run_with_environment("info", ONE, EDGECAST_RUNTIME_TRIAL_SECONDS="soon")
    assert_one_line_error(result, 1, "$EDGECAST_RUNTIME_TRIAL_SECONDS", "'soon'")
