"""The installed `edgecast-runtime` console script, run as a hub would run it:
answers on stdout, one error line on stderr, meaningful exit codes."""

import json

import pytest
from support.runtime import (
    FIXTURES,
    ONE,
    ONE_RANGES,
    ONE_REEXPORT,
    ONE_V2,
    SCHEMA2,
    THREE,
    assert_one_line_error,
    expected_forecast,
    run_cli,
)

MODEL_ERROR, INPUT_ERROR, USAGE = 3, 4, 2


def test_info_prints_the_validated_metadata():
    result = run_cli("info", ONE)
    assert result.returncode == 0, result.stderr
    fields = dict(line.split(None, 1) for line in result.stdout.splitlines())
    assert fields["model"] == "fixture-one"
    assert fields["look_back"] == "4" and fields["horizon"] == "1"
    assert fields["features"] == "PM2.5"
    assert fields["input"] == "window float32 [batch, 4, 1]"
    assert "not checked" in fields["manifest"]
    assert result.stderr == ""


def test_info_lists_valid_ranges():
    fields = dict(line.split(None, 1) for line in run_cli("info", ONE_RANGES).stdout.splitlines())
    assert fields["valid"] == "PM2.5 0..500"
    assert dict(line.split(None, 1) for line in run_cli("info", ONE).stdout.splitlines())["valid"] \
        == "any value"


def test_info_json_reports_manifest_check():
    result = run_cli("info", FIXTURES / "bundle" / "model.onnx", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["manifest"].endswith("bundle/manifest.json")
    assert info["features"] == ["PM2.5"] and info["schema_version"] == "1"


def test_predict_flat_values():
    result = run_cli("predict", ONE, "70", "72", "75", "80")
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) == pytest.approx(expected_forecast([70, 72, 75, 80])[0], rel=1e-6)
    assert result.stderr == ""


def test_predict_negative_values_are_values_not_options():
    result = run_cli("predict", ONE, "-5", "-3", "2", "1")
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) == pytest.approx(expected_forecast([-5, -3, 2, 1])[0], abs=1e-5)


def test_predict_json_window_of_three_features():
    window = [[10 * i, 5, 1000] for i in range(6)]
    result = run_cli("predict", THREE, "--json", json.dumps(window))
    assert result.returncode == 0, result.stderr
    values = [float(v) for v in result.stdout.split()]
    assert values == pytest.approx(expected_forecast(window), rel=1e-6)


def test_predict_json_batch_prints_one_line_per_window_or_json():
    windows = [[[float(i + j), 5, 1000] for i in range(6)] for j in range(3)]
    text = run_cli("predict", THREE, "--json", json.dumps(windows))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert len(lines) == 3
    for line, window in zip(lines, windows):
        assert [float(v) for v in line.split()] == pytest.approx(expected_forecast(window), rel=1e-6)
    as_json = run_cli("predict", THREE, "--json", json.dumps(windows), "--output", "json")
    body = json.loads(as_json.stdout)
    assert len(body["forecasts"]) == 3 and body["horizon"] == 3
    assert body["model_name"] == "fixture-three"


def test_predict_json_from_stdin():
    result = run_cli("predict", ONE, "--json", "-", "--output", "json", stdin="[1, 2, 3, 4]")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["forecast"] == [3.5]


def test_predict_options_may_come_before_the_values():
    """argparse fills a list positional only from the arguments right after the model."""
    expected = expected_forecast([70, 72, 75, 80])[0]
    for args in (["--output", "json", "70", "72", "75", "80"], ["--threads", "1", "70", "72", "75", "80"],
                 ["70", "72", "--threads", "1", "75", "80"]):
        result = run_cli("predict", ONE, *args)
        assert result.returncode == 0, (args, result.stderr)
        forecast = json.loads(result.stdout)["forecast"][0] if "json" in args else float(result.stdout)
        assert forecast == pytest.approx(expected, rel=1e-6)
    negative = run_cli("predict", ONE, "--threads", "1", "-5", "-3", "2", "1")
    assert float(negative.stdout) == pytest.approx(expected_forecast([-5, -3, 2, 1])[0], abs=1e-5)
    unknown = run_cli("predict", ONE, "--bogus", "70", "72", "75", "80")
    assert_one_line_error(unknown, USAGE, "unrecognized arguments: --bogus")


def test_predict_json_null_is_a_missing_neighbour_as_nan_is():
    neighbours = FIXTURES / "neighbours" / "model.onnx"  # PM2.5, PM2.5@far, PM2.5@upwind
    rows = [[50, "{}", 40], [51, 48, 41], [52, 49, 42], [53, 50, 43]]
    window = json.dumps(rows)

    def with_missing(word):
        return window.replace('"{}"', word)

    as_nan, as_null = (run_cli("predict", neighbours, "--json", with_missing(word)) for word in ("NaN", "null"))
    assert as_null.returncode == 0, as_null.stderr
    assert as_null.stdout == as_nan.stdout
    batch = run_cli("predict", neighbours, "--json", f"[{with_missing('null')}, {with_missing('7')}]")
    assert batch.returncode == 0, batch.stderr
    assert batch.stdout.splitlines()[0] == as_nan.stdout.strip()
    own = run_cli("predict", neighbours, "--json", window.replace("[50, ", "[null, ").replace('"{}"', "1"))
    assert_one_line_error(own, INPUT_ERROR, "--json has a missing value (null) at [0, 0]")


def test_score_with_every_reading_refused_says_why_and_fails(tmp_path):
    """A header without the model's column refuses every line: an empty table with exit 0
    would pass for a model that scored nothing worth noting."""
    lines = [f"2026-01-01T{h:02d}:00:00Z,{10 + h},3" for h in range(20)]
    refused = tmp_path / "refused.csv"
    refused.write_text("\n".join(["timestamp,PM25_other,TEMP", *lines]) + "\n")
    result = run_cli("score", ONE, refused)
    assert result.returncode == INPUT_ERROR and result.stdout == "", result
    *logged, error = result.stderr.splitlines()  # the first refusals are logged (JSON) too
    assert all(line.startswith("{") for line in logged) and "Traceback" not in result.stderr
    assert error.startswith("edgecast-runtime: error: ") and error.endswith(
        "refused.csv: no reading accepted, all 21 lines refused; line 1: CSV header "
        "['timestamp', 'PM25_other', 'TEMP'] lacks the feature column(s) ['PM2.5']"), error
    empty = tmp_path / "empty.csv"
    empty.write_text("timestamp,PM2.5\n")
    assert_one_line_error(run_cli("score", ONE, empty), INPUT_ERROR, "empty.csv: no readings to score")
    partly = tmp_path / "partly.csv"
    partly.write_text("timestamp,PM2.5\n" + "\n".join(line.rsplit(",", 1)[0] for line in lines)
                      + "\n2026-01-02T00:00:00Z,abc\n")
    kept = run_cli("score", ONE, partly)
    assert kept.returncode == 0, kept.stderr
    assert "20 readings (1 refused)" in kept.stdout


@pytest.mark.parametrize("args, code, fragments", [
    (["predict", ONE, "70", "72", "75"], INPUT_ERROR,
     ["expected a window of shape [4, 1]", "got shape [3]"]),
    (["predict", ONE, "70", "72", "abc", "80"], INPUT_ERROR,
     ["window has a non-numeric value 'abc' at [2]"]),
    (["predict", ONE, "70", "72", "nan", "80"], INPUT_ERROR, ["non-finite value at [2]"]),
    (["predict", ONE, "--json", "[1, 2, 3"], INPUT_ERROR, ["--json is not valid JSON"]),
    (["predict", ONE, "--json", '[1, 2, "x", 4]'], INPUT_ERROR, ["non-numeric value 'x' at [2]"]),
    (["predict", THREE, "1", "2", "3"], INPUT_ERROR, ["reads 3 features", "--json"]),
    (["predict", THREE, "--json", "[[1, 2, 3]]"], INPUT_ERROR, ["[6, 3] or [batch, 6, 3]", "[1, 3]"]),
    (["predict", FIXTURES / "schema_99.onnx", "1", "2", "3", "4"], MODEL_ERROR,
     ["schema_99.onnx", "schema version '99' is not supported"]),
    (["predict", FIXTURES / "no_metadata.onnx", "1", "2", "3", "4"], MODEL_ERROR,
     ["no edgecast metadata"]),
    (["info", FIXTURES / "spec_mismatch.onnx"], MODEL_ERROR, ["inconsistent with the spec"]),
    (["info", FIXTURES / "truncated.onnx"], MODEL_ERROR, ["truncated.onnx", "not a loadable ONNX model"]),
    (["info", FIXTURES / "absent.onnx"], MODEL_ERROR, ["model file not found", "absent.onnx"]),
    (["predict", ONE], USAGE, ["give the window's values"]),
    (["predict", ONE, "1", "2", "3", "4", "--json", "[1]"], USAGE, ["not both"]),
    (["predict"], USAGE, ["the following arguments are required: MODEL.onnx"]),
    (["frobnicate"], USAGE, ["invalid choice: 'frobnicate'"]),
    ([], USAGE, ["choose a command"]),
    (["predict", ONE, "--threads", "0", "1", "2", "3", "4"], USAGE, ["expected a positive integer"]),
    (["serve", ONE, "--port", "70000"], USAGE, ["port number"]),
])
def test_errors_are_one_line_with_exit_code(args, code, fragments):
    result = run_cli(*args)
    assert_one_line_error(result, code, *fragments)
    assert result.stdout == ""


def test_integrity_mismatch_is_a_model_error(tmp_path):
    """The bundle's own model, changed after export (same name, other bytes)."""
    (tmp_path / "model.onnx").write_bytes(ONE_REEXPORT.read_bytes())
    (tmp_path / "manifest.json").write_text((FIXTURES / "bundle" / "manifest.json").read_text())
    result = run_cli("predict", tmp_path / "model.onnx", "1", "2", "3", "4")
    assert_one_line_error(result, MODEL_ERROR, "does not match", "manifest.json",
                          "changed or corrupted")


def test_manifest_of_another_bundle_is_named_as_such(tmp_path):
    (tmp_path / "model.onnx").write_bytes(ONE_V2.read_bytes())
    (tmp_path / "manifest.json").write_text((FIXTURES / "bundle" / "manifest.json").read_text())
    result = run_cli("predict", tmp_path / "model.onnx", "1", "2", "3", "4")
    line = assert_one_line_error(result, MODEL_ERROR,
                                 "manifest.json describes another model ('fixture-one'",
                                 "not this model.onnx ('fixture-one-v2'")
    assert "corrupted" not in line


def test_predict_json_of_the_wrong_shape_names_the_shape_not_a_compass_value():
    """Rows of four values for a five-feature model with a wind direction: the
    compass points are left unconverted, but the shape is what is wrong."""
    window = [[50, 10, "N", 0]] * 4
    result = run_cli("predict", SCHEMA2, "--json", json.dumps(window))
    line = assert_one_line_error(result, INPUT_ERROR, "--json: expected a window of shape [4, 5] "
                                 "or [batch, 4, 5], got shape [4, 4]")
    assert "'N'" not in line
    batch = run_cli("predict", SCHEMA2, "--json", json.dumps([window, window]))
    assert_one_line_error(batch, INPUT_ERROR, "got shape [2, 4, 4]")


def test_serve_help_shows_the_server_defaults():
    from edgecast_runtime.http import defaults

    help_text = " ".join(run_cli("serve", "--help").stdout.split())
    assert f"(default {defaults.DEFAULT_MAX_BODY}; larger: 413)" in help_text
    assert f"(default {defaults.DEFAULT_PORT};" in help_text
    assert f"(default {defaults.DEFAULT_DRAIN_SECONDS})" in help_text


def test_version_and_help():
    assert run_cli("--version").stdout.startswith("edgecast-runtime ")
    help_text = run_cli("--help").stdout
    for command in ("info", "predict", "stream", "serve", "mqtt"):
        assert command in help_text
