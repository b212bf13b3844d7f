"""`edgecast-runtime mqtt` against a real Mosquitto broker on loopback: readings in,
answers out (QoS 1), reconnection when the broker goes away or is not up yet,
readings queued while the runtime was down, hot reload, clean shutdown."""

import json
import queue
import signal
import uuid

import pytest
from support.runtime import (
    ONE,
    ONE_V2,
    Background,
    add_count,
    assert_one_line_error,
    expected_forecast,
    replace_atomically,
    run_cli,
)

paho = pytest.importorskip("paho.mqtt.client", reason="paho-mqtt (the [mqtt] extra) is missing")
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

READINGS, ANSWERS = "hub/sensors/pm25", "hub/forecasts/pm25"
HOUR = 3600


class Listener:
    """A test client: subscribes to the answers (again after any reconnect) and
    publishes readings with QoS 1."""

    def __init__(self, broker):
        self.answers = queue.Queue()
        self.subscribed = queue.Queue()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}")
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(ANSWERS, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.put(mid)
        self.client.on_message = lambda c, u, message: self.answers.put(json.loads(message.payload))
        self.client.connect("127.0.0.1", broker.port, keepalive=10)
        self.client.loop_start()
        self.subscribed.get(timeout=10)

    def publish(self, payload):
        if isinstance(payload, (dict, list, int, float)):
            payload = json.dumps(payload)
        self.client.publish(READINGS, payload, qos=1).wait_for_publish(10)

    def next(self, timeout=15):
        return self.answers.get(timeout=timeout)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def listener(broker):
    client = Listener(broker)
    try:
        yield client
    finally:
        client.close()


def start_runtime(broker, model, state, *extra):
    return Background("mqtt", model, "--broker", f"127.0.0.1:{broker.port}", "--subscribe", READINGS,
                      "--publish", ANSWERS, "--state", state, "--client-id", "edgecast-test",
                      "--reconnect-max", "1", "--poll-interval", "0.1", *extra)


def reading(value, hour):
    return {"value": value, "timestamp": HOUR * hour}


def test_readings_in_answers_out_including_bad_payloads(broker, listener, tmp_path):
    with start_runtime(broker, ONE, tmp_path / "state.json") as runtime:
        runtime.wait_event("mqtt_subscribed")
        for hour, value in enumerate([10, 20, 30, 40]):
            listener.publish(reading(value, hour))
        answers = [listener.next() for _ in range(4)]
        assert [a["status"] for a in answers] == ["filling"] * 3 + ["forecast"]
        assert answers[-1]["forecast"] == pytest.approx(expected_forecast([10, 20, 30, 40]))
        assert answers[-1]["topic"] == READINGS and answers[-1]["accepted"] == 4
        for payload, fragment in [(b"\xff\xfe", "not UTF-8"), ("high", "not a number"),
                                  ('{"values": [1, 2]}', "needs 1 value(s)"),
                                  ("timestamp,PM2.5", "header is not a reading"),
                                  (reading(5, 1), "time order")]:
            listener.publish(payload)
            answer = listener.next()
            assert answer["status"] == "error" and fragment in answer["error"], answer
        listener.publish("14400,50")  # CSV payloads work too
        assert listener.next()["forecast"] == pytest.approx(expected_forecast([20, 30, 40, 50]))
        assert runtime.stop(signal.SIGTERM) == 0
        runtime.wait_event("stopped")


def test_reconnects_after_the_broker_restarts_and_keeps_its_buffer(broker, listener, tmp_path):
    state = tmp_path / "state.json"
    with start_runtime(broker, ONE, state) as runtime:
        runtime.wait_event("mqtt_subscribed")
        for hour, value in enumerate([10, 20]):
            listener.publish(reading(value, hour))
            assert listener.next()["status"] == "filling"
        broker.stop()
        runtime.wait_event("mqtt_disconnected")
        broker.start()
        runtime.wait_event("mqtt_subscribed", count=2, timeout=30)
        listener.subscribed.get(timeout=30)  # the test client is back as well
        for hour, value in [(2, 30), (3, 40)]:
            listener.publish(reading(value, hour))
        answers = [listener.next(), listener.next()]
        assert answers[-1]["forecast"] == pytest.approx(expected_forecast([10, 20, 30, 40]))
        assert [a["accepted"] for a in answers] == [3, 4]  # nothing lost, nothing counted twice
    assert json.loads(state.read_text())["accepted"] == 4
    add_count("faults", "broker_restarts", 1)


def test_waits_for_a_broker_that_is_not_up_yet(broker, tmp_path):
    broker.stop()
    with start_runtime(broker, ONE, tmp_path / "state.json") as runtime:
        runtime.wait_event("mqtt_connect_failed")
        broker.start()
        runtime.wait_event("mqtt_subscribed", timeout=30)


def test_readings_sent_while_the_runtime_is_down_are_not_lost(broker, listener, tmp_path):
    state = tmp_path / "state.json"
    with start_runtime(broker, ONE, state) as runtime:
        runtime.wait_event("mqtt_subscribed")
        listener.publish(reading(10, 0))
        assert listener.next()["accepted"] == 1
        runtime.stop(signal.SIGKILL)
    for hour, value in [(1, 20), (2, 30), (3, 40)]:
        listener.publish(reading(value, hour))  # the broker queues them for the session
    with start_runtime(broker, ONE, state) as runtime:
        # Killed right after answering, the runtime may not have sent its PUBACK for
        # the first reading: the broker delivers it again, and it is answered as a
        # duplicate, not counted twice.
        answers = [listener.next()]
        while answers[-1].get("accepted") != 4 and len(answers) < 5:
            answers.append(listener.next())
        fresh = [a for a in answers if not a.get("duplicate")]
        assert [a["accepted"] for a in fresh] == [2, 3, 4]
        assert all(a["accepted"] == 1 for a in answers if a.get("duplicate"))
        assert fresh[-1]["forecast"] == pytest.approx(expected_forecast([10, 20, 30, 40]))
        assert runtime.wait_event("mqtt_connected")["session_present"] is True
    assert json.loads(state.read_text())["accepted"] == 4


def test_model_replaced_on_disk_is_used_for_the_next_readings(broker, listener, model_copy, tmp_path):
    with start_runtime(broker, model_copy, tmp_path / "state.json") as runtime:
        runtime.wait_event("mqtt_subscribed")
        for hour, value in enumerate([10, 20, 30, 40]):
            listener.publish(reading(value, hour))
        assert [listener.next() for _ in range(4)][-1]["forecast"] == pytest.approx([26.0])
        replace_atomically(ONE_V2, model_copy)
        runtime.wait_event("stream_model_changed")
        listener.publish(reading(50, 4))
        answer = listener.next()
        assert answer["forecast"] == pytest.approx(expected_forecast([20, 30, 40, 50], offset=1000))
        assert answer["model_sha256"] == runtime.wait_event("reloaded")["sha256"]


@pytest.mark.parametrize("broker_text, fragment", [(":1883", "missing host"),
                                                   ("host:port", "bad port"),
                                                   ("[::1", "missing ']'")])
def test_bad_broker_address_is_one_line(broker_text, fragment):
    result = run_cli("mqtt", ONE, "--broker", broker_text, "--subscribe", "a", "--publish", "b")
    assert_one_line_error(result, 1, fragment)
