"""The release channel under attack (issue 26), against a real Mosquitto on loopback and a
real hub process (`edgecast-runtime mqtt --trust`). The attacker publishes on the hub's own
release topics (a compromised broker account, or the hub's own credentials within the
documented ACL `edgecast/hub/%u/#`). Each test mounts the attacks as the review found them:
memory (chunk floods with an absurd `count` or made-up versions, junk records, zero-byte
chunks: VmHWM under the unit's 256 MiB, also after a restart with the attack retained,
readings answered), wedging (an extra chunk, version 2^62, two releases back to back,
another version while a record is pending, a newer record: the next release installs
after each) and the self-test (a constant bomb refused in the trial's child, the refusal
kept on disk across a restart).

Before the fix (2 loaded cores): 90 -> 400 MB, 356 MB after a restart; the bomb 845 MB and
tried again after the restart; no reading answered within 120 s after 20,000 junk records;
5 of 7 wedges left the next release uninstalled. After: 143 MB, 135 MB, 89 MB, a reading
answered within seconds, every release installed (tests/README.md has the figures).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import shutil
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
from support.runtime import FIXTURES, ONE, UNIT_MEMORY_CAP_MB, Background, peak_rss_mb, record
from test_release_record import Signer, signed_seed_folder

paho = pytest.importorskip("paho.mqtt.client", reason="paho-mqtt (the [mqtt] extra) is missing")
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from edgecast_runtime.releases.delivery import files_topic, release_topic, split_file, status_topic  # noqa: E402

HUB = "hub-1"
READINGS, ANSWERS = f"edgecast/readings/{HUB}", f"edgecast/hub/{HUB}/forecasts"
CHUNK = 1024  # the smallest chunk `edgecast release --chunk-bytes` sends: the most chunks per file
MiB = 1 << 20
WAIT = 60.0
JUNK_RECORDS = 20_000
EMPTY = hashlib.sha256(b"").hexdigest()


def now():
    return datetime.now(timezone.utc).replace(microsecond=0)


class Client:
    """A paho client on the hub's topics: publishes chunks and records (retained, QoS 1, as
    `edgecast release` does), follows the hub's status and sends it readings."""

    def __init__(self, port, username=None, password=None, ca_file=None):
        self.statuses = queue.Queue()
        self.answers = queue.Queue()
        self.latest = {}
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}",
                                  protocol=paho.MQTTv5)
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        if username:
            self.client.username_pw_set(username, password)
        if ca_file:
            self.client.tls_set(ca_certs=str(ca_file))
        subscribed = queue.Queue()
        self.client.on_subscribe = lambda *args: subscribed.put(True)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        self.client.subscribe([(status_topic(HUB), 1), (ANSWERS, 1)])
        subscribed.get(timeout=10)

    def _on_message(self, client, userdata, message):
        payload = json.loads(message.payload)
        if message.topic == ANSWERS:
            self.answers.put(payload)
        else:
            self.latest = payload
            self.statuses.put(payload)

    def publish(self, topic, payload, retain=True, qos=1):
        return self.client.publish(topic, payload, qos=qos, retain=retain)

    def publish_all(self, messages, retain=True, qos=1):
        infos = [self.publish(topic, payload, retain, qos) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(WAIT)

    def files(self, folder, version, names=None, chunk_bytes=CHUNK):
        """The chunks of a bundle's files, as (topic, payload)."""
        messages = []
        for path in sorted(Path(folder).iterdir()):
            if names is None or path.name in names:
                data = path.read_bytes()
                sha = hashlib.sha256(data).hexdigest()
                for index, payload in split_file(version, path.name, data, sha, chunk_bytes):
                    messages.append((files_topic(HUB, path.name, index), payload))
        return messages

    def release(self, folder, record_bytes, version):
        self.publish_all([*self.files(folder, version), (release_topic(HUB), record_bytes)])

    def wait_status(self, check, what, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.latest and check(self.latest):
                return self.latest
            with contextlib.suppress(queue.Empty):
                self.statuses.get(timeout=0.2)
        raise AssertionError(f"no status with {what} within {timeout} s; latest: {self.latest}")

    def installed(self, version, timeout=WAIT):
        return self.wait_status(lambda s: (s.get("version"), s.get("state")) == (version, "running"),
                                f"version {version} running", timeout)

    def ask(self, value=50.0, timeout=20.0):
        """A reading; the hub's answer (it answers readings throughout)."""
        while not self.answers.empty():
            self.answers.get_nowait()
        self.publish(READINGS, json.dumps({"values": [value]}), retain=False)
        answer = self.answers.get(timeout=timeout)
        assert answer.get("status") in ("filling", "forecast"), answer
        return answer

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def chunk(version, name, index, count, size, sha256, data):
    header = {"version": version, "file": name, "index": index, "count": count, "size": size, "sha256": sha256}
    return files_topic(HUB, name, index), json.dumps(header).encode() + b"\n" + data


class HubProcess:
    """`edgecast-runtime mqtt --trust` for hub-1, restartable on the same folder, serving
    `model` until a release replaces it; `options` are passed on (test_shadow uses it)."""

    def __init__(self, folder, port, public_pem, security=(), model=ONE, options=()):
        self.folder, self.port, self.options = folder, port, [*security, *options]
        folder.mkdir(exist_ok=True)
        (folder / "public.pem").write_bytes(public_pem)
        if not (folder / "model.onnx").exists():
            shutil.copy(model, folder / "model.onnx")
        self.process = None

    def start(self):
        self.process = Background(
            "mqtt", self.folder / "model.onnx", "--broker", f"127.0.0.1:{self.port}", "--subscribe", READINGS,
            "--publish", ANSWERS, "--state", self.folder / "state.json", "--client-id", HUB,
            "--trust", self.folder / "public.pem", "--hub-id", HUB, "--poll-interval", "0",
            "--reconnect-max", "1", *self.options)
        self.process.wait_event("mqtt_subscribed", timeout=30)
        return self

    @property
    def pid(self):
        return self.process.proc.pid

    def peak(self):
        return peak_rss_mb(self.pid)

    def restart(self):
        assert self.process.stop() == 0
        return self.start()

    def stop(self):
        if self.process is not None:
            self.process.kill()


@pytest.fixture(scope="module")
def operator():
    return Signer()


@pytest.fixture
def bundle(tmp_path, operator):
    return signed_seed_folder(tmp_path / "bundle", operator)


@pytest.fixture
def hub(tmp_path, broker, operator):
    hub = HubProcess(tmp_path / "hub", broker.port, operator.public_pem)
    try:
        yield hub.start()
    finally:
        hub.stop()


@pytest.fixture
def client(broker):
    client = Client(broker.port)
    yield client
    client.close()


def cpu_seconds(pid):  # user and system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def size_and_sha(path):
    data = Path(path).read_bytes()
    return len(data), hashlib.sha256(data).hexdigest()


# --- memory --------------------------------------------------------------------------------


def test_release_memory_stays_bounded_through_attacks_and_a_restart(tmp_path, secure_broker, operator, bundle):
    """Within the ACL, with a broker account over TLS: 300 x 1 MiB chunks of a pending
    release's version with count 10^9, 1 MiB chunks of made-up versions with consistent
    headers (on the release topics and on the shadow's), all retained; then a restart with
    all of it still on the broker."""
    broker = secure_broker
    security = ["--username", HUB, "--password-file", broker.password_file(HUB), "--ca-file", broker.ca_file]
    hub = HubProcess(tmp_path / "hub", broker.port, operator.public_pem, security).start()
    operator_client = Client(broker.port, "operator", broker.passwords["operator"], broker.ca_file)
    # A second account that may write the hub's topics: with client ids bound to user names
    # (tests/support/broker.py), the hub's own account would replace the running hub's connection.
    attacker = Client(broker.operator_port, "operator", broker.passwords["operator"], broker.ca_file)
    try:
        operator_client.ask()
        baseline = hub.peak()
        pending = operator.record(bundle, version=1, created=now())
        operator_client.publish_all([(release_topic(HUB), pending)])  # its files withheld: pending
        operator_client.wait_status(lambda s: s.get("state") == "receiving", "receiving")
        size, sha = size_and_sha(bundle / "model.onnx")
        blob = b"\xa5" * MiB
        started = time.monotonic()
        for start in range(0, 300, 50):  # the review's attack: new indices, count 10^9
            attacker.publish_all([chunk(1, "model.onnx", index, 10**9, size, sha, blob)
                                  for index in range(start, start + 50)])
        for version in range(2, 5):  # consistent headers: 40 MiB files of other versions
            attacker.publish_all([chunk(version, "model.onnx", index, 40, 40 * MiB, "ab" * 32, blob)
                                  for index in range(40)])
        for version in range(1, 4):  # and the shadow's receiver, flooded the same way (its own budget)
            attacker.publish_all([(files_topic(HUB, "model.onnx", index, role="shadow"),
                                   chunk(version, "model.onnx", index, 20, 20 * MiB, "cd" * 32, blob)[1])
                                  for index in range(20)])
        attacker.ask()
        flood_seconds = round(time.monotonic() - started, 1)
        peak = hub.peak()
        hub.restart()  # everything above is still retained on the broker
        operator_client.wait_status(lambda s: s.get("state") == "receiving", "receiving after the restart")
        time.sleep(3)  # the retained flood arrives
        operator_client.ask()
        after_restart = hub.peak()
        record("hostile_releases", memory_baseline_mb=round(baseline, 1), memory_peak_300x1mib_mb=round(peak, 1),
               memory_peak_after_restart_mb=round(after_restart, 1), flood_mb=300 + 120 + 60,
               flood_seconds=flood_seconds)
        assert peak < UNIT_MEMORY_CAP_MB and after_restart < UNIT_MEMORY_CAP_MB, (peak, after_restart)
        operator_client.release(bundle, pending, 1)  # the files come: the pending release installs
        operator_client.installed(1)
        operator_client.ask()
        assert hub.peak() < UNIT_MEMORY_CAP_MB
    finally:
        for one in (operator_client, attacker):
            one.close()
        hub.stop()


def test_junk_records_and_zero_byte_chunks_cost_bounded_memory_and_time(hub, client, operator, bundle):
    client.ask()
    baseline = hub.peak()
    started = time.monotonic()
    for start in range(0, JUNK_RECORDS, 5_000):  # junk records of ~12 bytes, each one new
        client.publish_all([(release_topic(HUB), b"junk %07d" % n) for n in range(start, start + 5_000)],
                           retain=False, qos=0)
    sent = time.monotonic()
    client.ask(timeout=120)  # a reading behind the junk records (and, before, their status messages)
    answer_seconds = round(time.monotonic() - sent, 2)
    junk_seconds = time.monotonic() - started
    time.sleep(1)
    statuses_seen = client.statuses.qsize()
    junk_peak = hub.peak()
    # zero-byte chunks before any record: new indices of a file of "size 0" (the review's),
    # and as many empty files of their own, each a new layout
    started, cpu = time.monotonic(), cpu_seconds(hub.pid)
    for start in range(0, 10_000, 5_000):
        client.publish_all([chunk(2, "model.onnx", n, 10**9, 0, EMPTY, b"") for n in range(start, start + 5_000)],
                           retain=False, qos=0)
        client.publish_all([chunk(2, f"empty-{n}", 0, 1, 0, EMPTY, b"") for n in range(start, start + 5_000)],
                           retain=False, qos=0)
    client.release(bundle, operator.record(bundle, version=2, created=now()), 2)
    client.installed(2)  # behind the 20,000 chunks: how long the worker took for them
    zero_seconds = round(time.monotonic() - started, 2)
    zero_cpu = round(cpu_seconds(hub.pid) - cpu, 2)
    client.ask()
    peak = hub.peak()
    record("hostile_releases", junk_records=JUNK_RECORDS, junk_seconds=round(junk_seconds, 1),
           junk_status_messages=statuses_seen, reading_answered_after_junk_seconds=answer_seconds, memory_growth_junk_records_mb=round(junk_peak - baseline, 1),
           zero_byte_chunks=20_000, zero_byte_chunks_then_install_seconds=zero_seconds,
           zero_byte_chunks_then_install_hub_cpu_seconds=zero_cpu,
           memory_peak_junk_and_zero_mb=round(peak, 1))
    assert junk_peak - baseline < 32, (baseline, junk_peak)
    assert answer_seconds < 15, answer_seconds
    assert statuses_seen < 100, statuses_seen  # refusals' status messages are rate-limited
    assert peak < UNIT_MEMORY_CAP_MB
    assert zero_cpu < 6, zero_cpu  # O(1) a chunk: before, each one summed all those buffered (8.7 s)


# --- wedging -------------------------------------------------------------------------------


def test_no_single_message_wedges_the_release_channel(hub, client, operator, bundle, tmp_path):
    size, sha = size_and_sha(bundle / "model.onnx")
    installed = {}

    def release(version, before=(), files=True):
        record_bytes = operator.record(bundle, version=version, created=now())
        client.publish_all([*before, *(client.files(bundle, version) if files else []),
                            (release_topic(HUB), record_bytes)])
        return record_bytes

    def expect(version, what):
        """Whether `version` installs within 15 s; the hub answers a reading either way."""
        started = time.monotonic()
        try:
            client.installed(version, timeout=15)
            installed[what] = round(time.monotonic() - started, 2)
        except AssertionError:
            installed[what] = None
        client.ask()

    # 1. One extra chunk of the right version and size, index 7 of 8, and one with a
    #    consistent layout of its own (another chunk size), both before the files.
    release(1, before=[chunk(1, "model.onnx", 7, 8, size, sha, b"x" * 100),
                       chunk(1, "model.onnx", 2, 3, size, sha, b"y" * (size - 2 * 1100))])
    expect(1, "extra chunk")
    # 2. A retained chunk claiming version 2^62: the next release's chunks still count.
    client.publish_all([chunk(2**62, "model.onnx", 0, 3, size, sha, b"z" * CHUNK)])
    release(2)
    expect(2, "version 2^62")
    # 3. Two releases back to back: both files, then both records.
    records = [operator.record(bundle, version=v, created=now()) for v in (3, 4)]
    client.publish_all([*client.files(bundle, 3), *client.files(bundle, 4),
                        (release_topic(HUB), records[0]), (release_topic(HUB), records[1])])
    expect(4, "back to back")
    # 4. Chunks of another version while a record is pending: a record 5 without its
    #    files, then release 6's files, then 5's files (5 installs), then record 6.
    five = operator.record(bundle, version=5, created=now())
    client.publish_all([(release_topic(HUB), five)])
    time.sleep(0.5)  # 5 pending
    six = operator.record(bundle, version=6, created=now())
    client.publish_all(client.files(bundle, 6))
    client.publish_all([*client.files(bundle, 5), (release_topic(HUB), five)])
    expect(5, "other version while pending")
    client.publish_all([(release_topic(HUB), six)])
    expect(6, "kept while another was pending")
    # 5. A newer valid record supersedes a pending one whose files never come.
    release(7, files=False)
    time.sleep(0.5)  # 7 pending
    release(8)
    expect(8, "newer record supersedes")
    # 6. A restart with every attack above still retained: the hub serves 8 and installs 9.
    hub.restart()
    client.ask()
    release(9)
    expect(9, "after a restart with the attacks retained")
    record("hostile_releases", wedges_then_install_seconds=installed)
    assert None not in installed.values(), installed
    assert hub.peak() < UNIT_MEMORY_CAP_MB


# --- the self-test -------------------------------------------------------------------------


def bomb_bundle(folder, operator):
    """A signed bundle of a model that constant-folds into 400 MB at load."""
    folder.mkdir()
    shutil.copy(FIXTURES / "hostile" / "constant_bomb.onnx", folder / "model.onnx")
    model_sha = hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps({"schema_version": 1, "model_name": "bomb", "artifacts": {
        "model.onnx": {"kind": "onnx", "sha256": model_sha}}}))
    operator.sign_folder(folder, ["manifest.json", "model.onnx"])
    return folder


def test_the_self_test_runs_in_the_trial_child_and_its_refusal_is_kept(hub, client, operator, bundle, tmp_path):
    client.ask()
    bomb = bomb_bundle(tmp_path / "bomb", operator)
    bomb_record = operator.record(bomb, version=3, created=now(), expected=[[70.75 + 1]] * 4)
    client.release(bomb, bomb_record, 3)
    refused = client.wait_status(lambda s: (s.get("last_error") or {}).get("version") == 3, "a refusal")
    client.ask()
    peak = hub.peak()
    record("hostile_releases", memory_peak_constant_bomb_mb=round(peak, 1))
    assert refused["last_error"]["reason"] == "self-test" and refused["version"] is None, refused
    hub.restart()  # the record is still retained: the trial must not run again
    client.ask()
    time.sleep(1)
    trials = [e for e in hub.process.events if e.get("event") in ("release_installing", "release_refused")]
    remembered = hub.process.wait_event("release_refused_before")
    after_restart = hub.peak()
    record("hostile_releases", memory_peak_bomb_after_restart_mb=round(after_restart, 1))
    assert peak < UNIT_MEMORY_CAP_MB and after_restart < UNIT_MEMORY_CAP_MB, (peak, after_restart)
    assert remembered["version"] == 3 and not trials, trials
    assert (hub.folder / "releases" / "refused.json").exists()
    client.release(bundle, operator.record(bundle, version=4, created=now()), 4)
    client.installed(4)
    client.ask()
