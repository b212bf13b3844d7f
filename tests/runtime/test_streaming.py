"""The streaming forecaster in-process: ring buffer, policies for missing values and
timestamp gaps, duplicates after a crash, and the durable state file."""

import json
import math
import os

import numpy as np
import pytest
from support.runtime import ONE, ONE_RANGES, ONE_V2, THREE, expected_forecast

from edgecast_runtime import (
    EdgecastRuntimeError,
    Forecaster,
    InputShapeError,
    InputValueError,
    RingBuffer,
    StateError,
    StreamingForecaster,
    StreamPolicy,
    durable,
)

HOUR = 3600.0


@pytest.fixture(scope="module")
def one():
    return Forecaster(ONE)


def feed(stream, values, start=0.0, step=HOUR):
    return [stream.observe([v], start + i * step) for i, v in enumerate(values)]


def test_ring_buffer_keeps_the_last_rows_in_time_order():
    buffer = RingBuffer(3, 1)
    for value in range(1, 6):
        buffer.append([value])
    assert buffer.full and len(buffer) == 3
    assert buffer.window()[:, 0].tolist() == [3, 4, 5]
    assert buffer.last().tolist() == [5]
    assert RingBuffer.from_rows(buffer.rows(), 3, 1).window().tolist() == buffer.window().tolist()
    buffer.clear()
    assert len(buffer) == 0 and buffer.last() is None


def test_fills_then_forecasts_from_the_last_look_back_readings(one):
    answers = feed(StreamingForecaster(one), [10, 20, 30, 40, 50])
    assert [a["status"] for a in answers] == ["filling"] * 3 + ["forecast"] * 2
    assert [a["buffered"] for a in answers] == [1, 2, 3, 4, 4]
    assert answers[3]["forecast"] == pytest.approx(expected_forecast([10, 20, 30, 40]))
    assert answers[4]["forecast"] == pytest.approx(expected_forecast([20, 30, 40, 50]))
    assert answers[4]["accepted"] == 5 and answers[4]["timestamp"] == 4 * HOUR


def test_readings_without_timestamps_and_several_features():
    stream = StreamingForecaster(Forecaster(THREE))
    rows = [[float(i), 20.0, 1000.0] for i in range(6)]
    answers = [stream.observe(row) for row in rows]
    assert answers[-1]["status"] == "forecast"
    assert answers[-1]["forecast"] == pytest.approx(expected_forecast(rows))
    with pytest.raises(InputShapeError, match=r"needs 3 value\(s\) \(PM2.5, TEMP, PRES\), got 2"):
        stream.observe([1.0, 2.0])


def test_default_policy_resets_on_a_missing_value(one):
    stream = StreamingForecaster(one)
    answers = feed(stream, [10, 20, 30, 40, None, 60])
    assert answers[4]["status"] == "filling" and answers[4]["buffered"] == 0
    assert "missing value for PM2.5: buffer reset" in answers[4]["notice"]
    assert answers[5]["buffered"] == 1 and answers[5]["accepted"] == 6


def test_hold_policy_repeats_the_last_value_up_to_max_hold(one):
    stream = StreamingForecaster(one, policy=StreamPolicy(on_missing="hold", max_hold=2))
    answers = feed(stream, [10, 20, 30, 40, math.nan, None, math.inf])
    assert answers[4]["forecast"] == pytest.approx(expected_forecast([20, 30, 40, 40]))
    assert "last value held" in answers[4]["notice"]
    assert answers[5]["forecast"] == pytest.approx(expected_forecast([30, 40, 40, 40]))
    assert answers[6]["buffered"] == 0 and "buffer reset" in answers[6]["notice"]


def test_hold_with_nothing_to_hold_resets(one):
    stream = StreamingForecaster(one, policy=StreamPolicy(on_missing="hold"))
    assert stream.observe([None], 0.0)["buffered"] == 0


def test_refuse_policy_leaves_the_state_untouched(one):
    stream = StreamingForecaster(one, policy=StreamPolicy(on_missing="refuse"))
    feed(stream, [10, 20])
    with pytest.raises(InputValueError, match="on_missing=refuse"):
        stream.observe([None], 2 * HOUR)
    assert stream.status()["accepted"] == 2 and stream.status()["buffered"] == 2


def test_gap_resets_the_buffer_by_default(one):
    stream = StreamingForecaster(one)
    feed(stream, [10, 20, 30, 40])
    answer = stream.observe([50], 6 * HOUR)  # steps 4 and 5 are missing
    assert answer["buffered"] == 1 and "gap of 2 missed step(s): buffer reset" in answer["notice"]


def test_small_timing_jitter_is_not_a_gap(one):
    stream = StreamingForecaster(one)
    times = [0, 3500, 7300, 10700, 14500]
    answers = [stream.observe([v], t) for v, t in zip([10, 20, 30, 40, 50], times)]
    assert answers[-1]["forecast"] == pytest.approx(expected_forecast([20, 30, 40, 50]))
    assert "notice" not in answers[-1]


def test_gap_hold_fills_short_gaps_and_resets_long_ones(one):
    stream = StreamingForecaster(one, policy=StreamPolicy(on_gap="hold", max_hold=2))
    feed(stream, [10, 20, 30, 40])
    held = stream.observe([50], 6 * HOUR)
    assert held["forecast"] == pytest.approx(expected_forecast([40, 40, 40, 50]))
    assert "last value held" in held["notice"]
    reset = stream.observe([60], 10 * HOUR)
    assert reset["buffered"] == 1 and "buffer reset" in reset["notice"]


def test_interval_override_and_models_without_interval():
    model = Forecaster(THREE)  # interval 60 s
    row = [1.0, 2.0, 1000.0]
    stream = StreamingForecaster(model, policy=StreamPolicy(interval_seconds=10))
    stream.observe(row, 0)
    assert "gap" in stream.observe(row, 30)["notice"]
    default = StreamingForecaster(model)
    default.observe(row, 0)
    assert "notice" not in default.observe(row, 30)


def test_out_of_order_and_conflicting_duplicates_are_refused(one):
    stream = StreamingForecaster(one)
    feed(stream, [10, 20])
    with pytest.raises(InputValueError, match="before the last accepted reading"):
        stream.observe([5], 0.0)
    with pytest.raises(InputValueError, match="different reading was already accepted"):
        stream.observe([21], HOUR)


def test_a_resent_reading_gets_its_answer_again_without_counting_twice(one):
    stream = StreamingForecaster(one)
    answers = feed(stream, [10, 20, 30, 40])
    again = stream.observe([40], 3 * HOUR)
    assert again.pop("duplicate") is True
    assert again == answers[-1]
    assert stream.status()["accepted"] == 4
    missing = stream.observe([None], 4 * HOUR)
    assert stream.observe([None], 4 * HOUR) == dict(missing, duplicate=True)


@pytest.mark.parametrize("kwargs", [{"on_missing": "drop"}, {"on_gap": "refuse"},
                                    {"max_hold": -1}, {"interval_seconds": 0}])
def test_bad_policies_are_refused(kwargs):
    with pytest.raises(EdgecastRuntimeError):
        StreamPolicy(**kwargs)


# --- the state file ---------------------------------------------------------------------


def test_state_is_written_and_resumed(one, tmp_path):
    path = tmp_path / "state.json"
    first = StreamingForecaster(one, state_path=path)
    feed(first, [10, 20, 30])
    first.close()
    document = json.loads(path.read_text())
    assert document["format"] == "edgecast-runtime/stream-state"
    assert document["model_sha256"] == one.sha256
    assert document["buffer"] == [[10.0], [20.0], [30.0]]
    assert document["last_timestamp"] == 2 * HOUR and document["accepted"] == 3
    second = StreamingForecaster(one, state_path=path)
    answer = second.observe([40], 3 * HOUR)
    assert answer["forecast"] == pytest.approx(expected_forecast([10, 20, 30, 40]))
    assert answer["accepted"] == 4
    second.close()


def test_state_of_a_model_with_other_inputs_is_refused(one, tmp_path):
    path = tmp_path / "state.json"
    stream = StreamingForecaster(one, state_path=path)
    stream.observe([1.0])
    stream.close()
    before = path.read_bytes()
    with pytest.raises(StateError, match="written for another model") as caught:
        StreamingForecaster(Forecaster(THREE), state_path=path)
    message = str(caught.value)
    assert one.sha256[:12] in message and "state.json" in message
    assert "features ['PM2.5'] vs ['PM2.5', 'TEMP', 'PRES']" in message
    assert path.read_bytes() == before


def test_state_of_a_model_with_the_same_inputs_is_adopted_with_a_notice(one, tmp_path):
    """What hot reload does (buffer kept), a restart onto another model does too."""
    path = tmp_path / "state.json"
    first = StreamingForecaster(one, state_path=path)
    feed(first, [10, 20, 30, 40])
    first.close()
    v2, events = Forecaster(ONE_V2), []
    second = StreamingForecaster(v2, state_path=path, log=events.append)
    assert second.adopted_from == {"model_name": "fixture-one", "model_sha256": one.sha256}
    [event] = events
    assert event["event"] == "notice" and "reads the same inputs" in event["message"]
    assert json.loads(path.read_text())["model_sha256"] == v2.sha256  # the file names v2 now
    resent = second.observe([40], 3 * HOUR)  # answered by v2, not replayed from the old model
    assert resent["duplicate"] and resent["forecast"] == pytest.approx(
        expected_forecast([10, 20, 30, 40], offset=1000))
    answer = second.observe([50], 4 * HOUR)
    assert answer["forecast"] == pytest.approx(expected_forecast([20, 30, 40, 50], offset=1000))
    assert answer["accepted"] == 5
    second.close()


def test_state_that_does_not_record_its_inputs_is_refused_for_another_model(one, tmp_path):
    path = tmp_path / "state.json"
    stream = StreamingForecaster(one, state_path=path)
    stream.observe([1.0])
    stream.close()
    document = json.loads(path.read_text())
    del document["inputs"]  # as written by an older runtime
    path.write_text(json.dumps(document))
    with pytest.raises(StateError, match="does not record which inputs it read"):
        StreamingForecaster(Forecaster(ONE_V2), state_path=path)
    StreamingForecaster(one, state_path=path).close()  # its own model still resumes it


@pytest.mark.parametrize("content", ["{truncated", "[]", '{"format": "something else"}',
                                     '{"format": "edgecast-runtime/stream-state", "version": 7}'])
def test_corrupt_state_is_refused_clearly(one, tmp_path, content):
    path = tmp_path / "state.json"
    path.write_text(content)
    with pytest.raises(StateError, match="state"):
        StreamingForecaster(one, state_path=path)


def test_state_file_is_locked_against_a_second_process(one, tmp_path):
    path = tmp_path / "state.json"
    first = StreamingForecaster(one, state_path=path)
    with pytest.raises(StateError, match="in use by another process"):
        StreamingForecaster(one, state_path=path)
    first.close()
    StreamingForecaster(one, state_path=path).close()


def test_failed_save_keeps_old_state_on_disk_and_in_memory(one, tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    stream = StreamingForecaster(one, state_path=path)
    feed(stream, [10, 20])
    before = path.read_bytes()

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(durable.os, "replace", disk_full)
    with pytest.raises(StateError, match="No space left on device.*not accepted"):
        stream.observe([30], 2 * HOUR)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    assert stream.status()["accepted"] == 2
    assert stream.observe([30], 2 * HOUR)["accepted"] == 3
    stream.close()


def test_state_folder_that_does_not_exist_is_a_state_error(one, tmp_path):
    with pytest.raises(StateError, match="its folder .*missing does not exist"):
        StreamingForecaster(one, state_path=tmp_path / "missing" / "state.json")


def test_atomic_write_replaces_whole_files(tmp_path):
    target = tmp_path / "file.json"
    durable.atomic_write(target, b"old")
    durable.atomic_write(target, b"new content")
    assert target.read_bytes() == b"new content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.json"]


def test_model_swap_keeps_the_buffer_when_it_fits(one, tmp_path):
    path = tmp_path / "state.json"
    stream = StreamingForecaster(one, state_path=path)
    feed(stream, [10, 20, 30, 40])
    v2 = Forecaster(ONE_V2)
    assert stream.use_model(v2) == "buffer kept"
    answer = stream.observe([50], 4 * HOUR)
    assert answer["forecast"] == pytest.approx(expected_forecast([20, 30, 40, 50], offset=1000))
    assert json.loads(path.read_text())["model_sha256"] == v2.sha256
    assert "reset" in stream.use_model(Forecaster(THREE))
    assert stream.status()["buffered"] == 0
    stream.close()


def test_closed_stream_refuses_readings(one):
    stream = StreamingForecaster(one)
    stream.close()
    with pytest.raises(StateError, match="shut down"):
        stream.observe([1.0])


def test_state_survives_as_valid_json_on_every_write(one, tmp_path):
    path = tmp_path / "state.json"
    stream = StreamingForecaster(one, state_path=path)
    for i, value in enumerate(np.linspace(1, 100, 25)):
        stream.observe([float(value)], i * HOUR)
        assert json.loads(path.read_text())["accepted"] == i + 1
    stream.close()
    assert not os.path.exists(str(path) + ".tmp")


# --- valid ranges ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ranged():
    return Forecaster(ONE_RANGES)  # PM2.5 valid in [0, 500]


def test_readings_outside_the_valid_range_are_missing_and_counted(ranged):
    stream = StreamingForecaster(ranged)
    answers = feed(stream, [10, 20, 30, 40, -999, 50, 9999, None])
    assert "PM2.5 -999 is below the valid minimum 0: treated as missing" in answers[4]["notice"]
    assert "missing value for PM2.5: buffer reset" in answers[4]["notice"]
    assert answers[4]["buffered"] == 0 and answers[5]["buffered"] == 1
    assert "PM2.5 9999 is above the valid maximum 500" in answers[6]["notice"]
    status = stream.status()
    assert status["missing_values"] == {"below_valid_range": {"PM2.5": 1},
                                        "above_valid_range": {"PM2.5": 1},
                                        "missing": {"PM2.5": 1}}
    assert status["accepted"] == 8
    assert ranged.describe()["valid_ranges"] == {"PM2.5": [0.0, 500.0]}  # TEMP: not a feature


def test_out_of_range_values_follow_the_missing_value_policy(ranged):
    held = StreamingForecaster(ranged, policy=StreamPolicy(on_missing="hold"))
    answers = feed(held, [10, 20, 30, 40, -5])
    assert answers[4]["forecast"] == pytest.approx(expected_forecast([20, 30, 40, 40]))
    assert "treated as missing; missing value for PM2.5: last value held" in answers[4]["notice"]
    refusing = StreamingForecaster(ranged, policy=StreamPolicy(on_missing="refuse"))
    feed(refusing, [10, 20])
    with pytest.raises(InputValueError, match="on_missing=refuse"):
        refusing.observe([-999.0], 2 * HOUR)
    assert refusing.status()["accepted"] == 2 and refusing.status()["missing_values"] == {}
    inside = StreamingForecaster(ranged)
    assert "notice" not in feed(inside, [0, 500, 250])[-1]  # the bounds themselves are valid


def test_missing_value_counts_are_kept_in_the_state_file(ranged, tmp_path):
    path = tmp_path / "state.json"
    stream = StreamingForecaster(ranged, state_path=path)
    feed(stream, [10, -1, math.inf])
    stream.close()
    assert json.loads(path.read_text())["missing_values"] == {"below_valid_range": {"PM2.5": 1},
                                                              "non_finite": {"PM2.5": 1}}
    resumed = StreamingForecaster(ranged, state_path=path)
    assert resumed.status()["missing_values"]["non_finite"] == {"PM2.5": 1}
    resumed.close()


def test_models_without_valid_ranges_accept_any_finite_value(one):
    answers = feed(StreamingForecaster(one), [-999, 10, 20, 30])
    assert answers[-1]["forecast"] == pytest.approx(expected_forecast([-999, 10, 20, 30]))
    assert one.describe()["valid_ranges"] == {}
