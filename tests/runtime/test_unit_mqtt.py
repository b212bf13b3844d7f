"""The shipped unit's `mqtt` variant (its commented ExecStart=) under the unit's sandbox
(rebuilt with bubblewrap, tests/support/unit_sandbox.py) against a real Mosquitto: it
answers readings, and with `--trust` it installs a signed release sent over MQTT into
its writable state folder (`--release-dir /var/lib/edgecast-runtime/releases`), where
the model folder /opt/edgecast/model is read-only (issue 27, done-when 5)."""

import hashlib
import json
import queue
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from support.runtime import FIXTURES, expected_forecast, record
from support.unit_sandbox import commented_exec_start
from test_release_record import SEED, Signer, signed_seed_folder
from test_unit import assert_only_the_state_written, running_in_sandbox, sandbox_parts, stop_cleanly, watchdog_gaps

from edgecast_runtime.releases.delivery import files_topic, release_topic, split_file, status_topic

VERSION = 5


class Operator:
    """The test's MQTT client: readings in, answers and the hub's status out."""

    def __init__(self, paho, port: int, answers_topic: str, hub_id: str):
        from paho.mqtt.enums import CallbackAPIVersion

        self.answers, self.statuses = queue.Queue(), queue.Queue()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}")
        subscribed = threading.Event()
        self.client.on_subscribe = lambda c, u, mid, codes, p: subscribed.set()
        status = status_topic(hub_id)
        self.client.on_message = lambda c, u, message: (
            self.statuses if message.topic == status else self.answers).put(json.loads(message.payload))
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        self.client.subscribe([(answers_topic, 1), (status, 1)])
        assert subscribed.wait(10)

    def publish(self, topic: str, payload, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def status(self, check, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            try:
                seen.append(self.statuses.get(timeout=1))
            except queue.Empty:
                continue
            if check(seen[-1]):
                return seen[-1]
        raise AssertionError(f"no such status within {timeout} s: {seen[-3:]}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def readings(operator: Operator, topic: str, values, start: int) -> dict:
    for hour, value in enumerate(values):
        operator.publish(topic, json.dumps({"value": value, "timestamp": start + 3600 * hour}))
        answer = operator.answers.get(timeout=15)
    return answer


def test_mqtt_variant_installs_a_signed_release_under_the_units_sandbox(tmp_path, broker):
    paho = pytest.importorskip("paho.mqtt.client", reason="paho-mqtt (the [mqtt] extra) is missing")
    pytest.importorskip("cryptography", reason="cryptography (the [releases] extra) is missing")
    settings, opt, state, runtime = sandbox_parts(tmp_path)
    argv = commented_exec_start("mqtt")
    assert argv[argv.index("--release-dir") + 1].startswith("/var/lib/" + settings["StateDirectory"] + "/")
    signer = Signer()
    (opt / argv[argv.index("--trust") + 1].removeprefix("/opt/edgecast/")).write_bytes(signer.public_pem)
    argv[argv.index("--broker") + 1] = f"127.0.0.1:{broker.port}"
    hub_id = argv[argv.index("--hub-id") + 1]
    subscribe, publish = argv[argv.index("--subscribe") + 1], argv[argv.index("--publish") + 1]
    bundle = signed_seed_folder(tmp_path / "bundle", signer)
    operator = Operator(paho, broker.port, publish, hub_id)
    start = (int(time.time()) // 3600 - 20) * 3600
    try:
        with running_in_sandbox(tmp_path, settings, (opt, state, runtime), argv) as (service, listener, _):
            ready_at = listener.wait_for("READY=1")
            service.wait_event("mqtt_subscribed", timeout=20)
            answer = readings(operator, subscribe, [10.0, 20.0, 30.0, 40.0], start)
            assert answer["status"] == "forecast", answer
            assert answer["forecast"] == pytest.approx(expected_forecast([10, 20, 30, 40]))

            created = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=1)
            release = signer.record(bundle, version=VERSION, created=created)
            for path in sorted(bundle.iterdir()):
                data = path.read_bytes()
                for index, payload in split_file(VERSION, path.name, data, hashlib.sha256(data).hexdigest(), 65536):
                    operator.publish(files_topic(hub_id, path.name, index), payload, retain=True)
            operator.publish(release_topic(hub_id), release, retain=True)
            status = operator.status(lambda s: s.get("version") == VERSION or s.get("last_error"))
            assert status["version"] == VERSION and status["state"] == "running", status
            seed_sha = hashlib.sha256((SEED / "model.onnx").read_bytes()).hexdigest()
            assert status["sha256"] == seed_sha

            answer = readings(operator, subscribe, [50.0, 60.0, 70.0, 80.0], start + 4 * 3600)
            assert answer["model_sha256"] == seed_sha and answer["status"] == "forecast", answer
            pings, _ = watchdog_gaps(listener, ready_at)
            stop_cleanly(service, listener)
    finally:
        operator.close()
    written = assert_only_the_state_written(opt, state, runtime)
    installed = state / "releases" / f"v{VERSION}"
    assert sorted(path.name for path in installed.iterdir()) >= ["manifest.json", "model.onnx"], written
    assert (installed / "model.onnx").read_bytes() == (SEED / "model.onnx").read_bytes()
    assert (opt / "model" / "model.onnx").read_bytes() == (FIXTURES / "bundle" / "model.onnx").read_bytes()
    record("unit", mqtt_watchdog_pings=len(pings), mqtt_release_installed_in=str(installed.relative_to(state)))
