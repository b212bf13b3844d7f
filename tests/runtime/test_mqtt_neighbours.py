"""Three hubs on a real Mosquitto on loopback, each publishing its station's recorded
readings and following the other two: forecasts equal the offline Forecaster.predict
on the same aligned windows; a hub killed with SIGKILL and restarted loses no
acknowledged reading; a silenced neighbour lets the others forecast on, flagged."""

import json
import queue
import signal
import uuid
from pathlib import Path

import numpy as np
import pytest
from support.runtime import Background

from edgecast_runtime import Forecaster

paho = pytest.importorskip("paho.mqtt.client", reason="paho-mqtt (the [mqtt] extra) is missing")
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "neighbours"
STATIONS = ("home", "upwind", "far")
WAIT = 4  # seconds a hub waits for a neighbour's reading of the same hour


class Operator:
    """Publishes each station's readings to its hub and collects every hub's answers."""

    def __init__(self, broker):
        self.answers = {station: queue.Queue() for station in STATIONS}
        self.subscribed = queue.Queue()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"op-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("hub/+/out", qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.put(mid)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port, keepalive=10)
        self.client.loop_start()
        self.subscribed.get(timeout=10)

    def _on_message(self, client, userdata, message):
        self.answers[message.topic.split("/")[1]].put(json.loads(message.payload))

    def send(self, station, row):
        self.client.publish(f"hub/{station}/in", json.dumps(row), qos=1).wait_for_publish(10)

    def next(self, station, timeout=30):
        return self.answers[station].get(timeout=timeout)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def start_hub(broker, station, folder):
    return Background("mqtt", FIXTURE / f"{station}.onnx", "--broker", f"127.0.0.1:{broker.port}",
                      "--subscribe", f"hub/{station}/in", "--publish", f"hub/{station}/out",
                      "--state", folder / f"{station}.json",
                      "--reconnect-max", "1", "--poll-interval", "0.1", "--station", station,
                      "--publish-readings", "--neighbour-wait", str(WAIT))


def offline(station, recorded, hours, silent=frozenset()):
    """Forecaster.predict on the window the hub should have built for these hours."""
    model = Forecaster(FIXTURE / f"{station}.onnx")
    rows = []
    for hour in hours:
        row = []
        for name in model.features:
            source = station if "@" not in name else name.split("@")[1]
            row.append(np.nan if (hour, source) in silent else recorded[source][hour]["PM2.5"])
        rows.append(row)
    return model.predict(np.asarray(rows, np.float32))


def test_three_hubs_forecast_together_survive_sigkill_and_a_silent_neighbour(broker, tmp_path):
    recorded = json.loads((FIXTURE / "readings.json").read_text())
    look_back = Forecaster(FIXTURE / "home.onnx").look_back
    operator = Operator(broker)
    hubs = {station: start_hub(broker, station, tmp_path) for station in STATIONS}
    try:
        for hub in hubs.values():
            hub.wait_event("mqtt_subscribed", count=3)  # its own topic and two neighbours'

        def hour_of_readings(hour, stations=STATIONS):
            for station in stations:
                operator.send(station, recorded[station][hour])
            return {station: operator.next(station) for station in stations}

        # every hub forecasts with both neighbours present, as offline
        for hour in range(look_back + 1):
            answers = hour_of_readings(hour)
        for station, answer in answers.items():
            assert answer["status"] == "forecast", answer
            assert answer["neighbours_missing"] == [] and len(answer["neighbours_present"]) == 2
            np.testing.assert_allclose(answer["forecast"], offline(station, recorded, range(1, look_back + 1)),
                                       rtol=0, atol=1e-4)

        # SIGKILL "far" after its reading of the next hour is acknowledged, restart it:
        # nothing acknowledged is lost, and it carries on with its neighbours
        hour = look_back + 1
        answers = hour_of_readings(hour)
        assert answers["far"]["accepted"] == hour + 1
        hubs["far"].stop(signal.SIGKILL)
        hubs["far"] = start_hub(broker, "far", tmp_path)
        hubs["far"].wait_event("mqtt_subscribed", count=3)
        hour += 1
        answers = hour_of_readings(hour)
        assert answers["far"]["accepted"] == hour + 1 and answers["far"]["neighbours_missing"] == []
        np.testing.assert_allclose(answers["far"]["forecast"],
                                   offline("far", recorded, range(hour - look_back + 1, hour + 1)), rtol=0, atol=1e-4)

        # "upwind" falls silent: the others wait WAIT seconds, then forecast without it, flagged
        silent_hour = hour + 1
        answers = hour_of_readings(silent_hour, ("home", "far"))
        for station in ("home", "far"):
            answer = answers[station]
            assert answer["neighbours_missing"] == ["upwind"], answer
            expected = offline(station, recorded, range(silent_hour - look_back + 1, silent_hour + 1),
                               silent={(silent_hour, "upwind")})
            np.testing.assert_allclose(answer["forecast"], expected, rtol=0, atol=1e-4)
        for hub in hubs.values():
            assert hub.stop(signal.SIGTERM) == 0
    finally:
        for hub in hubs.values():
            hub.kill()
        operator.close()
