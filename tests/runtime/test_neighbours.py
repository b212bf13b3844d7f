"""The hub's neighbours: readings aligned by timestamp, the wait policy, the record of
who was present, NaN only in neighbours' columns, and a state that survives a restart."""

import json
from pathlib import Path

import numpy as np
import pytest

from edgecast_runtime import Forecaster
from edgecast_runtime.errors import InputValueError
from edgecast_runtime.neighbours import NeighbourAligner, neighbour_columns
from edgecast_runtime.readings import Reading, reading_from_json
from edgecast_runtime.streaming import StreamingForecaster

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "neighbours"
WAIT = 60.0


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def model():
    return Forecaster(FIXTURE / "model.onnx")


@pytest.fixture(scope="module")
def recorded():
    return json.loads((FIXTURE / "readings.json").read_text())


def aligner_for(model, clock, folder=None):
    streamer = StreamingForecaster(model, state_path=folder / "stream.json" if folder else None)
    columns = neighbour_columns(model.layout, model.spec.encodings)
    return NeighbourAligner(streamer, columns, WAIT, folder / "neighbours.json" if folder else None, clock)


def own_reading(model, row) -> Reading:
    return reading_from_json({"timestamp": row["timestamp"], "PM2.5": row["PM2.5"]}, model.layout)


def window_rows(model, recorded, hours, silent=()):
    """The raw rows the model reads for these hours, NaN for silent (hour, station)."""
    rows = []
    for hour in hours:
        row = [recorded["home"][hour]["PM2.5"]]
        for name in model.features[1:]:
            station = name.split("@")[1]
            row.append(np.nan if (hour, station) in silent else recorded[station][hour]["PM2.5"])
        rows.append(row)
    return np.asarray(rows, np.float32)


def test_the_model_reads_two_neighbours_and_refuses_nan_elsewhere(model):
    assert model.schema_version == "3"
    assert neighbour_columns(model.layout, model.spec.encodings) == {"far": {"PM2.5": 1}, "upwind": {"PM2.5": 2}}
    window = np.full((model.look_back, model.n_features), 50, np.float32)
    window[:, 1:] = np.nan
    assert np.isfinite(model.predict(window)).all()
    window[0, 0] = np.nan
    with pytest.raises(InputValueError):
        model.predict(window)


def test_all_present_forecasts_at_once_and_equals_the_offline_prediction(model, recorded):
    clock = Clock()
    aligner = aligner_for(model, clock)
    answers = []
    for hour in range(model.look_back):
        for station in ("upwind", "far"):  # neighbours first: the own reading then leaves at once
            row = recorded[station][hour]
            assert aligner.neighbour(station, row["timestamp"], {"PM2.5": row["PM2.5"]}) == []
        answers += aligner.own(own_reading(model, recorded["home"][hour]))
    assert len(answers) == model.look_back
    last = answers[-1]
    assert last["status"] == "forecast"
    assert last["neighbours_present"] == ["far", "upwind"] and last["neighbours_missing"] == []
    expected = model.predict(window_rows(model, recorded, range(model.look_back)))
    np.testing.assert_allclose(last["forecast"], expected, rtol=0, atol=1e-5)


def test_a_silent_neighbour_is_waited_for_then_forecast_without(model, recorded):
    clock = Clock()
    aligner = aligner_for(model, clock)
    hours = range(model.look_back)
    answers = []
    for hour in hours:
        row = recorded["far"][hour]
        aligner.neighbour("far", row["timestamp"], {"PM2.5": row["PM2.5"]})
        answers += aligner.own(own_reading(model, recorded["home"][hour]))
        assert aligner.status()["waiting"] == [recorded["home"][hour]["timestamp"]]  # upwind is silent
        clock.now += WAIT - 1
        assert aligner.release() == []
        clock.now += 1
        answers += aligner.release()
    assert len(answers) == model.look_back
    assert answers[-1]["neighbours_present"] == ["far"] and answers[-1]["neighbours_missing"] == ["upwind"]
    silent = {(hour, "upwind") for hour in hours}
    expected = model.predict(window_rows(model, recorded, hours, silent))
    np.testing.assert_allclose(answers[-1]["forecast"], expected, rtol=0, atol=1e-5)
    # upwind's reading of an hour already forecast is late: dropped and counted
    late = recorded["upwind"][0]
    assert aligner.neighbour("upwind", late["timestamp"], {"PM2.5": late["PM2.5"]}) == []
    assert aligner.status()["late_dropped"] == 1


def test_readings_out_of_order_are_refused(model, recorded):
    aligner = aligner_for(model, Clock())
    aligner.own(own_reading(model, recorded["home"][3]))
    with pytest.raises(InputValueError, match="time order"):
        aligner.own(own_reading(model, recorded["home"][2]))


def test_the_state_survives_a_restart_with_neighbours_readings(model, recorded, tmp_path):
    clock = Clock()
    aligner = aligner_for(model, clock, tmp_path)
    hours = range(model.look_back)
    for hour in hours[:-1]:
        for station in ("upwind", "far"):
            row = recorded[station][hour]
            aligner.neighbour(station, row["timestamp"], {"PM2.5": row["PM2.5"]})
        aligner.own(own_reading(model, recorded["home"][hour]))
    last = hours[-1]
    row = recorded["far"][last]
    aligner.neighbour("far", row["timestamp"], {"PM2.5": row["PM2.5"]})
    assert aligner.own(own_reading(model, recorded["home"][last])) == []  # waits for upwind
    aligner.streamer.close()
    # a restart (as after SIGKILL: only the files remain) carries on where it was
    restarted = aligner_for(model, clock, tmp_path)
    assert restarted.status()["waiting"] == [recorded["home"][last]["timestamp"]]
    row = recorded["upwind"][last]
    answers = restarted.neighbour("upwind", row["timestamp"], {"PM2.5": row["PM2.5"]})
    assert len(answers) == 1 and answers[0]["neighbours_missing"] == []
    expected = model.predict(window_rows(model, recorded, hours))
    np.testing.assert_allclose(answers[0]["forecast"], expected, rtol=0, atol=1e-5)
    restarted.streamer.close()


def test_http_observe_takes_a_station_field(model, recorded, tmp_path):
    from support.runtime import Server

    with Server(FIXTURE / "home.onnx", "--station", "home", "--neighbour-wait", "30",
                "--state", tmp_path / "state.json") as server:
        for hour in range(model.look_back):
            for station in ("upwind", "far"):
                status, body, _ = server.request("POST", "/v1/observe", {"station": station, **recorded[station][hour]})
                assert status == 200 and body["status"] == "waiting"
            status, body, _ = server.request("POST", "/v1/observe", recorded["home"][hour])
            assert status == 200, body
        assert body["status"] == "forecast" and body["neighbours_missing"] == []
        expected = Forecaster(FIXTURE / "home.onnx").predict(window_rows(model, recorded, range(model.look_back)))
        np.testing.assert_allclose(body["forecast"], expected, rtol=0, atol=1e-5)
        status, body, _ = server.request("POST", "/v1/observe", {"station": "elsewhere", "timestamp": 0, "PM2.5": 1})
        assert status == 422 and "not a neighbour" in body["error"]
