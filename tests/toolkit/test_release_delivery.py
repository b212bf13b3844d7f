"""Signed releases over MQTT, end to end: Mosquitto on loopback with passwords, an ACL
and TLS (tests/support/broker.py), three hub processes (`edgecast-runtime mqtt
--trust`, the runtime installed in .venv) that answer readings all along, `edgecast
release` and `edgecast fleet status`.

The hubs start on the v1 fixture model (forecast = mean of the window + 1) and are
released the v2 one (the same + 1000), so every answer says which model gave it."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, run_cli
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from support.broker import secure_broker  # noqa: E402,F401  (the fixture)

from edgecast.release.broker import BrokerSettings, OperatorSession
from edgecast.release.errors import ReleaseDeliveryError, SigningError
from edgecast.release.record import make_release
from edgecast.release.rollout import (
    HubRelease,
    canary_count,
    deliver,
    find_bundles,
    parse_canary,
    parse_duration,
    prepare,
    roll_out,
)
from edgecast.release.signing import load_private_key, new_keys, sign_bundle
from edgecast_runtime.manifest import file_sha256
from edgecast_runtime.releases.record import assemble_record, canonical_json
from edgecast_runtime.releases.signature import key_id

FIXTURES = REPO_ROOT / "tests" / "runtime" / "fixtures"
V1, V2 = FIXTURES / "one_feature.onnx", FIXTURES / "one_feature_v2.onnx"  # look_back 4, one feature
HUBS = ("hub-1", "hub-2", "hub-3")
RUNTIME = Path(sys.executable).parent / "edgecast-runtime"
WAIT = 60.0
WINDOWS = np.array([[[10.0], [12.0], [14.0], [16.0]], [[50.0], [40.0], [30.0], [20.0]]], dtype=np.float32)


def make_bundle(folder: Path, model: Path, key: Path) -> Path:
    """A signed bundle of a fixture model: model.onnx, manifest.json, windows.npz, model.sig."""
    folder.mkdir(parents=True)
    shutil.copy(model, folder / "model.onnx")
    manifest = {"schema_version": 1, "model_name": "one-feature",
                "artifacts": {"model.onnx": {"kind": "onnx", "sha256": file_sha256(folder / "model.onnx"),
                                             "bytes": (folder / "model.onnx").stat().st_size}}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    np.savez(folder / "windows.npz", test_x=WINDOWS)
    sign_bundle(folder, key)
    return folder


class Hub:
    """An `edgecast-runtime mqtt --trust` process, stopped in `stop`."""

    def __init__(self, name: str, folder: Path, broker, public_key: Path):
        self.name, self.folder = name, folder
        folder.mkdir(parents=True)
        shutil.copy(V1, folder / "model.onnx")
        self.log = open(folder / "hub.log", "wb")
        command = [str(RUNTIME), "mqtt", str(folder / "model.onnx"), "--broker", f"127.0.0.1:{broker.port}",
                   "--subscribe", f"edgecast/readings/{name}", "--publish", f"edgecast/hub/{name}/forecasts",
                   "--username", name, "--password-file", str(broker.password_file(name)),
                   "--ca-file", str(broker.ca_file), "--trust", str(public_key), "--poll-interval", "0",
                   "--state", str(folder / "state.json")]
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(15)
        self.log.close()

    def events(self) -> list[dict]:
        lines = (self.folder / "hub.log").read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


class Readings:
    """The operator's side of the hubs' predictions: a reading to each hub every 20 ms,
    every answer counted by model (v1 or v2) and every error kept."""

    def __init__(self, session: OperatorSession):
        self.session = session
        self.answers = {hub: {"v1": 0, "v2": 0, "filling": 0} for hub in HUBS}
        self.errors: list = []
        self.last: dict = {}
        self.stopped = threading.Event()
        session.client.message_callback_add("edgecast/hub/+/forecasts", self._on_answer)
        session.client.subscribe("edgecast/hub/+/forecasts", qos=1)
        self.thread = threading.Thread(target=self._send, daemon=True)
        self.thread.start()

    def _send(self) -> None:
        step = 0
        while not self.stopped.wait(0.02):
            step += 1
            for hub in HUBS:
                self.session.client.publish(f"edgecast/readings/{hub}", json.dumps({"values": [10.0 + step % 7]}), qos=1)

    def _on_answer(self, client, userdata, message) -> None:
        hub = message.topic.split("/")[2]
        answer = json.loads(message.payload)
        if answer.get("status") == "forecast":
            model = "v2" if answer["forecast"][0] > 500 else "v1"
            self.answers[hub][model] += 1
            self.last[hub] = model
        elif answer.get("status") == "filling":
            self.answers[hub]["filling"] += 1
        else:
            self.errors.append((hub, answer))

    def latest_model(self, hub: str) -> str:
        """The model of an answer given after this call."""
        def forecasts() -> int:
            return self.answers[hub]["v1"] + self.answers[hub]["v2"]

        before = forecasts()
        deadline = time.monotonic() + WAIT
        while forecasts() < before + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert forecasts() >= before + 2, (self.answers, self.errors[:3])
        return self.last[hub]

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(5)


def wait_for(session: OperatorSession, check, what: str) -> dict:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        statuses = dict(session.statuses)
        if check(statuses):
            return statuses
        session.wait_for_change(0.5)
    raise AssertionError(f"timed out waiting for {what}; statuses: {json.dumps(session.statuses, indent=1)}")


def broker_options(broker) -> list[str]:
    return ["--broker", f"127.0.0.1:{broker.operator_port}", "--username", "operator",
            "--password-file", str(broker.password_file("operator")), "--ca-file", str(broker.ca_file)]


@pytest.fixture
def fleet(secure_broker, tmp_path):  # noqa: F811  (the imported fixture)
    """Keys, a fleet of three signed v2 bundles (models/FLEET/hub-N), three running hubs on
    v1, and the operator's session that follows their status."""
    keys = new_keys(tmp_path / "keys")
    fleet_dir = tmp_path / "models" / "fleet"
    for hub in HUBS:
        make_bundle(fleet_dir / hub, V2, keys.private)
    hubs = [Hub(hub, tmp_path / "hubs" / hub, secure_broker, keys.public) for hub in HUBS]
    settings = BrokerSettings(f"127.0.0.1:{secure_broker.operator_port}", "operator",
                              str(secure_broker.password_file("operator")), ca_file=str(secure_broker.ca_file))
    try:
        with OperatorSession(settings, client_id="test-operator") as session:
            wait_for(session, lambda s: all(s.get(h, {}).get("state") == "running" for h in HUBS), "three hubs")
            yield {"broker": secure_broker, "keys": keys, "dir": fleet_dir, "hubs": hubs, "session": session,
                   "settings": settings, "tmp": tmp_path}
    finally:
        for hub in hubs:
            hub.stop()


def refused(session, hub: str, record: bytes, reason: str) -> dict:
    digest = hashlib.sha256(record).hexdigest()
    statuses = wait_for(session, lambda s: (s.get(hub, {}).get("last_error") or {}).get("record_sha256") == digest,
                        f"{hub} to refuse a record ({reason})")
    error = statuses[hub]["last_error"]
    assert error["reason"] == reason, error
    assert statuses[hub]["version"] == 2 and statuses[hub]["state"] in ("running", "receiving"), statuses[hub]
    return error


def resigned(record: bytes, key_path: Path, **changes) -> bytes:
    """The record with `changes` to its signed part, signed again by the key at `key_path`."""
    key = load_private_key(key_path)
    signed = {**json.loads(record)["signed"], **changes}
    return assemble_record(signed, key_id(key.public_key()), key.sign(canonical_json(signed), ec.ECDSA(hashes.SHA256())))


def test_release_reaches_every_hub_and_bad_releases_are_refused(fleet):
    session, broker, keys = fleet["session"], fleet["broker"], fleet["keys"]
    readings = Readings(session)
    try:
        assert all(readings.latest_model(hub) == "v1" for hub in HUBS)
        result = run_cli("release", fleet["dir"], "--version", "2", "--key", keys.private, "--canary", "1",
                         "--healthy-seconds", "1", "--hub-timeout", "60", *broker_options(broker), timeout=180)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "3 hub(s) running it" in result.stdout, result.stdout
        statuses = wait_for(session, lambda s: all(s[h].get("version") == 2 for h in HUBS), "version 2 everywhere")
        v2_sha = file_sha256(fleet["dir"] / "hub-1" / "model.onnx")
        assert all(statuses[h]["sha256"] == v2_sha and statuses[h]["last_error"] is None for h in HUBS)
        assert all(readings.latest_model(hub) == "v2" for hub in HUBS)
        switched = {hub: dict(counts) for hub, counts in readings.answers.items()}

        # Each bad release to hub-1 is refused with a reason; v2 keeps serving.
        v3_bundle = make_bundle(fleet["tmp"] / "v3" / "hub-1", V1, keys.private)  # a revert: a higher version
        good_v3 = make_release(v3_bundle, keys.private, 3, healthy_seconds=0)
        tampered_dir = fleet["tmp"] / "tampered" / "hub-1"
        shutil.copytree(v3_bundle, tampered_dir)
        data = bytearray((tampered_dir / "model.onnx").read_bytes())
        data[200] ^= 0x01
        (tampered_dir / "model.onnx").write_bytes(bytes(data))
        deliver(session, HubRelease("hub-1", tampered_dir, good_v3, 3))
        # Damaged on the way (or an attacker's chunks): no refusal, v3 waits for the file again.
        damaged = wait_for(session, lambda s: (s["hub-1"].get("damaged") or {}).get("file") == "model.onnx",
                           "hub-1 to drop a damaged model.onnx")["hub-1"]
        assert damaged["state"] == "receiving" and damaged["pending_version"] == 3 and damaged["version"] == 2

        unsigned = json.dumps({"signed": json.loads(good_v3)["signed"], "signatures": []}).encode()
        other_keys = new_keys(fleet["tmp"] / "other-keys")
        other_key = resigned(good_v3, other_keys.private, version=4)
        lower = make_release(fleet["dir"] / "hub-1", keys.private, 1)
        past = datetime.now(timezone.utc) - timedelta(days=40)
        expired = make_release(v3_bundle, keys.private, 5, expires_in=timedelta(days=30), now=past)
        for record, reason in ((unsigned, "malformed"), (other_key, "wrong-key"), (lower, "rollback"),
                               (expired, "expired")):
            session.publish("edgecast/hub/hub-1/release", record)
            refused(session, "hub-1", record, reason)
            assert readings.latest_model("hub-1") == "v2"

        # The same release, delivered intact, installs: refusals leave nothing behind.
        deliver(session, HubRelease("hub-1", v3_bundle, good_v3, 3))
        wait_for(session, lambda s: s["hub-1"].get("version") == 3 and s["hub-1"]["last_error"] is None, "v3")
        assert readings.latest_model("hub-1") == "v1"
    finally:
        readings.stop()
    assert readings.errors == [], readings.errors[:5]  # 0 failed predictions, through every switch
    assert all(switched[hub]["v1"] > 0 and switched[hub]["v2"] > 0 for hub in HUBS), switched
    status = run_cli("fleet", "status", *broker_options(broker), "--wait", "1")
    assert status.returncode == 0, status.stderr
    for hub in HUBS:
        assert hub in status.stdout
    installed = [e for e in fleet["hubs"][1].events() if e.get("event") == "release_installed"]
    assert [e["version"] for e in installed] == [2]
    fleet["hubs"][2].process.kill()  # hub-3 drops off: the broker publishes its last will
    statuses = wait_for(session, lambda s: s["hub-3"]["state"] == "offline", "hub-3's last will")
    assert statuses["hub-3"]["version"] == 2


def test_failing_canary_stops_the_rollout(fleet):
    """hub-1, the canary, gets a release whose recorded self-test its model cannot pass
    (expected forecasts 5 off, signed by the operator): it refuses it, the rollout stops,
    hub-2 and hub-3 are never sent it, and `edgecast fleet status` says why."""
    session, keys = fleet["session"], fleet["keys"]
    releases = prepare(find_bundles([fleet["dir"]]), keys.private, 2, healthy_seconds=1.0)
    assert [r.hub for r in releases] == list(HUBS)
    signed = json.loads(releases[0].record)["signed"]
    wrong = [[value + 5.0 for value in row] for row in signed["self_test"]["expected"]]
    bad = resigned(releases[0].record, keys.private, self_test={**signed["self_test"], "expected": wrong})
    releases[0] = HubRelease("hub-1", releases[0].bundle, bad, 2)
    with pytest.raises(ReleaseDeliveryError) as stopped:
        roll_out(fleet["settings"], releases, canaries=1, healthy_seconds=1.0, max_failures=1, hub_timeout=60)
    assert "stopped" in str(stopped.value) and "self-test" in str(stopped.value)
    assert "hub-2, hub-3" in str(stopped.value)
    statuses = wait_for(session, lambda s: s["hub-1"].get("last_error") is not None, "hub-1's refusal")
    assert statuses["hub-1"]["version"] is None and statuses["hub-1"]["last_error"]["reason"] == "self-test"
    time.sleep(1.0)
    for hub in ("hub-2", "hub-3"):
        assert session.statuses[hub]["version"] is None and session.statuses[hub]["last_error"] is None
        assert not (fleet["tmp"] / "hubs" / hub / "releases" / "current.json").exists()
    status = run_cli("fleet", "status", *broker_options(fleet["broker"]), "--wait", "1")
    assert status.returncode == 0, status.stderr
    line = next(line for line in status.stdout.splitlines() if "hub-1" in line)
    assert "self-test" in line and "running" in line, status.stdout


def test_broker_commands_refuse_bad_credentials_with_one_line(secure_broker, tmp_path):  # noqa: F811
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not-the-password\n")
    address = f"127.0.0.1:{secure_broker.port}"
    cases = [(["--username", "operator", "--password-file", wrong, "--ca-file", secure_broker.ca_file], "refused"),
             (["--username", "operator", "--password-file", secure_broker.password_file("operator"), "--tls"],
              "certificate verify failed"),
             (["--password-file", secure_broker.password_file("operator"), "--ca-file", secure_broker.ca_file],
              "without a user name")]
    for options, fragment in cases:
        result = run_cli("fleet", "status", "--broker", address, *options, "--wait", "0.5")
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert lines[0].startswith("edgecast: error: ") and fragment in lines[0], lines[0]


def test_canary_and_duration_options():
    assert parse_canary("2") == (2, None) and parse_canary("25%") == (None, 25.0)
    assert canary_count(10, None, 25.0) == 3 and canary_count(3, 5, None) == 3 and canary_count(3, 0, None) == 0
    assert parse_duration("30d") == timedelta(days=30) and parse_duration("90m") == timedelta(minutes=90)
    for text in ("0%", "101%", "-1", "x"):
        with pytest.raises(SigningError):
            parse_canary(text)
    with pytest.raises(SigningError):
        parse_duration("30 days")


def test_canary_that_never_answers_stops_the_rollout_from_the_command_line(secure_broker, tmp_path):  # noqa: F811
    keys = new_keys(tmp_path / "keys")
    for hub in ("hub-2", "hub-3"):
        make_bundle(tmp_path / "fleet" / hub, V2, keys.private)
    result = run_cli("release", tmp_path / "fleet", "--version", "4", "--key", keys.private, "--canary", "50%",
                     "--healthy-seconds", "0", "--hub-timeout", "2", *broker_options(secure_broker), timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stdout + result.stderr
    assert "stopped" in lines[0] and "hub-2 no answer" in lines[0] and "(hub-3)" in lines[0], lines[0]
    settings = BrokerSettings(f"127.0.0.1:{secure_broker.operator_port}", "operator",
                              str(secure_broker.password_file("operator")), ca_file=str(secure_broker.ca_file))
    retained = {}
    with OperatorSession(settings, client_id="test-retained") as session:
        session.client.message_callback_add("edgecast/hub/+/release", lambda c, u, m: retained.update({m.topic: 1}))
        session.client.subscribe("edgecast/hub/+/release", qos=1)
        time.sleep(1.0)
    assert list(retained) == ["edgecast/hub/hub-2/release"]  # hub-3 was never sent it


def test_shadow_release_runs_beside_the_champion_and_never_answers(fleet):
    """`edgecast release --shadow`: every hub runs v2 beside v1 and scores both, while every
    answer stays v1's; a bundle that reads other inputs is refused by the canary and the
    rollout stops; v2 released as the champion then empties each slot ("promoted")."""
    session, broker, keys = fleet["session"], fleet["broker"], fleet["keys"]
    readings = Readings(session)
    v2_sha = file_sha256(fleet["dir"] / "hub-1" / "model.onnx")
    try:
        assert all(readings.latest_model(hub) == "v1" for hub in HUBS)
        dry = run_cli("release", fleet["dir"], "--shadow", "--version", "1", "--key", keys.private,
                      "--dry-run", *broker_options(broker))
        assert dry.returncode == 0 and "dry run: release 1 would go to 3 hub(s), 1 canary first" in dry.stdout
        assert "now runs version None (model.onnx none), state none" in dry.stdout, dry.stdout
        result = run_cli("release", fleet["dir"], "--shadow", "--version", "1", "--key", keys.private, "--canary",
                         "hub-2", "--healthy-seconds", "1", "--hub-timeout", "60", *broker_options(broker), timeout=180)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "shadow release 1: 3 hub(s) running it in shadow" in result.stdout, result.stdout
        statuses = wait_for(session, lambda s: all(s[h]["shadow"].get("state") == "running" for h in HUBS),
                            "the shadow running everywhere")
        assert all(statuses[h]["shadow"]["sha256"] == v2_sha and statuses[h]["version"] is None for h in HUBS)
        for _ in range(5):
            assert all(readings.latest_model(hub) == "v1" for hub in HUBS)
        assert all(counts["v2"] == 0 for counts in readings.answers.values()), readings.answers
        status = run_cli("fleet", "status", *broker_options(broker), "--wait", "1")
        assert f"running v1 {v2_sha[:12]}" in status.stdout, status.stdout

        longer = make_bundle(fleet["tmp"] / "ar24" / "hub-1", FIXTURES / "skill" / "ar24.onnx", keys.private)
        np.savez(longer / "windows.npz", test_x=np.full((2, 24, 1), 50.0, dtype=np.float32))  # its own shape
        sign_bundle(longer, keys.private)
        other = run_cli("release", longer, "--shadow", "--version", "2", "--key", keys.private, "--canary", "1",
                        "--healthy-seconds", "1", "--hub-timeout", "60", *broker_options(broker), timeout=180)
        assert other.returncode != 0 and "it forecasts 6 steps, the champion 1" in other.stdout + other.stderr
        assert session.statuses["hub-1"]["shadow"]["sha256"] == v2_sha  # the running shadow goes on

        promoted = run_cli("release", fleet["dir"], "--version", "1", "--key", keys.private, "--canary", "1",
                           "--healthy-seconds", "1", "--hub-timeout", "60", *broker_options(broker), timeout=180)
        assert promoted.returncode == 0, promoted.stdout + promoted.stderr
        statuses = wait_for(session, lambda s: all(s[h]["shadow"].get("state") == "promoted" for h in HUBS),
                            "the shadow promoted everywhere")
        assert all(statuses[h]["sha256"] == v2_sha and statuses[h]["version"] == 1 for h in HUBS)
        assert all(readings.latest_model(hub) == "v2" for hub in HUBS)
    finally:
        readings.stop()
    assert readings.errors == [], readings.errors[:5]
