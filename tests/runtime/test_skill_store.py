"""The forecast store under damage and flooding, through the command line: a damaged
store (random bytes, a broken header, a truncated file) is set aside and scoring
starts afresh while the readings state carries on (it used to stop the hub with
exit 5); readings far closer together than the sampling interval leave at most a
bounded number of pending forecasts, the oldest dropped and counted."""

import json
import os

import pytest
from support.runtime import THREE, record, run_cli
from test_skill import START, scores_of, three_lines

from edgecast_runtime.skill.store import ForecastStore, pending_cap, store_path_for


def events(stderr):
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def damage_random(path):
    path.write_bytes(os.urandom(8192))


def damage_header(path):
    data = bytearray(path.read_bytes())
    data[:16] = b"NotSQLite here!\0"
    path.write_bytes(bytes(data))


def damage_truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2 + 100])


@pytest.mark.parametrize("damage", [damage_random, damage_header, damage_truncate])
def test_a_damaged_store_is_set_aside_and_the_stream_carries_on(tmp_path, damage):
    state = tmp_path / "state.json"
    lines = three_lines(80)
    first = run_cli("stream", THREE, "--state", state, stdin="\n".join(lines[:40]) + "\n")
    assert first.returncode == 0, first.stderr
    store = store_path_for(state)
    assert store.stat().st_size > 4096 and not store.with_name(store.name + "-wal").exists()
    damage(store)
    damaged_bytes = store.read_bytes()

    second = run_cli("stream", THREE, "--state", state, stdin="\n".join(lines[40:]) + "\n")
    assert second.returncode == 0, second.stderr  # was exit 5: cannot open the forecast store
    answers = [json.loads(line) for line in second.stdout.splitlines()]
    assert len(answers) == 40 and answers[-1]["accepted"] == 80  # the readings state carried on
    assert answers[0]["status"] == "forecast"  # its buffer too: no refill
    (aside,) = [e for e in events(second.stderr) if e["event"] == "store_set_aside"]
    moved = tmp_path / os.path.basename(aside["moved_to"])
    assert moved.name.startswith("state.json.scores.sqlite.damaged-")
    assert moved.read_bytes() == damaged_bytes  # kept for a look, not deleted
    assert oct(store.stat().st_mode & 0o777) == "0o600"
    rows, counts, _ = scores_of(store)  # a fresh store, scoring the second run's forecasts
    forecasts = sum(answer["status"] == "forecast" for answer in answers)
    # ... and the first run's last forecast, from the state file (the reconciliation at start).
    assert counts["issued"] == forecasts + 1 and counts["scored"] > 20, (counts, forecasts)
    assert min(issued for issued, *_ in rows) >= START + 39 * 60

    third = run_cli("stream", THREE, "--state", state, stdin=lines[-1] + "\n")
    assert third.returncode == 0 and "store_set_aside" not in third.stderr, third.stderr


def test_an_unreadable_store_is_still_an_error_not_set_aside(tmp_path):
    """Damage is set aside; a store the hub cannot reach (a directory in its place) is
    not damage, and stays exit 5 with one line."""
    state = tmp_path / "state.json"
    store_path_for(state).mkdir()
    result = run_cli("stream", THREE, "--state", state, stdin=three_lines(2)[0] + "\n")
    assert result.returncode == 5, result.stderr
    assert "forecast store" in result.stderr and "Traceback" not in result.stderr
    assert store_path_for(state).is_dir()


def test_readings_a_millisecond_apart_leave_a_bounded_number_of_pending_forecasts(tmp_path):
    state = tmp_path / "state.json"
    count = 400
    lines = [f"{START + index / 1000:.3f},{40 + index % 9},{index % 7 - 3},1000" for index in range(count)]
    result = run_cli("stream", THREE, "--state", state, "--grace", "10m",
                     stdin="\n".join(lines) + "\n", timeout=120)
    assert result.returncode == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(answers) == count and answers[-1]["accepted"] == count
    store = ForecastStore(store_path_for(state), 60)
    try:
        counts = store.counts()
    finally:
        store.close()
    cap = pending_cap(3, 60.0, 600.0)  # THREE: horizon 3, interval 60 s
    issued = count - 5  # a forecast at every reading once the six-step buffer is full
    record("skill_store", pending_cap=cap, pending=counts["pending"], dropped=counts["dropped"],
           issued=counts["issued"])
    assert counts["issued"] == issued
    assert counts["pending"] == cap  # was one row per reading: 395
    assert counts["dropped"] == issued - cap - counts["scored"] - counts["expired"]
