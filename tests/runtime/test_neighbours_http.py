"""Neighbours over HTTP through `serve` (issue 27, case 6): a neighbour's reading takes
the timestamp forms the station's own readings take (ISO 8601 as well as epoch seconds),
and a forecast the `--neighbour-wait` timer releases after its request was answered
("waiting") can be fetched: GET /v1/forecast/latest."""

import time
from datetime import datetime, timezone

import numpy as np
import pytest
from support.runtime import Server
from test_neighbours import FIXTURE, window_rows

from edgecast_runtime import Forecaster


@pytest.fixture(scope="module")
def recorded():
    import json

    return json.loads((FIXTURE / "readings.json").read_text())


def iso(seconds: float, zone: str = "Z") -> str:
    text = datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return text + zone


def test_a_neighbours_reading_takes_an_iso_timestamp(recorded, tmp_path):
    model = Forecaster(FIXTURE / "home.onnx")
    with Server(FIXTURE / "home.onnx", "--station", "home", "--neighbour-wait", "30",
                "--state", tmp_path / "state.json") as server:
        for hour in range(model.look_back):
            for station, zone in (("upwind", "Z"), ("far", "")):  # no zone: the model's clock (UTC)
                reading = dict(recorded[station][hour], timestamp=iso(recorded[station][hour]["timestamp"], zone))
                status, body, _ = server.request("POST", "/v1/observe", {"station": station, **reading})
                assert status == 200 and body["status"] == "waiting", body
            home = dict(recorded["home"][hour], timestamp=iso(recorded["home"][hour]["timestamp"]))
            status, body, _ = server.request("POST", "/v1/observe", home)
            assert status == 200, body
        assert body["status"] == "forecast" and body["neighbours_missing"] == [], body
        expected = model.predict(window_rows(model, recorded, range(model.look_back)))
        np.testing.assert_allclose(body["forecast"], expected, rtol=0, atol=1e-5)
        status, latest, _ = server.request("GET", "/v1/forecast/latest")
        assert status == 200 and latest["released_by"] == "observe", latest
        assert latest["forecast"] == body["forecast"] and latest["timestamp"] == body["timestamp"]
        status, body, _ = server.request("POST", "/v1/observe", {"station": "far", "timestamp": "yesterday",
                                                                 "PM2.5": 1})
        assert status == 422 and "timestamp" in body["error"], body
        status, body, _ = server.request("POST", "/v1/observe", {"station": "far", "PM2.5": 1})
        assert status == 422 and "needs a 'timestamp'" in body["error"], body


def test_a_forecast_released_by_the_wait_can_be_fetched(recorded, tmp_path):
    model = Forecaster(FIXTURE / "home.onnx")
    with Server(FIXTURE / "home.onnx", "--station", "home", "--neighbour-wait", "1",
                "--state", tmp_path / "state.json") as server:
        status, body, _ = server.request("GET", "/v1/forecast/latest")
        assert status == 404 and "no forecast yet" in body["error"], body
        for hour in range(model.look_back):  # the neighbours stay silent
            status, body, _ = server.request("POST", "/v1/observe", recorded["home"][hour])
            assert status == 200 and body["status"] in ("waiting", "filling"), body
        last = recorded["home"][model.look_back - 1]["timestamp"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status, latest, _ = server.request("GET", "/v1/forecast/latest")
            if status == 200 and latest["timestamp"] == last:
                break
            time.sleep(0.2)
        assert status == 200 and latest["timestamp"] == last, latest
        assert latest["released_by"] == "neighbour_wait" and latest["neighbours_missing"] == ["far", "upwind"]
        silent = {(hour, station) for hour in range(model.look_back) for station in ("far", "upwind")}
        expected = model.predict(window_rows(model, recorded, range(model.look_back), silent))
        np.testing.assert_allclose(latest["forecast"], expected, rtol=0, atol=1e-5)
        assert server.wait_event("forecast", timestamp=last)["forecast"] == latest["forecast"]
