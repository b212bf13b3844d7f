"""`edgecast-runtime mqtt` against hostile or unlucky input, on a real Mosquitto on
loopback: each test first mounts the attack or fault as it was found, then checks the
fixed behaviour.

- a 30 MB payload: never reaches the hub (MQTT 5 Maximum Packet Size), memory stays
  far under the unit's cap, and a payload just above the readings' cap is refused
  before it is decoded; the next reading is answered;
- a reading whose state write fails is not acknowledged: the broker delivers it
  again, and it is answered once the fault is gone (after a restart, or at once);
- a retained reading is answered once, not again on every reconnect;
- a subscription that hears the hub's own messages is refused at start (exit 2);
- two hubs on one machine (one hostname) get two client ids, derived from the
  machine id, and do not knock each other off.

Run against the code before these fixes, each attack succeeds and its test fails:
peak memory 451 MB after the 30 MB payload; the unsaved reading acknowledged and
never delivered again; the retained reading counted on every reconnect; `hub/#`
with `hub/forecasts` running on, reading its own answers; the second hub knocking
the first off (one answer of two).
"""

import json
import os
import pwd
import queue
import time
import uuid
from pathlib import Path

import pytest
from support.runtime import (
    ONE,
    UNIT_MEMORY_CAP_MB,
    Background,
    assert_one_line_error,
    expected_forecast,
    peak_rss_mb,
    record,
    run_cli,
)

paho = pytest.importorskip("paho.mqtt.client", reason="paho-mqtt (the [mqtt] extra) is missing")
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from test_mqtt import READINGS, Listener, reading, start_runtime  # noqa: E402

from edgecast_runtime.mqtt.policy import DEFAULT_MAX_READING_BYTES, default_client_id  # noqa: E402

HOUR = 3600
BIG_PAYLOAD_BYTES = 30 * 1024 * 1024


def answers_until(listener, accepted, timeout=20.0):
    """Every answer up to the first with `accepted` == `accepted` (fails after `timeout`)."""
    seen, deadline = [], time.monotonic() + timeout
    while not seen or seen[-1].get("accepted") != accepted:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no answer with accepted={accepted}; got {seen}"
        try:
            seen.append(listener.next(timeout=remaining))
        except queue.Empty:
            raise AssertionError(f"no answer with accepted={accepted}; got {seen}") from None
    return seen


def answers_within(listener, seconds):
    """Every answer that arrives within `seconds`."""
    seen, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            seen.append(listener.next(timeout=max(0.01, deadline - time.monotonic())))
        except queue.Empty:
            pass
    return seen


def test_a_30_mb_payload_never_reaches_the_hub_and_memory_stays_under_the_cap(broker, listener, tmp_path):
    with start_runtime(broker, ONE, tmp_path / "state.json") as runtime:
        runtime.wait_event("mqtt_subscribed")
        for hour, value in enumerate([10, 20]):
            listener.publish(reading(value, hour))
            listener.next()
        before = peak_rss_mb(runtime.proc.pid)
        # The payload as a sensor's CSV line would be: digits and commas.
        listener.publish(b"1," * (BIG_PAYLOAD_BYTES // 2))
        listener.publish(reading(30, 2))
        answers = answers_until(listener, 3, timeout=60)
        peak = peak_rss_mb(runtime.proc.pid)
        record("hostile_mqtt", payload_mb=BIG_PAYLOAD_BYTES / 2**20, peak_rss_mb_before=round(before, 1),
               peak_rss_mb_after_30mb_payload=round(peak, 1), unit_cap_mb=UNIT_MEMORY_CAP_MB)
        assert peak < UNIT_MEMORY_CAP_MB / 2, peak
        assert peak - before < 16, (before, peak)  # far less than the payload: it never arrived
        assert answers == answers[-1:], answers  # the 30 MB payload was never read, nor answered
        # Just above the readings' cap: under the packet limit, refused before decoding.
        listener.publish(b" " * DEFAULT_MAX_READING_BYTES + b"40")
        refused = listener.next()
        assert refused["status"] == "error" and f"{DEFAULT_MAX_READING_BYTES}-byte limit" in refused["error"]
        event = runtime.wait_event("mqtt_payload_refused")
        assert event["bytes"] == DEFAULT_MAX_READING_BYTES + 2 and event["refused"] == 1
        listener.publish(reading(40, 3))
        answer = listener.next()
        assert answer["accepted"] == 4
        assert answer["forecast"] == pytest.approx(expected_forecast([10, 20, 30, 40]))
        assert runtime.stop() == 0


def hide_state_folder(folder):
    """The state folder replaced by a regular file: every write in it fails (ENOTDIR)."""
    folder.rename(folder.with_name("away"))
    folder.write_text("not a folder\n")


def restore_state_folder(folder):
    folder.unlink()
    folder.with_name("away").rename(folder)


def test_a_reading_whose_state_write_failed_is_delivered_again_and_answered(broker, listener, tmp_path):
    folder = tmp_path / "state"
    folder.mkdir()
    state = folder / "state.json"
    with start_runtime(broker, ONE, state, "--no-score") as runtime:
        runtime.wait_event("mqtt_subscribed")
        for hour, value in enumerate([10, 20]):
            listener.publish(reading(value, hour))
            assert listener.next()["accepted"] == hour + 1
        hide_state_folder(folder)
        listener.publish(reading(30, 2))  # not saved
        failed = listener.next()
        assert failed["status"] == "error" and "cannot save the stream state" in failed["error"]
        listener.publish(reading(40, 3))  # arrives after the failure: must not overtake it
        time.sleep(0.5)
        assert runtime.stop() == 0
    first = runtime
    restore_state_folder(folder)
    with start_runtime(broker, ONE, state, "--no-score") as runtime:
        # The broker delivers both again, in order, to the restarted hub.
        answers = [a for a in answers_until(listener, 4) if a["status"] != "error"]
        assert [a["accepted"] for a in answers] == [3, 4], answers
        assert first.wait_event("reading_not_saved")["topic"] == READINGS
        assert answers[-1]["forecast"] == pytest.approx(expected_forecast([10, 20, 30, 40]))
        # The same fault on a running hub: it asks again (reconnects) until it can save.
        hide_state_folder(folder)
        listener.publish(reading(50, 4))
        assert listener.next()["status"] == "error"
        time.sleep(1.5)  # a failed retry or two
        restore_state_folder(folder)
        answer = answers_until(listener, 5)[-1]
        assert answer["forecast"] == pytest.approx(expected_forecast([20, 30, 40, 50]))
        redeliveries = sum(e.get("event") == "mqtt_redelivery" for e in runtime.events)
        assert runtime.stop() == 0
    assert json.loads(state.read_text())["accepted"] == 5
    record("hostile_mqtt", unsaved_reading_redeliveries_while_running=redeliveries)


def test_a_retained_reading_is_answered_once_across_reconnects(broker, listener, tmp_path):
    # The broker keeps retained messages across its restart (persistence on; as root,
    # mosquitto would drop to the user `mosquitto`, who cannot write this test's folder).
    with open(broker.config, "a") as config:
        config.write(f"user {pwd.getpwuid(os.geteuid()).pw_name}\npersistence true\n"
                     f"persistence_location {tmp_path}/\n")
    broker.stop()
    broker.start()
    listener.subscribed.get(timeout=30)
    state = tmp_path / "state.json"
    with start_runtime(broker, ONE, state) as runtime:
        runtime.wait_event("mqtt_subscribed")
        # A sensor that publishes its readings retained, and without a timestamp.
        listener.client.publish(READINGS, "10", qos=1, retain=True).wait_for_publish(10)
        assert listener.next()["accepted"] == 1
        # Let its PUBACK reach the broker first: a reading without a timestamp that the
        # broker sends again (at least once) is counted again, retained or not.
        time.sleep(0.5)
        broker.stop()  # reconnect 1
        broker.start()
        runtime.wait_event("mqtt_subscribed", count=2, timeout=30)
        listener.subscribed.get(timeout=30)
        time.sleep(0.5)  # the retained copy, if it were read, is answered by now
        assert runtime.stop() == 0
    first = runtime
    with start_runtime(broker, ONE, state) as runtime:  # reconnect 2: a restarted hub
        runtime.wait_event("mqtt_subscribed")
        time.sleep(0.5)
        listener.publish("20")
        answers = answers_within(listener, 2.0)
        assert [a["accepted"] for a in answers] == [2], answers  # the retained "10" counted once
        assert runtime.wait_event("mqtt_retained_skipped")["topic"] == READINGS
        assert runtime.stop() == 0
    assert json.loads(state.read_text())["accepted"] == 2
    assert first.wait_event("mqtt_retained_skipped")["topic"] == READINGS
    record("hostile_mqtt", retained_reading_counted=1, reconnects=2)


NEIGHBOURS = Path(__file__).resolve().parent / "fixtures" / "neighbours"  # home reads upwind and far


def test_a_neighbours_topic_has_the_readings_cap_and_skips_retained_readings(broker, tmp_path):
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}")
    client.connect("127.0.0.1", broker.port, keepalive=10)
    client.loop_start()

    def home_hub():
        return Background("mqtt", NEIGHBOURS / "home.onnx", "--broker", f"127.0.0.1:{broker.port}",
                          "--subscribe", "hub/home/in", "--publish", "hub/home/out", "--state", tmp_path / "home.json",
                          "--client-id", "hub-home", "--reconnect-max", "1", "--poll-interval", "0",
                          "--station", "home")

    try:
        with home_hub() as hub:
            hub.wait_event("mqtt_subscribed", count=3)  # its own topic and two neighbours'
            oversized = b" " * (DEFAULT_MAX_READING_BYTES + 1)
            client.publish("edgecast/readings/upwind", oversized, qos=1).wait_for_publish(10)
            event = hub.wait_event("mqtt_payload_refused")
            assert event["topic"] == "edgecast/readings/upwind" and event["kind"] == "neighbour reading"
            far = {"station": "far", "timestamp": 7 * HOUR, "PM2.5": 12.0}
            client.publish("edgecast/readings/far", json.dumps(far), qos=1, retain=True).wait_for_publish(10)
            time.sleep(0.5)
            assert hub.stop() == 0
        with home_hub() as hub:  # subscribed again: the broker's retained copy comes back, skipped
            assert hub.wait_event("mqtt_retained_skipped")["topic"] == "edgecast/readings/far"
            assert hub.stop() == 0
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.parametrize("options, fragment", [
    (["--subscribe", "hub/#", "--publish", "hub/forecasts"], "'hub/#' matches --publish 'hub/forecasts'"),
    (["--subscribe", "hub/+/in", "--publish", "out", "--status-topic", "hub/status/in"], "--status-topic"),
    (["--subscribe", "edgecast/readings/+", "--publish", "out", "--station", "home", "--publish-readings"],
     "--publish-readings 'edgecast/readings/home'"),
    (["--subscribe", "in", "--publish", "out/#"], "--publish 'out/#' is a topic filter"),
])
def test_a_subscription_that_hears_the_hubs_own_messages_is_refused_at_start(broker, tmp_path, options,
                                                                             fragment):
    started = time.monotonic()
    result = run_cli("mqtt", ONE, "--broker", f"127.0.0.1:{broker.port}", "--state", tmp_path / "state.json",
                     "--client-id", "edgecast-loop", *options, timeout=20)
    assert_one_line_error(result, 2, fragment)
    record("hostile_mqtt", self_subscription_refused_in_s=round(time.monotonic() - started, 2))


def test_client_ids_come_from_the_machine_id_hashed(tmp_path):
    first, second, empty = tmp_path / "machine-id-1", tmp_path / "machine-id-2", tmp_path / "empty"
    first.write_text("3d1219c7c4c5404aaa1f6d2a48adfda4\n")
    second.write_text("8a4f0c1e2b3d4c5e9f8a7b6c5d4e3f21\n")
    empty.write_text("uninitialized\n")
    one, source = default_client_id("hub/in", machine_id_files=[first])
    assert source == "machine-id" and one == default_client_id("hub/in", machine_id_files=[first])[0]
    assert one != default_client_id("hub/in", machine_id_files=[second])[0]  # cloned image, new machine id
    assert one != default_client_id("hub/other", machine_id_files=[first])[0]  # a second stream on the device
    assert "3d1219c7" not in one and one.startswith("edgecast-")
    assert default_client_id("hub/in", "hub-7", machine_id_files=[first])[0].startswith("edgecast-hub-7-")
    # the next file when the first is missing or not a machine id
    assert default_client_id("hub/in", machine_id_files=[tmp_path / "none", empty, first])[0] == one
    # neither: a random secret kept beside the state file, so the session survives a restart
    state = tmp_path / "state.json"
    kept, source = default_client_id("hub/in", state=state, machine_id_files=[empty])
    assert source == "state" and default_client_id("hub/in", state=state, machine_id_files=[])[0] == kept
    assert kept != default_client_id("hub/in", state=tmp_path / "other.json", machine_id_files=[])[0]
    assert default_client_id("hub/in", machine_id_files=[])[1] == "random"


def hub_without_client_id(broker, folder, topic):
    return Background("mqtt", ONE, "--broker", f"127.0.0.1:{broker.port}", "--subscribe", f"{topic}/in",
                      "--publish", f"{topic}/out", "--state", folder / f"{topic}.json", "--reconnect-max", "1",
                      "--poll-interval", "0")


def test_two_hubs_on_one_machine_keep_their_own_sessions(broker, tmp_path):
    answers = queue.Queue()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}")
    client.on_message = lambda c, u, message: answers.put((message.topic, json.loads(message.payload)))
    client.connect("127.0.0.1", broker.port, keepalive=10)
    client.subscribe("+/out", qos=1)
    client.loop_start()
    hubs = [hub_without_client_id(broker, tmp_path, topic) for topic in ("north", "south")]
    try:
        for hub in hubs:
            hub.wait_event("mqtt_subscribed")
        time.sleep(3)  # long enough for a knock-off loop to show (reconnect every 1 s)
        connects = [sum(e.get("event") == "mqtt_connected" for e in hub.events) for hub in hubs]
        for topic in ("north", "south"):
            client.publish(f"{topic}/in", json.dumps(reading(10, 0)), qos=1).wait_for_publish(10)
        got = dict(answers.get(timeout=15) for _ in range(2))
        assert {topic: answer["accepted"] for topic, answer in got.items()} == {"north/out": 1, "south/out": 1}
        ids = [hub.wait_event("mqtt_starting")["client_id"] for hub in hubs]
        for hub in hubs:
            assert hub.stop() == 0
    finally:
        for hub in hubs:
            hub.kill()
        client.disconnect()
        client.loop_stop()
    assert connects == [1, 1], connects
    assert ids[0] != ids[1]
    machine_files = [path for path in ("/etc/machine-id", "/var/lib/dbus/machine-id") if os.path.exists(path)]
    if machine_files:
        assert ids[0] == default_client_id("north/in", machine_id_files=machine_files)[0]
    record("hostile_mqtt", hubs_on_one_machine=2, connects_each_in_3s=connects[0])


@pytest.fixture
def listener(broker):
    client = Listener(broker)
    try:
        yield client
    finally:
        client.close()


def test_readings_cap_is_an_option_and_the_drops_are_in_the_status(broker, listener, tmp_path):
    statuses = queue.Queue()
    listener.client.message_callback_add("hub/status", lambda c, u, message: statuses.put(json.loads(message.payload)))
    listener.client.subscribe("hub/status", qos=1)
    with start_runtime(broker, ONE, tmp_path / "state.json", "--max-payload", "64",
                       "--status-topic", "hub/status", "--status-interval", "0.2") as runtime:
        runtime.wait_event("mqtt_subscribed")
        listener.publish(json.dumps(reading(10, 0)) + " " * 64)
        assert "64-byte limit" in listener.next()["error"]
        listener.publish(reading(10, 0))
        assert listener.next()["accepted"] == 1
        status = statuses.get(timeout=10)
        while status["readings"] < 1:
            status = statuses.get(timeout=10)
        assert status["mqtt"] == {"payloads_refused": 1, "retained_skipped": 0}
    result = run_cli("mqtt", ONE, "--broker", "127.0.0.1:1", "--subscribe", "a", "--publish", "b",
                     "--max-payload", str(2 * 1024 * 1024))
    assert_one_line_error(result, 2, "--max-payload")
