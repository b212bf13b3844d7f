"""Faults: SIGKILL of `serve` (with /v1/observe) and `mqtt` at random
points, the durable state checked after each restart, 0 acknowledged readings lost
(`stream` has its own SIGKILL test in test_stream_cli.py; all three report to the
"faults" figures); a full disk and an unwritable state folder answered with a
clear error and the old state intact.

How the disk faults are made, honestly, when tests run as root (chmod does not
stop root, and mounting a small tmpfs needs privileges a CI container lacks):
  * full disk: the runtime process runs under RLIMIT_FSIZE (setrlimit in the child),
    so writing a state file larger than the limit fails part-way with EFBIG, exactly
    where a full disk fails with ENOSPC (Python ignores SIGXFSZ, so the write
    returns an error instead of killing the process);
  * unwritable folder: the state folder is moved aside while the service runs and a
    plain file takes its name, so creating the temporary file in it fails (ENOTDIR) as
    it would on a read-only folder (EROFS); moved back, it is writable again. (The
    temporary file's name is random, so it cannot be taken in advance.)
  * a state path whose parent is a regular file (ENOTDIR) at start-up.
"""

import http.client
import json
import random
import resource
import signal
import subprocess
import threading
import time

import pytest
from support.runtime import ONE, Server, add_count, cli_path, kill_at_random_points, record

from edgecast_runtime import Forecaster, StreamingForecaster
from edgecast_runtime.readings import reading_from_json

HOUR = 3600
START = 1_767_225_600  # 2026-01-01T00:00:00Z
KEYS = ("status", "forecast", "buffered", "accepted", "timestamp", "notice")


def series(count):
    """Hourly readings with a missing value and a 3-hour gap, so that the policies act."""
    readings, hour = [], 0
    for index in range(count):
        if index == count // 2:
            hour += 3
        value = None if index == count // 3 else round(50 + 20 * ((index * 7) % 11) / 11, 2)
        readings.append({"value": value, "timestamp": START + hour * HOUR})
        hour += 1
    return readings


def reference_answers(readings):
    stream = StreamingForecaster(Forecaster(ONE))
    return [stream.observe_reading(reading_from_json(r, ["PM2.5"])) for r in readings]


def comparable(answer):
    return {key: answer.get(key) for key in KEYS}


def stored_accepted(state):
    return json.loads(state.read_text())["accepted"] if state.exists() else 0


def test_serve_sigkill_at_random_points_loses_no_acknowledged_reading(tmp_path):
    readings = series(40)
    reference = reference_answers(readings)
    state = tmp_path / "state.json"

    def acknowledge(server, index):
        status, answer, _ = server.request("POST", "/v1/observe", readings[index])
        assert status == 200, answer
        return answer

    def send_and_kill(server, index, delay):
        got = {}

        def post():
            try:
                got["answer"] = server.request("POST", "/v1/observe", readings[index], timeout=5)
            except (OSError, http.client.HTTPException) as exc:  # killed mid-request: no acknowledgement
                got["error"] = exc

        sender = threading.Thread(target=post, daemon=True)
        sender.start()
        time.sleep(delay)
        server.proc.send_signal(signal.SIGKILL)
        sender.join(10)
        answered = "answer" in got and got["answer"][0] == 200
        return got["answer"][1] if answered else None

    acknowledged, trials, in_flight_kills, lost = kill_at_random_points(
        len(readings), lambda: Server(ONE, "--state", state, "--poll-interval", "0"),
        acknowledge, send_and_kill, seed=7,
        accepted_after=[answer["accepted"] for answer in reference],
        stored_accepted=lambda: stored_accepted(state), max_kills=40)
    mismatched = [i for i, a in acknowledged.items() if comparable(a) != comparable(reference[i])]
    add_count("faults", "serve_sigkills", trials)
    add_count("faults", "serve_sigkills_mid_request", in_flight_kills)
    add_count("faults", "serve_acknowledged_readings", len(acknowledged))
    add_count("faults", "lost_acknowledged_readings", lost)
    print(f"\nserve SIGKILL: {trials} kills ({in_flight_kills} mid-request), "
          f"{len(acknowledged)} acknowledged, {lost} lost")
    assert lost == 0 and mismatched == []
    assert trials >= 8 and stored_accepted(state) == reference[-1]["accepted"]


def test_mqtt_sigkill_at_random_points_loses_no_acknowledged_reading(broker, tmp_path):
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt (the [mqtt] extra) is missing")
    from test_mqtt import Listener, start_runtime

    readings = [r for r in series(30) if r["value"] is not None]
    reference = {r["timestamp"]: a for r, a in zip(readings, reference_answers(readings))}
    state = tmp_path / "state.json"
    rng = random.Random(11)
    listener = Listener(broker)
    answers, position, trials, lost, pending_kills = [], 0, 0, 0, 0
    deadline = time.monotonic() + 120

    def drain(until=None, timeout=15.0):
        """Collect answers; with `until`, wait for the answer to that timestamp."""
        limit = time.monotonic() + timeout
        while True:
            if until is not None and any(a.get("timestamp") == until for a in answers):
                return True
            remaining = limit - time.monotonic()
            if remaining <= 0:
                return until is None
            try:
                answers.append(listener.answers.get(timeout=min(remaining, 0.2)))
            except Exception:  # queue.Empty
                if until is None:
                    return True

    try:
        while position < len(readings):
            assert trials < 30 and time.monotonic() < deadline, (trials, position)
            end = min(len(readings), position + rng.randint(1, 5))
            with start_runtime(broker, ONE, state) as runtime:
                runtime.wait_event("mqtt_subscribed", timeout=30)
                for index in range(position, end):
                    listener.publish(readings[index])  # the broker has it (QoS 1 PUBACK)
                    position = index + 1
                    if index < end - 1 or rng.random() < 0.4:
                        assert drain(until=readings[index]["timestamp"]), index
                time.sleep(rng.uniform(0, 0.006))  # often while a reading is handled
                runtime.proc.send_signal(signal.SIGKILL)
                runtime.proc.wait(10)
            trials += 1
            drain(timeout=0.3)
            answered = {a.get("timestamp") for a in answers}
            pending_kills += any(r["timestamp"] not in answered for r in readings[:position])
            acked = max((a["accepted"] for a in answers if "accepted" in a), default=0)
            stored = stored_accepted(state)
            lost += max(0, acked - stored)
            assert stored >= acked, (stored, acked)
        with start_runtime(broker, ONE, state) as runtime:  # the rest is delivered now
            assert drain(until=readings[-1]["timestamp"], timeout=30)
            runtime.stop(signal.SIGTERM)
    finally:
        listener.close()

    fresh = [a for a in answers if a.get("status") != "error" and not a.get("duplicate")]
    counted = [a["accepted"] for a in fresh]
    stale = [a for a in answers if a.get("status") == "error"]
    add_count("faults", "mqtt_sigkills", trials)
    add_count("faults", "mqtt_sigkills_with_readings_unanswered", pending_kills)
    answered = {a.get("timestamp") for a in answers if a.get("status") != "error"}
    add_count("faults", "mqtt_readings_answered", len(answered))
    add_count("faults", "mqtt_readings_answered_only_as_resend", len(answered) - len(set(counted)))
    add_count("faults", "mqtt_redelivered_duplicates", sum(bool(a.get("duplicate")) for a in answers))
    add_count("faults", "mqtt_stale_redeliveries", len(stale))
    add_count("faults", "lost_acknowledged_readings", lost)
    print(f"\nmqtt SIGKILL: {trials} kills, {len(answered)} readings answered, "
          f"{len(answers) - len(fresh)} redelivered, {lost} lost")
    assert lost == 0
    assert stored_accepted(state) == len(readings)  # each reading counted exactly once
    assert answered == {r["timestamp"] for r in readings}  # and answered at least once
    assert len(counted) == len(set(counted))  # never counted twice
    # A redelivered reading older than the last one stored is refused, never stored twice.
    assert all("time order" in a["error"] for a in stale), stale
    for answer in fresh:
        assert comparable(answer) == comparable(reference[answer["timestamp"]]), answer
    assert trials >= 5


# --- disk faults -----------------------------------------------------------------------


def file_size_limit(limit):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def state_size_after(tmp_path, lines):
    probe = tmp_path / "probe" / "state.json"
    probe.parent.mkdir()
    subprocess.run([cli_path(), "stream", str(ONE), "--state", str(probe), "--no-score"],
                   input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=30)
    return probe.stat().st_size


LINES = [f"{START + i * HOUR},{v}" for i, v in enumerate([10.5, 20.5, 30.5, 40.5, 50.5])]


def test_full_disk_during_stream_answers_an_error_and_keeps_the_old_state(tmp_path):
    # The state file alone (--no-score): the forecast store's pages are larger than
    # this file size limit. Its own full disk is in test_skill.py.
    limit = state_size_after(tmp_path, LINES[:3]) + 4  # room for 3 readings, not for 4
    state = tmp_path / "state.json"
    result = subprocess.run([cli_path(), "stream", str(ONE), "--state", str(state), "--no-score"],
                            input="\n".join(LINES) + "\n", capture_output=True, text=True,
                            timeout=30, preexec_fn=file_size_limit(limit))
    assert result.returncode == 0 and "Traceback" not in result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert [a["status"] for a in answers] == ["filling"] * 3 + ["error"] * 2
    assert "cannot save the stream state" in answers[3]["error"]
    assert "File too large" in answers[3]["error"] and "not accepted" in answers[3]["error"]
    document = json.loads(state.read_text())  # whole, and the last good one
    assert document["accepted"] == 3 and document["buffer"] == [[10.5], [20.5], [30.5]]
    assert not list(tmp_path.glob(".*.tmp"))
    # Space again: the refused readings are accepted when sent again.
    again = subprocess.run([cli_path(), "stream", str(ONE), "--state", str(state)],
                           input="\n".join(LINES[3:]) + "\n", capture_output=True, text=True,
                           timeout=30)
    assert [json.loads(line)["accepted"] for line in again.stdout.splitlines()] == [4, 5]
    add_count("faults", "disk_faults", 1)


def test_full_disk_under_serve_is_503_and_the_old_state_stays(tmp_path):
    limit = state_size_after(tmp_path, LINES[:2]) + 4
    state = tmp_path / "state.json"
    with Server(ONE, "--state", state, "--poll-interval", "0", "--no-score",
                preexec_fn=file_size_limit(limit)) as server:
        statuses = []
        for line in LINES[:4]:
            ts, value = line.split(",")
            statuses.append(server.request("POST", "/v1/observe",
                                           {"value": float(value), "timestamp": int(ts)}))
        assert [s[0] for s in statuses] == [200, 200, 503, 503]
        assert "File too large" in statuses[2][1]["error"]
        assert server.request("GET", "/healthz")[1]["stream"]["accepted"] == 2
    assert json.loads(state.read_text())["accepted"] == 2
    assert not list(tmp_path.glob(".*.tmp"))
    add_count("faults", "disk_faults", 1)


def test_unwritable_state_folder_is_503_then_recovers(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    state = folder / "state.json"
    aside = tmp_path / "data.aside"
    with Server(ONE, "--state", state, "--poll-interval", "0") as server:
        def observe(hour, value):
            return server.request("POST", "/v1/observe",
                                  {"value": value, "timestamp": START + hour * HOUR})
        assert observe(0, 10)[0] == 200 and observe(1, 20)[0] == 200
        before = state.read_bytes()
        folder.rename(aside)
        folder.write_text("in the way\n")
        status, answer, _ = observe(2, 30)
        assert status == 503 and "cannot save the stream state" in answer["error"]
        assert "the reading was not accepted" in answer["error"]
        assert (aside / "state.json").read_bytes() == before  # the old state, untouched
        folder.unlink()
        aside.rename(folder)
        status, answer, _ = observe(2, 30)  # sent again once the folder is writable
        assert status == 200 and answer["accepted"] == 3
        not_json = [line for line in server.stderr_lines if not line.startswith("{")]
    assert not_json == []
    add_count("faults", "disk_faults", 1)


def test_state_folder_that_is_a_file_stops_serve_with_one_line(tmp_path):
    (tmp_path / "plain-file").write_text("x\n")
    result = subprocess.run([cli_path(), "serve", str(ONE), "--port", "0", "--state",
                             str(tmp_path / "plain-file" / "state.json")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 5, result.stderr
    assert result.stderr.startswith("edgecast-runtime: error: cannot open")
    assert "Not a directory" in result.stderr and len(result.stderr.splitlines()) == 1
    add_count("faults", "disk_faults", 1)
    record("faults", disk_fault_method="RLIMIT_FSIZE (full disk), state folder replaced by a "
                                       "file (unwritable folder), parent is a file (ENOTDIR)")
