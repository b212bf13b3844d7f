"""Forecast skill on the hub: every forecast scored exactly once when its truth
arrives (also across SIGKILL), forecasts without truth expired and counted, rolling
MAE/RMSE against persistence, and the Prometheus metrics of a running `serve`."""

import json
import math
import signal
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.runtime import ONE, THREE, Background, Server, add_count, kill_at_random_points, run_cli

from edgecast_runtime import Forecaster, StreamingForecaster
from edgecast_runtime.readings import Reading
from edgecast_runtime.skill.rolling import SkillSettings, open_scorer
from edgecast_runtime.skill.store import ForecastStore, store_path_for

START = 1_767_225_600  # 2026-01-01T00:00:00Z
MINUTE = 60  # THREE's sampling interval


def three_lines(count=80):
    """THREE's readings every minute, with a missing PM2.5 (the forecasts that need it
    as truth expire) and a 5-minute gap (likewise)."""
    lines, minute = [], 0
    for index in range(count):
        if index == 50:
            minute += 5
        pm25 = "" if index == 30 else f"{40 + 15 * math.sin(index / 4):.2f}"
        lines.append(f"{START + minute * MINUTE},{pm25},{index % 7 - 3},{1000 + index % 5}")
        minute += 1
    return lines


def scores_of(store_path):
    store = ForecastStore(store_path, MINUTE)
    try:
        with store._lock:
            rows = store._db.execute("SELECT issued, lead, model_error, persistence_error "
                                     "FROM scored ORDER BY issued, lead").fetchall()
        return rows, store.counts(), store.pending_issue_times()
    finally:
        store.close()


def test_each_forecast_is_scored_once_and_a_forecast_without_truth_expires(tmp_path):
    model = Forecaster(ONE)  # look_back 4, horizon 1, 3600 s: forecast = mean + 1
    settings = SkillSettings(windows=(86400.0,), grace_seconds=3600.0)
    scorer = open_scorer(model, tmp_path / "s.json", 3600, settings, lambda e: None)
    stream = StreamingForecaster(model, state_path=tmp_path / "s.json", scorer=scorer)
    values = [10, 20, 30, 40, 50, None, 60, 70, 80, 90, 100, 110, 120, 130]
    for hour, value in enumerate(values):
        stream.observe_reading(Reading([math.nan if value is None else float(value)],
                                       START + hour * 3600))
    # The resend of the last reading is a duplicate: it scores nothing again.
    again = stream.observe_reading(Reading([130.0], START + 13 * 3600))
    assert again["duplicate"] is True
    counts = scorer.store.counts()
    # Forecasts at hours 3, 4 (its truth, hour 5, is missing), 9..13 (the buffer refilled).
    assert counts["issued"] == 7
    assert counts["scored"] == 5 and counts["pending"] == 1  # hour 13 waits for hour 14
    assert counts["expired"] == 1  # hour 4's, once hour 4 + 1 h + grace had passed
    row = {r["lead"]: r for r in scorer.table()}[1]
    # Forecast = mean of the last four + 1; truth rises by 10 an hour; persistence = last value.
    # hour 3: mean(10..40) + 1 = 26 vs 50 (-24); hours 9..12: mean + 1 = last - 14 vs last + 10.
    assert row["count"] == 5
    # (the model computes in float32: 1e-4 of 24)
    assert math.isclose(row["model_mae"], 24.0, abs_tol=1e-4)
    assert math.isclose(row["persistence_mae"], 10.0, abs_tol=1e-12)
    assert math.isclose(row["skill_ratio"], 2.4, abs_tol=1e-5)
    stream.close()


def test_replaying_after_a_lost_store_write_neither_loses_nor_double_scores(tmp_path):
    """The state file is written first; a crash before the store's write is repaired
    at start from the state file's last reading (its forecast is not lost)."""
    model = Forecaster(ONE)
    state = tmp_path / "s.json"

    def open_stream():
        scorer = open_scorer(model, state, 3600, SkillSettings(), lambda e: None)
        return StreamingForecaster(model, state_path=state, scorer=scorer), scorer

    stream, scorer = open_stream()
    for hour in range(4):
        stream.observe_reading(Reading([10.0 * hour], START + hour * 3600))
    stream.scorer = None  # the next reading reaches the state file only, as in a crash
    stream.observe_reading(Reading([40.0], START + 4 * 3600))
    stream.close()
    stream, scorer = open_stream()  # reconciles: the forecast made at hour 4 is pending
    assert scorer.store.pending_issue_times() == [START + 4 * 3600]
    stream.observe_reading(Reading([40.0], START + 4 * 3600))  # the producer's resend
    stream.observe_reading(Reading([50.0], START + 5 * 3600))
    counts = scorer.store.counts()
    # Issued at hours 3, 4 and 5; scored: hour 3's (by hour 4, at the reconciliation)
    # and hour 4's (by hour 5), once each.
    assert (counts["issued"], counts["scored"], counts["pending"]) == (3, 2, 1)
    stream.close()


def test_sigkill_at_random_points_loses_no_pending_forecast(tmp_path):
    lines = three_lines()
    grace = ("--grace", "120")
    reference_run = run_cli("stream", THREE, "--state", tmp_path / "reference.json", *grace,
                            stdin="\n".join(lines) + "\n")
    assert reference_run.returncode == 0, reference_run.stderr
    reference = [json.loads(line) for line in reference_run.stdout.splitlines()]
    accepted_after = [answer["accepted"] for answer in reference]
    state = tmp_path / "state.json"

    def acknowledge(process, index):
        process.send(lines[index])
        return process.answer()

    def send_and_kill(process, index, delay):
        process.send(lines[index])
        time.sleep(delay)
        process.proc.send_signal(signal.SIGKILL)
        return None

    acknowledged, kills, in_flight, lost = kill_at_random_points(
        len(lines), lambda: Background("stream", THREE, "--state", state, *grace, stdin=True),
        acknowledge, send_and_kill, seed=15, accepted_after=accepted_after,
        stored_accepted=lambda: json.loads(state.read_text())["accepted"] if state.exists() else 0,
        max_kills=60)
    expected_rows, expected_counts, expected_pending = scores_of(
        store_path_for(tmp_path / "reference.json"))
    rows, counts, pending = scores_of(store_path_for(state))
    add_count("skill", "sigkills", kills)
    add_count("skill", "sigkills_mid_reading", in_flight)
    add_count("skill", "forecasts_scored_after_kills", counts["scored"])
    assert kills >= 20 and lost == 0, (kills, lost)
    assert expected_counts["scored"] > 40 and expected_counts["expired"] > 0, expected_counts
    # Every forecast whose truth arrived is scored, once, with the uninterrupted run's errors.
    assert rows == expected_rows
    assert counts == expected_counts and pending == expected_pending
    assert counts["scored"] == len({issued for issued, *_ in rows})


# Every metric the hub exposes: (type, labels besides the histogram's `le`).
EXPECTED_METRICS = {
    "edgecast_readings": ("counter", set()),
    "edgecast_rejected_readings": ("counter", {"reason", "feature"}),
    "edgecast_forecasts": ("counter", set()),
    "edgecast_forecasts_scored": ("counter", set()),
    "edgecast_forecasts_expired": ("counter", set()),
    "edgecast_forecasts_pending": ("gauge", set()),
    "edgecast_predict_latency_seconds": ("histogram", set()),
    "edgecast_absolute_error": ("histogram", {"lead", "source"}),
    "edgecast_squared_error": ("summary", {"lead", "source"}),
    "edgecast_forecasts_dropped": ("counter", set()),
    "edgecast_skill_ratio": ("gauge", {"lead", "window"}),
    "edgecast_rolling_rmse": ("gauge", {"lead", "window", "source"}),
    "edgecast_rolling_mae": ("gauge", {"lead", "window", "source"}),
    "edgecast_rolling_scored": ("gauge", {"lead", "window"}),
    "edgecast_alarm": ("gauge", {"alarm"}),
    # An Info metric: in the text format, a gauge `edgecast_model_info` of value 1.
    "edgecast_model_info": ("gauge", {"model_name", "sha256", "release"}),
}


def test_metrics_of_a_running_serve_parse_with_prometheus_clients_own_parser(tmp_path):
    with Server(THREE, "--state", tmp_path / "state.json", "--poll-interval", "0") as server:
        for line in three_lines(40):
            stamp, pm25, temp, pres = line.split(",")
            values = [float(pm25) if pm25 else None, float(temp), float(pres)]
            status, answer, _ = server.request("POST", "/v1/observe",
                                               {"values": values, "timestamp": int(stamp)})
            assert status == 200, answer
        status, _, _ = server.request("POST", "/v1/predict", {"window": [[1, 2, 3]] * 6})
        assert status == 200
        connection_status, text, headers = raw_get(server, "/metrics")
        status, summary, _ = server.request("GET", "/v1/metrics")
    assert connection_status == 200 and headers["Content-Type"].startswith("text/plain")
    families = {family.name: family for family in text_string_to_metric_families(text)}
    for name, (kind, labels) in EXPECTED_METRICS.items():
        assert name in families, (name, sorted(families))
        family = families[name]
        assert family.type == kind, (name, family.type)
        assert family.samples, name
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == labels, (name, sample)
    value = {(s.name, tuple(sorted(s.labels.items()))): s.value
             for f in families.values() for s in f.samples}
    assert value[("edgecast_readings_total", ())] == 40
    assert value[("edgecast_rejected_readings_total",
                  (("feature", "PM2.5"), ("reason", "missing")))] == 1
    assert value[("edgecast_predict_latency_seconds_count", ())] >= 2
    scored = value[("edgecast_forecasts_scored_total", ())]
    assert scored > 0
    assert value[("edgecast_absolute_error_count", (("lead", "3"), ("source", "model")))] == scored
    assert value[("edgecast_squared_error_count", (("lead", "3"), ("source", "model")))] == scored
    assert value[("edgecast_model_info", (("model_name", "fixture-three"), ("release", ""),
                  ("sha256", Forecaster(THREE).sha256)))] == 1
    assert status == 200 and summary["readings"] == 40 and summary["forecasts"]["scored"] == scored
    assert {row["window"] for row in summary["skill"]} == {"72h", "30d"}
    assert summary["alarms"] == {"skill": False, "input_drift": False}


def raw_get(server, path):
    import http.client
    connection = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode(), dict(response.getheaders())
    finally:
        connection.close()


def test_mqtt_publishes_the_metrics_summary_on_the_status_topic(broker, tmp_path):
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt (the [mqtt] extra) is missing")
    from test_mqtt import ANSWERS, READINGS, Listener

    statuses = []
    watcher = Listener(broker)  # answers; status messages are collected below
    watcher.client.message_callback_add(
        "hub/status", lambda client, userdata, message: statuses.append(json.loads(message.payload)))
    watcher.client.subscribe("hub/status", qos=1)
    try:
        with Background("mqtt", THREE, "--broker", f"127.0.0.1:{broker.port}",
                        "--subscribe", READINGS, "--publish", ANSWERS, "--state",
                        tmp_path / "state.json", "--client-id", "edgecast-status",
                        "--status-topic", "hub/status", "--status-interval", "0.5") as runtime:
            runtime.wait_event("mqtt_subscribed")
            for line in three_lines(30):
                stamp, pm25, temp, pres = line.split(",")
                watcher.publish({"values": [float(pm25) if pm25 else None, float(temp),
                                            float(pres)], "timestamp": int(stamp)})
                watcher.next()
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not (statuses and statuses[-1]["readings"] == 30):
                time.sleep(0.1)
    finally:
        watcher.close()
    last = statuses[-1]
    assert last["readings"] == 30 and last["model_name"] == "fixture-three"
    assert last["forecasts"]["scored"] > 0 and {row["lead"] for row in last["skill"]} == {1, 2, 3}
    assert last["alarms"] == {"skill": False, "input_drift": False}


def test_a_full_disk_for_the_store_stops_scoring_not_forecasting(tmp_path):
    """RLIMIT_FSIZE (as test_faults.py makes a full disk) lets the store open but not
    grow its log for long: scoring fails with a logged error, forecasts go on."""
    import resource
    import subprocess

    from support.runtime import cli_path

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (128 * 1024, 128 * 1024))

    lines = three_lines(60)
    result = subprocess.run([cli_path(), "stream", str(THREE), "--state", str(tmp_path / "s.json")],
                            input="\n".join(lines) + "\n", capture_output=True, text=True,
                            timeout=60, preexec_fn=limit)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(answers) == 60 and {a["status"] for a in answers} == {"filling", "forecast"}
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    errors = [e for e in events if e.get("event") == "scoring_error"]
    assert errors and "cannot write the forecast store" in errors[0]["error"], events[-3:]
