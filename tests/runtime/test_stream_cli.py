"""`edgecast-runtime stream`: one JSON line out for every line in, written after the
reading is durable; and the SIGKILL test: killed at random points while it
consumes a recorded series, restarted, it gives the answers of an uninterrupted
run and loses no acknowledged reading."""

import json
import queue
import random
import signal
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from runtime_support import ONE, ONE_V2, THREE, add_count, assert_one_line_error, cli_path, expected_forecast, run_cli


def answers_of(stdout: str):
    return [json.loads(line) for line in stdout.splitlines()]


def test_one_json_line_per_input_line_whatever_the_line():
    lines = [
        "timestamp,PM2.5",  # a header
        "2026-01-01T00:00:00Z,10",
        "2026-01-01T01:00:00Z,20",
        "",  # blank
        "2026-01-01T02:00:00Z,abc",  # not a number
        '{"value": 30, "timestamp": "2026-01-01T02:00:00Z"}',
        "{broken json",
        '{"values": [40], "ts": "2026-01-01T03:00:00+00:00"}',
        "2026-01-01T03:00:00Z,40",  # resent: its answer again
        "1,2,3",  # too many fields
        "2026-01-01T01:30:00Z,5",  # out of order
    ]
    result = run_cli("stream", ONE, stdin="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    answers = answers_of(result.stdout)
    assert [a["line"] for a in answers] == list(range(1, len(lines) + 1))
    statuses = [a["status"] for a in answers]
    assert statuses == ["header", "filling", "filling", "error", "error", "filling", "error",
                        "forecast", "forecast", "error", "error"]
    assert answers[0]["columns"] == ["timestamp", "PM2.5"]
    assert "empty line" in answers[3]["error"]
    assert "not a number: 'abc'" in answers[4]["error"]
    assert "malformed JSON" in answers[6]["error"]
    assert answers[7]["forecast"] == pytest.approx(expected_forecast([10, 20, 30, 40]))
    assert answers[8]["duplicate"] is True and answers[8]["forecast"] == answers[7]["forecast"]
    assert "expected 2 CSV fields as in the header, got 3" in answers[9]["error"]
    assert "time order" in answers[10]["error"]
    assert "no --state" in result.stderr  # said once, on stderr, not in the answers


def test_three_features_from_csv_with_header_in_any_order():
    header = "PRES,time,TEMP,PM2.5"
    rows = [f"1000,{60 * i},20,{10 * i}" for i in range(6)]
    result = run_cli("stream", THREE, stdin="\n".join([header] + rows) + "\n")
    answers = answers_of(result.stdout)
    assert answers[-1]["status"] == "forecast"
    window = [[10.0 * i, 20.0, 1000.0] for i in range(6)]
    assert answers[-1]["forecast"] == pytest.approx(expected_forecast(window))


def test_bad_bytes_and_oversized_lines_are_answered_too():
    data = b"\xff\xfe\n" + b"1" * (70 * 1024) + b"\n5\n"
    result = subprocess.run([cli_path(), "stream", str(ONE)], input=data, capture_output=True,
                            timeout=30)
    answers = answers_of(result.stdout.decode())
    assert [a["status"] for a in answers] == ["error", "error", "filling"]
    assert "not UTF-8" in answers[0]["error"] and "longer than" in answers[1]["error"]


def test_state_of_another_model_stops_the_command_with_one_line(tmp_path):
    state = tmp_path / "state.json"
    run_cli("stream", ONE, "--state", state, stdin="1\n2\n")
    result = run_cli("stream", ONE_V2, "--state", state, stdin="1\n")
    assert_one_line_error(result, 5, "written for another model", "state.json")
    assert json.loads(state.read_text())["accepted"] == 2


class StreamProcess:
    """`stream --state` with its answers read line by line by a thread."""

    def __init__(self, state, *extra):
        self.proc = subprocess.Popen([cli_path(), "stream", str(ONE), "--state", str(state), *extra],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        self.answers = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.answers.put(json.loads(line))

    def send(self, line: str):
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def answer(self, timeout=10.0):
        return self.answers.get(timeout=timeout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._reader.join(5)
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()


def test_sigterm_stops_cleanly_after_the_last_answer(tmp_path):
    state = tmp_path / "state.json"
    with StreamProcess(state) as process:
        for value in (1, 2):
            process.send(str(value))
            assert process.answer()["status"] == "filling"
        process.proc.send_signal(signal.SIGTERM)
        assert process.proc.wait(10) == 0
    assert json.loads(state.read_text())["accepted"] == 2


def recorded_series():
    """90 hourly readings in both line formats, with a missing value, a 3-hour gap
    and a malformed line, so that the policies act during the kills too. Every
    reading has a timestamp: that is how a resent reading is recognised."""
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    lines, hour = [], 0
    for index in range(90):
        if index == 40:
            hour += 3
        moment = start + timedelta(hours=hour)
        value = round(60 + 25 * ((index * 7) % 11) / 11 + index * 0.3, 2)
        if index == 20:
            lines.append(json.dumps({"value": None, "timestamp": moment.isoformat()}))
        elif index == 55:
            lines.append(f"{moment.timestamp():.0f},n/a")
        elif index % 2:
            lines.append(f"{moment.timestamp():.0f},{value}")
        else:
            lines.append(json.dumps({"value": value, "timestamp": moment.isoformat()}))
        hour += 1
    return lines


def comparable(answer):
    return {k: v for k, v in answer.items() if k not in ("line", "duplicate")}


def test_sigkill_at_random_points_loses_no_acknowledged_reading(tmp_path):
    lines = recorded_series()
    reference_run = run_cli("stream", ONE, "--state", tmp_path / "reference.json",
                            stdin="\n".join(lines) + "\n")
    reference = answers_of(reference_run.stdout)
    assert len(reference) == len(lines)
    assert {"forecast", "filling", "error"} == {a["status"] for a in reference}
    accepted_after = []  # readings accepted once line i was answered
    for answer in reference:
        accepted_after.append(answer.get("accepted", accepted_after[-1] if accepted_after else 0))

    state = tmp_path / "state.json"
    rng = random.Random(20261125)
    acknowledged, position, kills, kills_in_flight, lost = {}, 0, 0, 0, 0
    deadline = time.monotonic() + 90
    while position < len(lines):
        assert kills < 100 and time.monotonic() < deadline, (kills, position)
        burst_end = min(len(lines), position + rng.randint(1, 6))
        kill_in_flight = rng.random() < 0.6
        with StreamProcess(state) as process:
            for index in range(position, burst_end):
                process.send(lines[index])
                if kill_in_flight and index == burst_end - 1:
                    time.sleep(rng.uniform(0, 0.004))  # during parsing, predicting or fsync
                    process.proc.send_signal(signal.SIGKILL)
                    kills_in_flight += 1
                    break
                acknowledged[index] = process.answer()
                position = index + 1
        kills += 1
        # The state file is whole JSON, and holds every acknowledged reading (and at
        # most the one in flight).
        stored = json.loads(state.read_text())["accepted"] if state.exists() else 0
        before = accepted_after[position - 1] if position else 0
        in_flight = accepted_after[position] if position < len(lines) else before
        lost += max(0, before - stored)
        assert stored in (before, in_flight), (position, stored, before, in_flight)

    add_count("faults", "stream_sigkills", kills)
    add_count("faults", "stream_sigkills_mid_reading", kills_in_flight)
    add_count("faults", "stream_acknowledged_readings", len(acknowledged))
    add_count("faults", "lost_acknowledged_readings", lost)
    assert kills >= 15 and kills_in_flight >= 5, (kills, kills_in_flight)
    for index, answer in sorted(acknowledged.items()):
        assert comparable(answer) == comparable(reference[index]), (index, answer, reference[index])
