"""The stream, its state file and its timestamps against hostile input: each test
first mounts the attack as it was reproduced against an older runtime (a reading
stamped in the year 9999, a state file of the previous model after a deploy, numbers
that overflow, planted symlinks, a state file holding 1e999), then shows the fixed
behaviour through the installed console script: a clear error answer, the process
alive and answering, nothing outside the state folder touched, private files."""

import json
import os
import re
import shlex
import sqlite3
import stat
import time
from pathlib import Path

import pytest
from support.runtime import (
    ONE,
    THREE,
    Background,
    Server,
    add_count,
    assert_one_line_error,
    bundled_copy,
    cli_path,
    record,
    run_cli,
)

from edgecast_runtime import Forecaster, StreamingForecaster
from edgecast_runtime.errors import InputValueError

HOUR = 3600
YEAR_9999 = "9999-12-31T23:59:59Z"  # 253402300799 s
UNIT_FILE = Path(__file__).resolve().parents[2] / "runtime" / "deploy" / "edgecast-runtime.service"


@pytest.fixture(scope="module", autouse=True)
def wall_time():
    started = time.monotonic()
    yield
    record("hostile_stream", wall_seconds=round(time.monotonic() - started, 1))


def recent_hours(count):
    """Hourly timestamps ending two hours ago (the hub's clock is the real one)."""
    last = int(time.time()) // HOUR * HOUR - 2 * HOUR
    return [last - (count - 1 - i) * HOUR for i in range(count)]


def answers_of(stdout):
    return [json.loads(line) for line in stdout.splitlines()]


def private(path):
    return stat.S_IMODE(path.lstat().st_mode) == 0o600


def snapshot(folder):
    """Every file under `folder` with its bytes and mtime: what 'untouched' means."""
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.is_symlink()}


def observe(server, value, timestamp):
    status, body, _ = server.request("POST", "/v1/observe", {"value": value, "timestamp": timestamp})
    return status, body


# --- a reading stamped in the year 9999 --------------------------------------------------


def test_a_reading_from_the_year_9999_is_refused_and_later_readings_still_count(tmp_path):
    state = tmp_path / "state" / "state.json"
    state.parent.mkdir()
    hours = recent_hours(6)
    with Server(ONE, "--state", state, "--poll-interval", "0") as server:
        assert observe(server, 10, hours[0])[0] == 200
        attacks = [YEAR_9999, 253402300799000, 10 ** 400]  # ISO, milliseconds, beyond float
        refused = [observe(server, 99, stamp) for stamp in attacks]
        assert [status for status, _ in refused] == [422, 422, 422], refused
        assert "in the future" in refused[0][1]["error"] and "max_future_seconds" in refused[0][1]["error"]
        assert "out of range" in refused[2][1]["error"]
        status, answer = observe(server, 20, hours[1])  # the stream still moves
        assert status == 200 and answer["accepted"] == 2, answer
        status, health, _ = server.request("GET", "/healthz")
        assert status == 200 and health["status"] == "ok" and health["stream"]["accepted"] == 2
        assert server.stop() == 0
    with Server(ONE, "--state", state, "--poll-interval", "0") as server:  # across a restart
        answers = [observe(server, 10 * (i + 3), hours[i + 2]) for i in range(4)]
        assert [status for status, _ in answers] == [200] * 4, answers
        assert answers[-1][1]["status"] == "forecast" and answers[-1][1]["accepted"] == 6
        assert server.request("GET", "/healthz")[0] == 200
    assert json.loads(state.read_text())["last_timestamp"] == hours[-1]
    assert all(private(p) for p in state.parent.iterdir()), [oct(p.stat().st_mode) for p in state.parent.iterdir()]
    add_count("hostile_stream", "attacks_mounted", len(attacks))
    add_count("hostile_stream", "attacks_refused", len(attacks))


def test_a_hub_with_neighbours_refuses_future_readings_before_queueing_them(tmp_path):
    """Own readings wait in a queue for the neighbours' ones: a year-9999 reading queued
    there would hold back every later one, and a neighbour's kept for its time forever."""
    hours = recent_hours(3)
    home = Path(__file__).resolve().parent / "fixtures" / "neighbours" / "home.onnx"
    with Server(home, "--station", "home", "--neighbour-wait", "0", "--state", tmp_path / "state.json",
                "--poll-interval", "0") as server:
        def post(document):
            status, body, _ = server.request("POST", "/v1/observe", document)
            return status, body
        assert post({"timestamp": hours[0], "PM2.5": 30})[0] == 200
        # A neighbour's time takes the station's forms: year 9999 as ISO text and as epoch
        # milliseconds (a number from 1e11 up is milliseconds, clock.MILLISECONDS_FROM).
        refused = [post({"timestamp": YEAR_9999, "PM2.5": 99}),
                   post({"station": "upwind", "timestamp": YEAR_9999, "PM2.5": 99}),
                   post({"station": "upwind", "timestamp": 253402300799000, "PM2.5": 99})]
        assert [status for status, _ in refused] == [422, 422, 422], refused
        assert all("in the future" in body["error"] for _, body in refused)
        answers = [post({"timestamp": stamp, "PM2.5": 31}) for stamp in hours[1:]]
        assert [status for status, _ in answers] == [200, 200], answers
        assert answers[-1][1]["accepted"] == 3
        assert server.request("GET", "/healthz")[0] == 200
    add_count("hostile_stream", "attacks_mounted", 3)
    add_count("hostile_stream", "attacks_refused", 3)


def poison(state: Path, store: Path, stamp: float) -> None:
    """What an older runtime left after accepting a reading stamped `stamp`: the state
    file's last reading and the forecast store's last applied reading at that time."""
    document = json.loads(state.read_text())
    document["last_timestamp"] = stamp
    document["last_values"] = [99.0]
    document["last_answer"] = dict(document["last_answer"], timestamp=stamp)
    state.write_text(json.dumps(document))
    with sqlite3.connect(store) as db:
        db.execute("INSERT OR REPLACE INTO meta VALUES ('last_applied', ?)", (repr(stamp),))
        db.execute("INSERT OR REPLACE INTO pending VALUES (?, 'x', '[1.0]', 1.0, '[null]', ?)",
                   (stamp, stamp + 2 * HOUR))


@pytest.mark.parametrize("stamp", [253402300799.0, 1e12])  # year 9999; beyond the calendar (1e15 ms)
def test_a_state_poisoned_by_an_older_runtime_restarts_instead_of_blocking(tmp_path, stamp):
    state = tmp_path / "state.json"
    store = tmp_path / "state.json.scores.sqlite"
    hours = recent_hours(7)
    run_cli("stream", ONE, "--state", state, stdin="".join(f"{h},{10 + i}\n" for i, h in enumerate(hours[:2])))
    poison(state, store, stamp)
    with Server(ONE, "--state", state, "--poll-interval", "0") as server:
        started = [e for e in server.events if e.get("event") == "notice"]
        assert any("restarts at the next reading" in e["message"] for e in started), started
        answers = [observe(server, 30 + i, hours[2 + i]) for i in range(5)]
        assert [status for status, _ in answers] == [200] * 5, answers
        assert "beyond the hub's clock: the stream restarts here" in answers[0][1]["notice"]
        assert answers[3][1]["status"] == "forecast" and answers[4][1]["accepted"] == 7
        assert server.request("GET", "/healthz")[1]["status"] == "ok"
        restarted = [e for e in server.events if e.get("state_restarted")]
        rewound = [e for e in server.events if e.get("store_rewound")]
        assert len(restarted) == 1 and len(rewound) == 1
    kept = json.loads((tmp_path / "state.json.discarded").read_text())
    assert kept["last_timestamp"] == stamp  # kept aside for whoever wants to look
    with sqlite3.connect(store) as db:
        assert float(db.execute("SELECT value FROM meta WHERE key = 'last_applied'").fetchone()[0]) == hours[6]
        assert db.execute("SELECT COUNT(*) FROM pending WHERE issued > ?", (hours[6],)).fetchone()[0] == 0
        issued = int(db.execute("SELECT value FROM meta WHERE key = 'count_issued'").fetchone()[0])
    assert issued >= 2  # the store scores the new timeline
    add_count("hostile_stream", "attacks_mounted")
    add_count("hostile_stream", "attacks_refused")


def test_a_hub_whose_clock_is_unset_checks_nothing_until_it_is_set(tmp_path):
    """Before 2020 the hub's clock was never set: the check is skipped (one notice); once
    set, a last reading beyond it restarts the stream instead of refusing the next ones."""
    clock = {"now": 86_400.0}  # 1970-01-02: no real-time clock, no network time yet
    events = []
    stream = StreamingForecaster(Forecaster(ONE), state_path=tmp_path / "state.json",
                                 log=events.append, now=lambda: clock["now"])
    hours = recent_hours(3)
    assert stream.observe([1.0], timestamp=hours[0])["accepted"] == 1
    assert stream.observe([2.0], timestamp=253402300799.0)["accepted"] == 2
    assert len([e for e in events if e.get("clock_unset")]) == 1
    clock["now"] = time.time()  # network time arrives
    with pytest.raises(InputValueError, match="in the future"):
        stream.observe([3.0], timestamp=253402300799.0 - HOUR)
    answer = stream.observe([3.0], timestamp=hours[1])
    assert "restarts here" in answer["notice"] and answer["buffered"] == 1
    assert stream.observe([4.0], timestamp=hours[2])["buffered"] == 2
    assert len([e for e in events if e.get("clock_unset")]) == 1
    stream.close()


# --- the state file of the previous model, under the shipped unit's flags -------------------


def unit_serve_flags(state: Path):
    """The options of the shipped unit's ExecStart after `serve MODEL`, with the state
    path moved into the test's folder and host and port left to the test's server."""
    text = UNIT_FILE.read_text()
    match = re.search(r"^ExecStart=(.*?)(?<!\\)$", text, re.MULTILINE | re.DOTALL)
    words = shlex.split(match.group(1).replace("\\\n", " "))
    assert words[1:2] == ["serve"], words
    flags, skip = [], False
    for word in words[3:]:
        if skip:
            skip = False
        elif word in ("--host", "--port"):
            skip = True
        else:
            flags.append(str(state) if word.startswith("/var/lib/") else word)
    return flags


def test_a_state_of_the_previous_model_does_not_stop_the_unit(tmp_path):
    state = tmp_path / "stream-state.json"
    previous = run_cli("stream", THREE, "--state", state, stdin="1,2,3\n4,5,6\n")
    assert previous.returncode == 0, previous.stderr
    before = state.read_bytes()
    flags = unit_serve_flags(state)
    assert "--state" in flags
    with Server(bundled_copy(ONE, tmp_path / "model"), *flags) as server:
        notice = server.wait_event("notice", state_discarded=str(state))
        assert "starting afresh" in notice["message"] and notice["kept_as"].endswith(".discarded")
        assert (tmp_path / "stream-state.json.discarded").read_bytes() == before
        assert observe(server, 10, recent_hours(1)[0])[0] == 200
        assert server.request("GET", "/healthz")[1]["stream"]["accepted"] == 1
    assert json.loads(state.read_text())["inputs"]["features"] == ["PM2.5"]
    record("hostile_stream", unit_flags=" ".join(flags).replace(str(state), "STATE"))
    add_count("hostile_stream", "attacks_mounted")
    add_count("hostile_stream", "attacks_refused")


# --- numbers that overflow, and per-line isolation --------------------------------------------


def test_overflowing_timestamps_are_error_answers_and_the_stream_goes_on(tmp_path):
    lines = [
        '{"value": 5, "timestamp": 1' + "0" * 400 + "}",  # OverflowError in float()
        "-1.7e308,5",
        "1.7e308,6",  # with a 1 ms interval: round(inf) on main
        '{"value": 1' + "0" * 400 + ', "timestamp": 10}',  # a value beyond float: missing
        "20,7",
    ]
    result = run_cli("stream", ONE, "--interval", "0.001", "--state", tmp_path / "state.json",
                     stdin="\n".join(lines) + "\n")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    answers = answers_of(result.stdout)
    assert [a["status"] for a in answers] == ["error", "error", "error", "filling", "filling"]
    assert all("out of range" in a["error"] for a in answers[:3]), answers
    assert answers[-1]["accepted"] == 2
    add_count("hostile_stream", "attacks_mounted", 3)
    add_count("hostile_stream", "attacks_refused", 3)


def test_an_unexpected_fault_on_one_line_is_an_error_answer_not_an_exit(monkeypatch):
    """Whatever escapes the typed errors (here a model that raises) answers that line
    with an error, logs one line without a traceback, and the next line is read."""
    import io

    from edgecast_runtime.cli import stream as stream_command

    model = Forecaster(ONE)
    stream = StreamingForecaster(model)
    calls = {"n": 0}

    def flaky(reading):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ZeroDivisionError("a fault nobody foresaw")
        return {"status": "filling"}

    monkeypatch.setattr(stream, "observe_reading", flaky)
    logged = []
    monkeypatch.setattr(stream_command, "log_event", logged.append)
    sink = io.StringIO()
    stream_command._stream_lines(stream, model, io.BytesIO(b"1\n2\n"), sink, {"busy": False, "stop": False})
    answers = answers_of(sink.getvalue())
    assert answers[0]["status"] == "error" and "ZeroDivisionError" in answers[0]["error"]
    assert answers[1] == {"line": 2, "status": "filling"}
    assert logged == [{"event": "internal_error", "line": 1,
                       "error": "internal error: ZeroDivisionError: a fault nobody foresaw"}]


def test_a_state_file_holding_1e999_is_a_state_error(tmp_path):
    state = tmp_path / "state.json"
    run_cli("stream", ONE, "--state", state, stdin="0,1\n")
    text = state.read_text().replace('"accepted":1', '"accepted":1e999')
    state.write_text(text)
    result = run_cli("stream", ONE, "--state", state, stdin="3600,2\n")
    assert_one_line_error(result, 5, "not a valid state file", "1e999")
    assert state.read_text() == text
    add_count("hostile_stream", "attacks_mounted")
    add_count("hostile_stream", "attacks_refused")


# --- symlinks in the state folder, and private modes ----------------------------------------


def test_a_planted_temporary_file_symlink_never_receives_the_state(tmp_path):
    folder, outside = tmp_path / "state", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    victim = outside / "victim.conf"
    victim.write_text("important = true\n")
    state = folder / "state.json"
    (folder / ".state.json.tmp").symlink_to(victim)  # the older runtime's fixed name
    untouched = snapshot(outside)
    with Background("stream", ONE, "--state", state, stdin=True,
                    preexec_fn=lambda: os.umask(0)) as process:
        for i, stamp in enumerate(recent_hours(5)):
            process.send(f"{stamp},{10 + i}")
            assert process.answer()["accepted"] == i + 1
        assert process.proc.poll() is None
        process.stop()
    assert snapshot(outside) == untouched
    assert not state.is_symlink() and json.loads(state.read_text())["accepted"] == 5
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["state.json", "state.json.lock", "state.json.scores.sqlite"], names
    assert all(private(folder / name) for name in names)
    add_count("hostile_stream", "attacks_mounted")
    add_count("hostile_stream", "attacks_refused")


@pytest.mark.parametrize("link_name", ["state.json", "state.json.lock", "state.json.scores.sqlite"])
def test_a_state_path_that_is_a_symlink_is_refused_at_start(tmp_path, link_name):
    folder, outside = tmp_path / "state", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    elsewhere = outside / "real-state.json"
    run_cli("stream", ONE, "--state", elsewhere, stdin="0,1\n")
    target = outside / link_name.replace("state.json", "real-state.json")
    (folder / link_name).symlink_to(target)
    untouched = snapshot(outside)
    result = run_cli("stream", ONE, "--state", folder / "state.json", stdin="3600,2\n")
    assert_one_line_error(result, 5, "is a symbolic link", link_name)
    assert (folder / link_name).is_symlink() and snapshot(outside) == untouched
    with pytest.raises(AssertionError, match="is a symbolic link") as refused:  # serve too
        Server(ONE, "--state", folder / "state.json", "--poll-interval", "0")
    assert "running=False" in str(refused.value)  # it exited, it did not hang
    add_count("hostile_stream", "attacks_mounted")
    add_count("hostile_stream", "attacks_refused")


def test_score_replays_recorded_past_data(tmp_path):
    """Offline replay of past readings is untouched by the hub-clock check."""
    recorded = tmp_path / "recorded.csv"
    recorded.write_text("timestamp,PM2.5\n" + "".join(
        f"2026-01-01T{h:02d}:00:00Z,{10 + h}\n" for h in range(12)))
    result = run_cli("score", ONE, recorded)
    assert result.returncode == 0, result.stderr
    assert "12 readings (0 refused)" in result.stdout
    record("hostile_stream", console_script=Path(cli_path()).name,
           default_max_future_seconds="interval + 900")
