"""`edgecast-runtime stream`: one JSON line out for every line in, written after the
reading is durable; and the SIGKILL test: killed at random points while it
consumes a recorded series, restarted, it gives the answers of an uninterrupted
run and loses no acknowledged reading."""

import ctypes
import json
import os
import re
import signal
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from support.runtime import (
    ONE,
    ONE_REEXPORT,
    ONE_V2,
    THREE,
    Background,
    add_count,
    assert_one_line_error,
    cli_path,
    expected_forecast,
    kill_at_random_points,
    replace_atomically,
    run_cli,
)


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


def test_state_of_a_model_with_other_inputs_stops_the_command_with_one_line(tmp_path):
    state = tmp_path / "state.json"
    run_cli("stream", ONE, "--state", state, stdin="1\n2\n")
    result = run_cli("stream", THREE, "--state", state, stdin="1,2,3\n")
    assert_one_line_error(result, 5, "written for another model", "reads other inputs",
                          "state.json")
    assert json.loads(state.read_text())["accepted"] == 2


def test_state_in_a_folder_that_does_not_exist_is_one_line_naming_the_folder(tmp_path):
    state = tmp_path / "absent" / "s.json"
    result = run_cli("stream", ONE, "--state", state, stdin="1\n")
    assert_one_line_error(result, 5, f"the state file {state} cannot be made: its folder "
                          f"{state.parent} does not exist")
    assert not state.parent.exists() and result.stdout == ""


def test_opt_in_policy_starts_afresh_on_a_state_of_a_model_with_other_inputs(tmp_path):
    """--on-state-mismatch fresh: an unattended hub whose model changed while it was down
    starts with an empty buffer and says so; the file then belongs to the new model."""
    state = tmp_path / "state.json"
    run_cli("stream", ONE, "--state", state, stdin="1\n2\n")
    result = run_cli("stream", THREE, "--state", state, "--on-state-mismatch", "fresh", stdin="1,2,3\n")
    assert result.returncode == 0, result.stderr
    assert [a["status"] for a in answers_of(result.stdout)] == ["filling"]
    notices = [json.loads(line) for line in result.stderr.splitlines() if "state_discarded" in line]
    assert len(notices) == 1 and "starting afresh" in notices[0]["message"], result.stderr
    assert "reads other inputs" in notices[0]["message"]
    document = json.loads(state.read_text())
    assert document["accepted"] == 1 and document["inputs"]["look_back"] == 6
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json")
    assert_one_line_error(run_cli("stream", ONE, "--state", corrupt, "--on-state-mismatch", "fresh",
                                  stdin="1\n"), 5, "not a valid state file")


def adoption_notices(stderr: str):
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [e for e in events if e.get("event") == "notice" and "state_adopted_from" in e]


@pytest.mark.parametrize("replacement, offset", [(ONE_REEXPORT, 0.0), (ONE_V2, 1000.0)])
def test_restart_onto_a_model_with_the_same_inputs_keeps_the_state(model_copy, tmp_path,
                                                                   replacement, offset):
    """A hub stopped, given a re-exported model (other bytes, same spec) or another
    model reading the same inputs, and restarted: the buffer carries on."""
    state = tmp_path / "state.json"
    first = run_cli("stream", model_copy, "--state", state, stdin="0,10\n3600,20\n7200,30\n")
    assert [a["status"] for a in answers_of(first.stdout)] == ["filling"] * 3
    old_sha = json.loads(state.read_text())["model_sha256"]
    replace_atomically(replacement, model_copy)
    second = run_cli("stream", model_copy, "--state", state, stdin="10800,40\n14400,50\n")
    assert second.returncode == 0, second.stderr
    answers = answers_of(second.stdout)
    assert answers[0]["forecast"] == pytest.approx(expected_forecast([10, 20, 30, 40], offset))
    assert answers[1]["forecast"] == pytest.approx(expected_forecast([20, 30, 40, 50], offset))
    assert [a["accepted"] for a in answers] == [4, 5]
    [notice] = adoption_notices(second.stderr)
    assert notice["state_adopted_from"]["model_sha256"] == old_sha
    assert "reads the same inputs" in notice["message"]
    document = json.loads(state.read_text())
    assert document["model_sha256"] == notice["sha256"] != old_sha
    third = run_cli("stream", model_copy, "--state", state, stdin="18000,60\n")
    assert adoption_notices(third.stderr) == []  # adopted once, then its own


def stream_process(state, model=ONE, *extra):
    """`stream --state` in the background, fed line by line."""
    return Background("stream", model, "--state", state, *extra, stdin=True)


def test_sigterm_stops_cleanly_after_the_last_answer(tmp_path):
    state = tmp_path / "state.json"
    with stream_process(state) as process:
        for value in (1, 2):
            process.send(str(value))
            assert process.answer()["status"] == "filling"
        process.proc.send_signal(signal.SIGTERM)
        assert process.proc.wait(10) == 0
    assert json.loads(state.read_text())["accepted"] == 2


def other_threads(pid: int) -> list:
    """The process's other threads the kernel could hand a SIGTERM: those that do not
    block it (under qemu-user, the emulator's own RCU thread blocks every signal)."""
    return sorted(int(tid) for tid in os.listdir(f"/proc/{pid}/task")
                  if int(tid) != pid and not blocks_sigterm(pid, int(tid)))


def blocks_sigterm(pid: int, tid: int) -> bool:
    status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
    blocked = int(re.search(r"^SigBlk:\s*([0-9a-f]+)$", status, re.M).group(1), 16)
    return bool(blocked >> (signal.SIGTERM - 1) & 1)


def test_sigterm_taken_by_any_other_thread_still_stops_a_waiting_stream(tmp_path):
    """Linux gives a process's SIGTERM to any thread that does not block it, and
    Python's handler runs on the main thread only: the stream, waiting in read(2)
    for the next line, once slept through it (1 stop in 10 to 40). Each of the
    process's other threads (onnxruntime's, OpenBLAS's, the run deadline's watchdog)
    is handed the signal in turn, with half a line waiting. A thread that blocks
    SIGTERM is left out, as the kernel leaves it out."""
    libc = ctypes.CDLL(None, use_errno=True)
    index, count = 0, 1
    while index < count:
        state = tmp_path / f"state{index}.json"
        with stream_process(state) as process:
            for value in (1, 2, 3):
                process.send(str(value))
                assert process.answer()["status"] in ("filling", "forecast")
            threads = other_threads(process.proc.pid)
            assert threads, "the stream runs no other thread: nothing would be tested"
            count = len(threads)
            process.proc.stdin.write(b"4")  # half a line: the stream waits for the rest
            process.proc.stdin.flush()
            assert libc.tgkill(process.proc.pid, threads[index], signal.SIGTERM) == 0
            assert process.proc.wait(10) == 0, f"thread {index + 1} of {count} took SIGTERM"
        assert json.loads(state.read_text())["accepted"] == 3
        index += 1


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

    def send_and_kill(process, index, delay):
        process.send(lines[index])
        time.sleep(delay)
        process.proc.send_signal(signal.SIGKILL)
        return None  # its answer, if written, is never read: not acknowledged

    def acknowledge(process, index):
        process.send(lines[index])
        return process.answer()

    acknowledged, kills, kills_in_flight, lost = kill_at_random_points(
        len(lines), lambda: stream_process(state), acknowledge, send_and_kill,
        seed=20261125, accepted_after=accepted_after,
        stored_accepted=lambda: json.loads(state.read_text())["accepted"] if state.exists() else 0,
        max_kills=100)

    add_count("faults", "stream_sigkills", kills)
    add_count("faults", "stream_sigkills_mid_reading", kills_in_flight)
    add_count("faults", "stream_acknowledged_readings", len(acknowledged))
    add_count("faults", "lost_acknowledged_readings", lost)
    assert kills >= 15 and kills_in_flight >= 5, (kills, kills_in_flight)
    for index, answer in sorted(acknowledged.items()):
        assert comparable(answer) == comparable(reference[index]), (index, answer, reference[index])
