"""Property tests (hypothesis): the ring buffer, the streaming policies over any
sequence of readings and gaps, and input parsing that only ever fails with the
runtime's own input errors."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.runtime import ONE, SCHEMA2, expected_forecast

from edgecast_runtime import Forecaster, InputError, RingBuffer, StreamingForecaster, StreamPolicy
from edgecast_runtime.readings import Header, LineParser, Reading

MODEL = Forecaster(ONE)  # look_back 4, interval 3600 s
INTERVAL = 3600.0
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(st.lists(st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.none()), max_size=40),
       st.integers(1, 6))
def test_ring_buffer_is_the_tail_of_what_was_appended(operations, capacity):
    buffer, model = RingBuffer(capacity, 1), []
    for value in operations:
        if value is None:
            buffer.clear()
            model = []
        else:
            buffer.append([value])
            model = (model + [np.float32(value)])[-capacity:]
        assert len(buffer) == len(model) and buffer.full == (len(model) == capacity)
        assert buffer.window()[:, 0].tolist() == [float(v) for v in model]


readings = st.lists(
    st.tuples(
        st.one_of(st.floats(0, 500, allow_nan=False), st.just(math.nan), st.none()),
        st.sampled_from([0.3, 0.9, 1.0, 1.0, 1.0, 1.2, 1.6, 2.0, 3.0, 7.0]),  # steps, in intervals
    ),
    max_size=40,
)


@SETTINGS
@given(readings)
def test_default_policy_never_forecasts_across_a_hole(sequence):
    """Reference: the run of consecutive, complete readings since the last missing
    value or gap; a forecast must be exactly the one from its last look_back."""
    stream = StreamingForecaster(MODEL)
    run, timestamp, last = [], 0.0, None
    for value, step in sequence:
        timestamp += step * INTERVAL
        missing = value is None or not math.isfinite(value)
        if last is not None and round((timestamp - last) / INTERVAL) - 1 >= 1:
            run = []
        run = [] if missing else run + [value]
        last = timestamp
        answer = stream.observe([value], timestamp)
        assert answer["buffered"] == min(len(run), MODEL.look_back)
        if len(run) >= MODEL.look_back:
            assert answer["status"] == "forecast"
            assert answer["forecast"] == pytest.approx(expected_forecast(run[-4:]), rel=1e-5, abs=1e-3)
        else:
            assert answer["status"] == "filling" and "forecast" not in answer


@SETTINGS
@given(readings, st.sampled_from(["reset", "hold", "refuse"]), st.sampled_from(["reset", "hold"]),
       st.integers(0, 4))
def test_any_policy_keeps_the_buffer_invariant(sequence, on_missing, on_gap, max_hold):
    policy = StreamPolicy(on_missing=on_missing, on_gap=on_gap, max_hold=max_hold)
    stream = StreamingForecaster(MODEL, policy=policy)
    timestamp, accepted = 0.0, 0
    for value, step in sequence:
        timestamp += step * INTERVAL
        try:
            answer = stream.observe([value], timestamp)
        except InputError:
            assert on_missing == "refuse" and (value is None or not math.isfinite(value))
            assert stream.status()["accepted"] == accepted
            continue
        accepted += 1
        assert answer["accepted"] == accepted
        assert 0 <= answer["buffered"] <= MODEL.look_back
        assert (answer["status"] == "forecast") == (answer["buffered"] == MODEL.look_back)
        if answer["status"] == "forecast":
            assert all(math.isfinite(v) for v in answer["forecast"])
        window = stream._state.buffer.window()
        assert np.isfinite(window).all()


json_leaves = st.one_of(st.none(), st.booleans(), st.integers(-10 ** 40, 10 ** 40),
                        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5))
json_values = st.recursive(json_leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=3), inner, max_size=3)),
    max_leaves=30)


@SETTINGS
@given(json_values)
def test_any_json_window_gives_a_forecast_or_an_input_error(document):
    try:
        forecast = MODEL.predict(document)
    except InputError as exc:
        assert str(exc)
    else:
        assert forecast.shape == (1,) and np.isfinite(forecast).all()


@SETTINGS
@given(st.text(max_size=60))
def test_any_line_parses_to_a_reading_or_an_input_error(line):
    parser = LineParser(["PM2.5"])
    try:
        parsed = parser.parse(line)
    except InputError as exc:
        assert str(exc)
    else:
        assert isinstance(parsed, (Reading, Header))
        if isinstance(parsed, Reading):
            assert len(parsed.values) == 1
            assert parsed.timestamp is None or math.isfinite(parsed.timestamp)


SCHEMA2_MODEL = Forecaster(SCHEMA2)  # PM2.5, TEMP, wd (direction), hour_of_day, day_of_week
fields = st.one_of(st.text(max_size=8), st.sampled_from(["N", "nnw", "cv", "CV", "calm", "-1", "360",
                                                         "NA", "", "1e400", "nan"]))


@SETTINGS
@given(st.lists(fields, min_size=0, max_size=7), st.booleans())
def test_any_schema_2_line_gives_a_full_reading_or_an_input_error(values, with_timestamp):
    """Any CSV line for a model with a direction and calendar features: a reading of
    five values (calendar filled from the timestamp by the streamer) or an input error."""
    parser = LineParser(SCHEMA2_MODEL.layout)
    stream = StreamingForecaster(SCHEMA2_MODEL)
    line = ",".join((["1767225600"] if with_timestamp else []) + values)
    try:
        parsed = parser.parse(line)
        if isinstance(parsed, Reading):
            assert len(parsed.values) == 5
            answer = stream.observe_reading(parsed)
            assert answer["accepted"] == 1
            row = stream._state.buffer.window()
            assert row.shape[1] == 5 and np.isfinite(row).all()
    except InputError as exc:
        assert str(exc)
