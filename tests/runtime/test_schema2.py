"""Schema version 2: a real exported covariate model (wind direction, hour_of_day,
day_of_week; tests/runtime/make_schema2_fixture.py). The runtime must fill the raw
window as the trainer does: compass points and calm to degrees, calendar values
from each row's timestamp in the data's clock, a missing direction held."""

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from support.runtime import FIXTURES, Server, assert_one_line_error, run_cli

from edgecast_runtime import (
    Forecaster,
    InputShapeError,
    InputValueError,
    ModelError,
    StreamingForecaster,
    StreamPolicy,
)
from edgecast_runtime.clock import parse_clock
from edgecast_runtime.contract import COMPASS_POINTS, SCHEMA_KEY, SPEC_KEY
from edgecast_runtime.model import _read_metadata

MODEL = FIXTURES / "schema2" / "model.onnx"
REFERENCE = json.loads((FIXTURES / "schema2" / "reference.json").read_text())
ROWS = REFERENCE["rows"]
LOOK_BACK = REFERENCE["look_back"]
TOLERANCE = 1e-3  # the contract's parity tolerance, raw target units


@pytest.fixture(scope="module")
def model():
    return Forecaster(MODEL)


def epoch(text):
    """The fixture's naive timestamps are in the data's clock; the default clock is UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def reading_row(row):
    return [row["PM2.5"], row["TEMP"], row["wd"]]


def test_loads_schema_2_metadata(model):
    assert model.schema_version == "2"
    assert model.features == ["PM2.5", "TEMP", "wd", "hour_of_day", "day_of_week"]
    assert model.feature_kinds == ["numeric", "numeric", "direction", "cyclic", "cyclic"]
    assert model.hold_last == ["wd"] and len(model.encoded_features) == 8
    assert model.target_formulation.kind in ("level", "change_from_last")
    assert model.describe()["target_formulation"] == model.target_formulation.to_dict()
    assert model.target_units is None  # trained without --target-units: null, allowed
    assert model.manifest_path is not None  # the sha256 was checked
    info = model.describe()
    assert info["encodings"][2] == {"feature": "wd", "kind": "direction"}
    json.dumps(info)


def test_raw_windows_give_the_toolkits_forecasts(model):
    windows = np.asarray(REFERENCE["raw_windows"], dtype=np.float32)
    got = model.predict_batch(windows)
    np.testing.assert_allclose(got, REFERENCE["forecasts"], atol=TOLERANCE)


def test_compass_points_and_calm_are_degrees_in_windows(model):
    base = np.asarray(REFERENCE["raw_windows"][0], dtype=np.float64)
    for index, point in enumerate(COMPASS_POINTS):
        as_text = base.tolist()
        as_text[-1][2] = point if index % 2 else point.lower()
        numeric = base.copy()
        numeric[-1, 2] = 22.5 * index
        assert model.predict(as_text).tolist() == model.predict(numeric).tolist(), point
    calm = [model.predict([*base[:-1].tolist(), [*base[-1, :2], code, *base[-1, 3:]]]).tolist()
            for code in ("cv", "CV", "calm", -1, -7.5)]
    assert all(answer == calm[0] for answer in calm)
    north = [base.tolist() for _ in range(2)]
    north[0][-1][2], north[1][-1][2] = 0, 360
    np.testing.assert_allclose(model.predict(north[0]), model.predict(north[1]), atol=1e-4)


def test_a_bad_direction_names_its_position(model):
    window = [list(row) for row in REFERENCE["raw_windows"][0]]
    window[1][2] = "NORTHISH"
    with pytest.raises(InputValueError, match=r"window at \[1, 2\] \(wd\).*not a wind direction"):
        model.predict(window)


def test_stream_fills_calendar_from_timestamps_and_matches_the_toolkit():
    lines = ["timestamp,PM2.5,TEMP,wd"] + [f"{r['timestamp']},{r['PM2.5']},{r['TEMP']},{r['wd']}"
                                          for r in ROWS]
    result = run_cli("stream", MODEL, stdin="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()][1:]
    forecasts = [a["forecast"] for a in answers if a["status"] == "forecast"]
    assert len(forecasts) == len(REFERENCE["forecasts"])
    np.testing.assert_allclose(forecasts, REFERENCE["forecasts"], atol=TOLERANCE)


def test_json_readings_and_positional_csv_work_too(model):
    lines = []
    for index, row in enumerate(ROWS):
        if index % 2:
            lines.append(json.dumps({"PM2.5": row["PM2.5"], "TEMP": row["TEMP"], "wd": row["wd"],
                                     "timestamp": row["timestamp"].replace(" ", "T")}))
        else:
            lines.append(f"{epoch(row['timestamp']):.0f},{row['PM2.5']},{row['TEMP']},{row['wd']}")
    result = run_cli("stream", MODEL, stdin="\n".join(lines) + "\n")
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    forecasts = [a["forecast"] for a in answers if a["status"] == "forecast"]
    np.testing.assert_allclose(forecasts, REFERENCE["forecasts"], atol=TOLERANCE)


def test_observe_over_http_and_predict_with_compass_strings():
    with Server(MODEL, "--poll-interval", "0") as server:
        answers = []
        for row in ROWS[:LOOK_BACK]:
            body = {"values": reading_row(row), "timestamp": row["timestamp"]}
            status, answer, _ = server.request("POST", "/v1/observe", body)
            assert status == 200, answer
            answers.append(answer)
        assert answers[-1]["forecast"] == pytest.approx(REFERENCE["forecasts"][0], abs=TOLERANCE)
        window = [[r["PM2.5"], r["TEMP"], r["wd"], *REFERENCE["raw_windows"][0][i][3:]]
                  for i, r in enumerate(ROWS[:LOOK_BACK])]
        status, answer, _ = server.request("POST", "/v1/predict", {"window": window})
        assert status == 200 and answer["forecast"] == pytest.approx(REFERENCE["forecasts"][0],
                                                                      abs=TOLERANCE)
        status, answer, _ = server.request("POST", "/v1/observe", {"values": [50, 10, "up"],
                                                                   "timestamp": 2e9})
        assert status == 422 and "not a wind direction" in answer["error"]


def test_calendar_needs_a_timestamp_and_must_agree_with_it(model):
    stream = StreamingForecaster(model)
    with pytest.raises(InputValueError, match="no timestamp, so hour_of_day, day_of_week"):
        stream.observe([50, 10, 90])
    # Given explicitly without a timestamp, they are used as they are.
    assert stream.observe([50, 10, 90, 5, 2])["accepted"] == 1
    moment = epoch("2024-03-11 07:00:00")  # a Monday, 07:00
    with pytest.raises(InputValueError, match="hour_of_day 8 disagrees with the timestamp"):
        stream.observe([50, 10, 90, 8, 0], moment)
    assert stream.observe([50, 10, 90, 7, 0], moment)["accepted"] == 2


def test_the_data_clock_decides_the_calendar(model, tmp_path):
    """The same instants, sent as UTC epochs with --clock +08:00 and as the data's
    own naive local times, give the same windows and forecasts."""
    local = StreamingForecaster(model, tmp_path / "local.json")
    shifted = StreamingForecaster(model, tmp_path / "shifted.json", clock=parse_clock("+08:00"))
    for row in ROWS[:LOOK_BACK + 1]:
        a = local.observe(reading_row(row), epoch(row["timestamp"]))
        b = shifted.observe(reading_row(row), epoch(row["timestamp"]) - 8 * 3600)
        assert a.get("forecast") == b.get("forecast")
    rows_local = json.loads((tmp_path / "local.json").read_text())["buffer"]
    rows_shifted = json.loads((tmp_path / "shifted.json").read_text())["buffer"]
    assert rows_local == rows_shifted
    assert [r[3] for r in rows_local] == [21.0, 22.0, 23.0, 0.0]  # hours around midnight
    assert [r[4] for r in rows_local] == [5.0, 5.0, 5.0, 6.0]  # Saturday, then Sunday


def test_missing_direction_repeats_the_last_one_not_interpolated(model, tmp_path):
    state = tmp_path / "state.json"
    stream = StreamingForecaster(model, state)  # default on_missing=reset: wd is held anyway
    stream.observe([50, 10, 135.0], epoch("2024-03-11 00:00:00"))
    answer = stream.observe([51, 10, None], epoch("2024-03-11 01:00:00"))
    assert "last value held (hold_last)" in answer["notice"] and answer["buffered"] == 2
    assert [row[2] for row in json.loads(state.read_text())["buffer"]] == [135.0, 135.0]
    answer = stream.observe([None, 10, 90], epoch("2024-03-11 02:00:00"))  # target missing: reset
    assert "buffer reset" in answer["notice"] and answer["buffered"] == 0


def test_held_gap_steps_get_their_own_calendar(model, tmp_path):
    state = tmp_path / "state.json"
    stream = StreamingForecaster(model, state, policy=StreamPolicy(on_gap="hold"))
    stream.observe([50, 10, 90], epoch("2024-03-10 22:00:00"))
    answer = stream.observe([52, 10, 90], epoch("2024-03-11 01:00:00"))  # 2 missed steps
    assert "last value held" in answer["notice"]
    rows = json.loads(state.read_text())["buffer"]
    assert [r[3] for r in rows] == [22.0, 23.0, 0.0, 1.0]
    assert [r[4] for r in rows] == [6.0, 6.0, 0.0, 0.0]  # Sunday, then Monday
    assert [r[0] for r in rows] == [50.0, 50.0, 50.0, 52.0]


def test_cli_bad_clock_is_a_usage_error():
    result = run_cli("stream", MODEL, "--clock", "Mars/Olympus")
    assert_one_line_error(result, 2, "--clock", "not UTC, an offset")


SPEC = json.loads(json.dumps(Forecaster(MODEL).spec.to_dict()))


def validate(spec, version="2"):
    """The spec as Forecaster reads it from a model's metadata (ModelError naming m.onnx)."""
    return _read_metadata(Path("m.onnx"), {SCHEMA_KEY: version, SPEC_KEY: json.dumps(spec)})[1]


def test_the_models_recorded_clock_is_the_default(model, tmp_path):
    """A spec with "clock" (edgecast train --clock) sets the streamer's clock; --clock
    (the clock argument) still wins; without either it is UTC."""
    assert validate({**SPEC, "clock": "+08:00"}).data_clock == parse_clock("+08:00")
    assert validate(SPEC).data_clock is None and model.clock is None
    for bad in ("Mars/Olympus", 8):
        with pytest.raises(ModelError, match="'clock'.*give clock to override it"):
            validate({**SPEC, "clock": bad})

    class RecordedClock:  # the model as Forecaster binds it from a spec with "clock"
        def __init__(self, inner, clock):
            self._inner, self.clock = inner, clock

        def __getattr__(self, name):
            return getattr(self._inner, name)

    beijing = RecordedClock(model, parse_clock("+08:00"))
    assert StreamingForecaster(beijing, tmp_path / "a.json").clock == parse_clock("+08:00")
    assert StreamingForecaster(beijing, tmp_path / "b.json", clock=parse_clock("UTC")).clock == parse_clock("UTC")
    assert StreamingForecaster(model, tmp_path / "c.json").clock is None  # UTC


@pytest.mark.parametrize("change, version, fragment", [
    (lambda s: s.pop("encodings"), "2", "schema 2 but has no 'encodings'"),
    (lambda s: s["encodings"].pop(), "2", "needs 'encodings', one per feature (5)"),
    (lambda s: s["encodings"][2].update(kind="polar"), "2", "kind 'polar'"),
    (lambda s: s["encodings"][3].update(feature="TEMP"), "2", "must describe feature 'hour_of_day'"),
    (lambda s: s["encodings"][3].update(period=12), "2", "period 12, expected 24"),
    (lambda s: s["encoded_features"].pop(), "2", "lists 7 encoded_features"),
    (lambda s: s["scaler"]["data_min"].pop(), "2", "scaler.data_min of 7 values for 8"),
    (lambda s: s.update(target_units=3), "2", "'target_units' 3"),
    (lambda s: s.update(target_formulation="level"), "2", "malformed 'target_formulation'"),
    (lambda s: s["gap_policy"].update(hold_last=["WD"]), "2", "hold_last ['WD'] that are not features"),
    (lambda s: None, "1", "need schema version 2"),
])
def test_schema_2_specs_are_validated(change, version, fragment):
    spec = json.loads(json.dumps(SPEC))
    change(spec)
    with pytest.raises(ModelError, match=None) as caught:
        validate(spec, version)
    assert fragment in str(caught.value) and str(caught.value).startswith("m.onnx: edgecast.spec ")


def test_unknown_calendar_feature_is_refused():
    spec = json.loads(json.dumps(SPEC))
    spec["features"][4] = spec["encodings"][4]["feature"] = "month"
    spec["input"]["shape"] = ["batch", 4, 5]
    with pytest.raises(ModelError, match="calendar feature 'month' is unknown"):
        validate(spec)


@pytest.mark.parametrize("ranges, fragment", [
    ([0, 1], "has 'valid_ranges' [0, 1]; expected an object"),
    ({"PM2.5": [0]}, "valid_ranges['PM2.5'] [0]; expected [min, max]"),
    ({"PM2.5": [0, "high"]}, "each bound must be a finite number or null"),
    ({"PM2.5": [True, None]}, "each bound must be a finite number or null"),
    ({"PM2.5": [5, 1]}, "the minimum is above the maximum"),
])
def test_malformed_valid_ranges_refuse_the_model(ranges, fragment):
    with pytest.raises(ModelError) as caught:
        validate({**SPEC, "valid_ranges": ranges})
    assert fragment in str(caught.value) and "m.onnx" in str(caught.value)


def test_valid_ranges_leave_calm_winds_alone():
    """A negative direction is calm by contract, whatever range wd is given."""
    spec = validate({**SPEC, "valid_ranges": {"PM2.5": [0, None], "wd": [0, 360], "RAIN": [0, 200]}})
    ranges = spec.reading_ranges(spec.layout())
    assert ranges.describe() == {"PM2.5": [0.0, None], "wd": [0.0, 360.0]}
    assert ranges.outside([50.0, 10.0, -1.0, 3.0, 0.0]) == []
    assert [reason for _, reason, _ in ranges.outside([-3.0, 10.0, 400.0, 3.0, 0.0])] == [
        "below_valid_range", "above_valid_range"]


def test_window_of_the_wrong_shape_names_the_shape_before_any_compass_value(model):
    with pytest.raises(InputShapeError, match=r"expected a window of shape \[4, 5\].*got shape \[4, 4\]"):
        model.predict([[50, 10, "N", 0]] * 4)
    with pytest.raises(InputShapeError, match=r"got shape \[2, 4, 4\]"):
        model.predict_batch([[[50, 10, "N", 0]] * 4] * 2)
    with pytest.raises(InputValueError, match="is not a wind direction"):  # right shape: the value
        model.predict([[50, 10, "NORTH-ISH", 0, 0]] * 4)
