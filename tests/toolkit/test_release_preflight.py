"""`edgecast release` and `edgecast fleet status` through the command line against
Mosquitto (TLS, passwords, the ACL) and real `edgecast-runtime mqtt --trust` hubs
(issues 26 and 27):

- a reused version number with other files is refused before anything is sent (the
  hubs' statuses and the broker's retained records compared), and a hub refuses such
  a record itself, the reason and version in its status; health is judged by the
  sha256 the hub reports, not the version alone;
- `--dry-run` says what would be sent to whom and sends nothing; canaries by name;
  offline hubs skipped with a notice;
- a TLS port reached without TLS, or a port that does not speak MQTT, is said in one
  clear line within seconds (before: "no answer" after 15 s);
- what a hub reports reaches the terminal without control characters or markup;
- under --trust an unsigned model written into the release folder is never served,
  and a running release past its expiry is said in the status and `fleet status`."""
from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import threading
import time

import pytest
from conftest import run_cli
from support.broker import secure_broker  # noqa: F401  (the fixture)
from support.runtime import manifest_for
from test_release_delivery import (  # noqa: F401  (fleet: the fixture)
    HUBS,
    RUNTIME,
    V1,
    V2,
    Readings,
    broker_options,
    fleet,
    make_bundle,
    wait_for,
)

from edgecast.release.broker import BrokerSettings, OperatorSession
from edgecast.release.errors import SigningError
from edgecast.release.record import make_release
from edgecast.release.rollout import HubRelease, deliver, parse_canaries
from edgecast.release.signing import new_keys
from edgecast_runtime.manifest import file_sha256

V1_SHA, V2_SHA = file_sha256(V1), file_sha256(V2)


def retained_records(session: OperatorSession) -> dict[str, str]:
    """hub -> sha256 of the release record the broker retains for it, read afresh."""
    session.sync()
    return {hub: hashlib.sha256(record).hexdigest() for hub, record in session.records.items()}


def release(fleet_dir, version, keys, broker, *options):
    return run_cli("release", fleet_dir, "--version", str(version), "--key", keys.private, "--hub-timeout", "60",
                   "--healthy-seconds", "0.5", *options, *broker_options(broker), timeout=240)


def one_line(result, *fragments) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stdout + result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_reused_version_dry_run_named_canary_and_offline_hubs(fleet):  # noqa: F811  (the imported fixture)
    session, broker, keys, tmp = fleet["session"], fleet["broker"], fleet["keys"], fleet["tmp"]
    result = release(fleet["dir"], 2, keys, broker, "--canary", "hub-2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "to 1 canary hub(s): hub-2;" in result.stdout and "3 hub(s) running it" in result.stdout, result.stdout
    for hub in HUBS:
        make_bundle(tmp / "hubs2" / hub, V1, keys.private)  # other files
    before = retained_records(session)
    assert set(before) == set(HUBS)

    dry = release(tmp / "hubs2", 3, keys, broker, "--canary", "hub-3", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "hub-3: canary: would send version 3, 3 files" in dry.stdout, dry.stdout
    assert "hub-1: after the canaries: would send version 3" in dry.stdout
    assert f"now runs version 2 (model.onnx {V2_SHA[:12]})" in dry.stdout
    assert "would go to 3 hub(s), 1 canary first; 0 skipped; nothing sent" in dry.stdout

    reused = release(tmp / "hubs2", 2, keys, broker)  # before: exit 0, "3 hub(s) running it"
    one_line(reused, "release 2 refused before sending anything", f"hub-1 runs version 2 with model.onnx "
             f"{V2_SHA[:12]}, not these files ({V1_SHA[:12]})", "release these as version 3")
    assert retained_records(session) == before  # nothing sent, by either command
    assert all(session.statuses[h]["version"] == 2 and session.statuses[h]["sha256"] == V2_SHA for h in HUBS)

    # A hub refuses such a record itself, and the broker now retains it: the next run sees it.
    record = make_release(tmp / "hubs2" / "hub-1", keys.private, 2, healthy_seconds=0)
    deliver(session, HubRelease("hub-1", tmp / "hubs2" / "hub-1", record, 2))
    statuses = wait_for(session, lambda s: (s["hub-1"].get("last_error") or {}).get("reason") == "reused-version",
                        "hub-1's refusal")
    assert statuses["hub-1"]["last_error"]["version"] == 2 and statuses["hub-1"]["sha256"] == V2_SHA
    line = one_line(release(fleet["dir"], 2, keys, broker),  # v2's own files: hub-1's retained record differs
                    f"the broker retains release 2 for hub-1 with other files (model.onnx {V1_SHA[:12]}")
    assert "hub-2" not in line and "hub-3" not in line and "runs version" not in line, line
    session.publish("edgecast/hub/hub-2/release", make_release(fleet["dir"] / "hub-2", keys.private, 1))
    statuses = wait_for(session, lambda s: (s["hub-2"].get("last_error") or {}).get("reason") == "rollback", "rollback")
    assert statuses["hub-2"]["last_error"]["version"] == 1  # before: null

    fleet["hubs"][2].process.kill()  # hub-3 drops off
    wait_for(session, lambda s: s["hub-3"]["state"] == "offline", "hub-3's last will")
    one_line(release(tmp / "hubs2", 3, keys, broker, "--canary", "hub-3"), "canary hub-3 is offline")
    hub3_record = retained_records(session)["hub-3"]
    result = release(tmp / "hubs2", 3, keys, broker, "--canary", "hub-1")  # before: exit 2 after --hub-timeout
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hub-3: skipped: offline" in result.stdout and "not sent release 3" in result.stdout, result.stdout
    assert "release 3: 2 hub(s) running it: hub-1, hub-2; skipped (offline): hub-3" in result.stdout
    statuses = wait_for(session, lambda s: all(s[h]["version"] == 3 for h in ("hub-1", "hub-2")), "v3")
    assert all(statuses[h]["sha256"] == V1_SHA for h in ("hub-1", "hub-2"))
    assert retained_records(session)["hub-3"] == hub3_record  # hub-3 was sent nothing


def test_fleet_status_strips_what_a_hub_reports_of_terminal_control(fleet):  # noqa: F811  (the imported fixture)
    session, broker = fleet["session"], fleet["broker"]
    hostile = {"hub": "hub-9", "state": "running\x1b[2J", "version": 1, "model_name": "m\x1b]0;pwned\x07",
               "sha256": "ab\u202e", "last_error": {"version": 1, "reason": "x", "message": "evil\x1b[31m[bold]red"}}
    session.publish("edgecast/hub/hub-9/status", json.dumps(hostile).encode())
    try:
        result = run_cli("fleet", "status", *broker_options(broker), "--wait", "1")
    finally:
        session.publish("edgecast/hub/hub-9/status", b"")
    assert result.returncode == 0, result.stderr
    assert not any(ord(c) < 32 and c != "\n" or 0x7f <= ord(c) <= 0x9f or c == "\u202e" for c in result.stdout)
    line = next(line for line in result.stdout.splitlines() if "hub-9" in line)
    assert "running\\x1b[2J" in line and "m\\x1b]0;pwned\\x07" in line, line
    assert "evil\\x1b[31m[bold]red" in result.stdout  # markup shown, not applied


def test_tls_port_or_no_broker_said_in_one_line(secure_broker, tmp_path):  # noqa: F811
    options = broker_options(secure_broker)
    no_ca = options[:options.index("--ca-file")]
    start = time.monotonic()
    result = run_cli("fleet", "status", *no_ca, "--wait", "0.5")
    elapsed = time.monotonic() - start
    one_line(result, "closed the connection without an MQTT answer", "TLS is likely needed",
             "--ca-file CA.crt", "--tls")
    assert elapsed < 10, elapsed  # before: "refused the connection: no answer" after 15 s
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer_http() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            with connection:
                connection.recv(1024)
                connection.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    threading.Thread(target=answer_http, daemon=True).start()
    try:
        result = run_cli("fleet", "status", "--broker", f"127.0.0.1:{port}", "--wait", "0.5")
    finally:
        server.close()
    one_line(result, "without an MQTT answer", "is it an MQTT broker, and does it need TLS?")
    keys = new_keys(tmp_path / "keys")
    bundle = make_bundle(tmp_path / "fleet" / "hub-1", V2, keys.private)
    one_line(run_cli("release", bundle, "--version", "2", "--key", keys.private, "--expires", "400d",
                     *options), "--expires 400d", "at most 366 days")


def start_hub(name: str, folder, broker, public_key, *extra: str) -> subprocess.Popen:
    folder.mkdir(parents=True)
    shutil.copy(V1, folder / "model.onnx")
    command = [str(RUNTIME), "mqtt", str(folder / "model.onnx"), "--broker", f"127.0.0.1:{broker.port}",
               "--subscribe", f"edgecast/readings/{name}", "--publish", f"edgecast/hub/{name}/forecasts",
               "--username", name, "--password-file", str(broker.password_file(name)),
               "--ca-file", str(broker.ca_file), "--trust", str(public_key), *extra]
    return subprocess.Popen(command, stdout=open(folder / "hub.log", "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def test_trusting_hub_never_serves_an_unsigned_model_and_says_when_its_release_expires(secure_broker, tmp_path):  # noqa: F811
    keys = new_keys(tmp_path / "keys")
    bundle = make_bundle(tmp_path / "fleet" / "hub-1", V2, keys.private)
    folder = tmp_path / "hubs" / "hub-1"
    hub = start_hub("hub-1", folder, secure_broker, keys.public, "--poll-interval", "0.2")
    settings = BrokerSettings(f"127.0.0.1:{secure_broker.operator_port}", "operator",
                              str(secure_broker.password_file("operator")), ca_file=str(secure_broker.ca_file))
    try:
        with OperatorSession(settings, client_id="test-operator") as session:
            wait_for(session, lambda s: s.get("hub-1", {}).get("state") == "running", "hub-1")
            result = run_cli("release", bundle, "--version", "2", "--key", keys.private, "--expires", "12s",
                             "--healthy-seconds", "0", "--hub-timeout", "60", *broker_options(secure_broker))
            assert result.returncode == 0, result.stdout + result.stderr
            readings = Readings(session)
            try:
                assert readings.latest_model("hub-1") == "v2"
                installed = folder / "releases" / "v2"
                unsigned = tmp_path / "unsigned.onnx"
                shutil.copyfile(V1, unsigned)
                (installed / "manifest.json").write_text(manifest_for(unsigned))  # a matching manifest
                shutil.copyfile(unsigned, installed / "model.onnx")
                deadline = time.monotonic() + 3.0  # 15 polls
                while time.monotonic() < deadline:
                    assert readings.latest_model("hub-1") == "v2"  # before: v1 within one poll
            finally:
                readings.stop()
            assert readings.errors == []
            events = [json.loads(line) for line in (folder / "hub.log").read_text().splitlines()
                      if line.startswith("{")]
            refusals = [e for e in events if e.get("event") == "reload_refused"]
            assert refusals and "release 2 signs; not served" in refusals[0]["error"], refusals
            statuses = wait_for(session, lambda s: s["hub-1"].get("release_expired") is True, "the expiry")
            assert statuses["hub-1"]["version"] == 2 and statuses["hub-1"]["sha256"] == V2_SHA
        status = run_cli("fleet", "status", *broker_options(secure_broker), "--wait", "1")
        line = next(line for line in status.stdout.splitlines() if "hub-1" in line)
        assert "release expired" in line, status.stdout
    finally:
        hub.terminate()
        hub.wait(15)


def test_canaries_by_number_percentage_or_name():
    assert parse_canaries("2") == (2, None, []) and parse_canaries("25%") == (None, 25.0, [])
    assert parse_canaries("hub-3") == (1, None, ["hub-3"])
    assert parse_canaries("hub-3, hub-1") == (2, None, ["hub-3", "hub-1"])
    for text in ("hub-1,hub-1", "a/b", ",", "-1", "0%"):
        with pytest.raises(SigningError):
            parse_canaries(text)
