"""`edgecast collect` against a real Mosquitto on loopback (tests/support/runtime.py's
Broker, with no cap on the messages it queues for a session), and `edgecast fleet train
ARCHIVE --since --until` on what it archived.

Readings are published by a paho client in the test with QoS 1; a reading counts as
acknowledged when the publisher got the broker's PUBACK for it. The SIGKILL test kills the
collector at random points (during start-up compaction, while connecting, mid-batch,
mid-compaction) while the publisher keeps sending, restarts it each time, and finally
checks that every acknowledged reading is in the archive exactly once. Its figures are
printed (-s) and recorded in support.runtime.FIGURES. The control, tried by hand: a
collector that sends the PUBACK on receipt, before the journal's fsync, loses 692 of
28,236 acknowledged readings in this test (the run fails)."""
from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from conftest import EDGECAST, hourly_frame, run_cli
from support.broker import secure_broker  # noqa: F401  (the fixture)
from support.runtime import Broker, mosquitto_binary, record

from edgecast.archive.partitions import partitions
from edgecast.archive.payloads import ArchivedReading
from edgecast.archive.reading import read_station

CLIENT_ID = "edgecast-collect-test"  # stable: the broker keeps the session across restarts
WAIT = 60.0


@pytest.fixture
def mqtt_broker(tmp_path):
    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed (tests/runtime/setup.sh installs it)")
    folder = tmp_path / "broker"
    folder.mkdir()
    broker = Broker(folder)
    # The default keeps 1000 messages per offline session and drops the rest (with a PUBACK to the
    # publisher): a collector's broker must keep them all (README: "The readings archive").
    with open(broker.config, "a") as config:
        config.write("max_queued_messages 0\n")
    try:
        yield broker.start()
    finally:
        broker.stop()


class Collector:
    """An `edgecast collect` process; its JSON-lines log in `log`."""

    def __init__(self, broker: Broker, archive: Path, *extra: str, log: Path):
        self.log = log
        handle = open(log, "ab")
        try:
            self.process = subprocess.Popen(
                [str(EDGECAST), "collect", "--broker", f"127.0.0.1:{broker.port}", "--archive", str(archive),
                 "--client-id", CLIENT_ID, *extra],
                stdout=subprocess.DEVNULL, stderr=handle, start_new_session=True)
        finally:
            handle.close()
        self.started = len(self.events())  # events of earlier processes sharing the log

    def events(self, name: str | None = None) -> list[dict]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        events = []
        for line in lines:
            try:
                events.append(json.loads(line))
            except ValueError:
                continue  # a line cut by SIGKILL
        return [e for e in events if name is None or e.get("event") == name]

    def wait_for(self, name: str, timeout: float = WAIT) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.events()[self.started:] if e.get("event") == name]
            if found:
                return found[-1]
            assert self.process.poll() is None, f"collect exited: {self.log.read_text()[-3000:]}"
            time.sleep(0.05)
        raise AssertionError(f"no {name} event within {timeout} s: {self.log.read_text()[-3000:]}")

    def stop(self) -> dict:
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(WAIT) == 0, self.log.read_text()[-3000:]
        return self.wait_for("collect_stopped", 1)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(WAIT)


class Publisher:
    """A paho client publishing readings with QoS 1; `acknowledged()` the keys the broker PUBACKed."""

    def __init__(self, broker: Broker):
        import paho.mqtt.client as mqtt

        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-publisher", protocol=mqtt.MQTTv5)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        self.sent: list = []  # (MQTTMessageInfo, key)

    def publish(self, station: str, seconds: int, values: dict, payload: bytes | None = None) -> None:
        body = payload if payload is not None else json.dumps({"timestamp": seconds, **values}).encode()
        info = self.client.publish(f"edgecast/readings/{station}", body, qos=1)
        self.sent.append((info, (station, seconds * 1000)))

    def acknowledged(self, timeout: float = WAIT) -> set:
        for info, _ in self.sent:
            info.wait_for_publish(timeout)
        return {key for info, key in self.sent if info.is_published()}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def archive_rows(archive: Path) -> Counter:
    """(station, milliseconds) -> rows in the archive."""
    rows = Counter()
    for station in partitions(archive):
        frame = read_station(archive, station)
        rows.update((station, int(t.value // 1_000_000)) for t in frame["timestamp"])
    return rows


def test_readings_land_by_station_and_month_once_whatever_repeats(mqtt_broker, tmp_path):
    archive, log = tmp_path / "archive", tmp_path / "collect.log"
    collector = Collector(mqtt_broker, archive, "--compact-every", "0.5", log=log)
    collector.wait_for("mqtt_subscribed")
    publisher = Publisher(mqtt_broker)
    start = int(datetime(2016, 1, 31, 20, tzinfo=timezone.utc).timestamp())  # 8 hours cross into February
    stations = ("Changping", "dongsi", "guanyuan")
    for hour in range(8):
        for number, station in enumerate(stations):
            publisher.publish(station, start + 3600 * hour, {"PM2.5": 10.0 * number + hour, "TEMP": -2.5})
    publisher.publish("dongsi", start, {"PM2.5": 10.0, "TEMP": -2.5})  # an exact duplicate
    publisher.publish("dongsi", start + 3600, {"PM2.5": 99.0, "TEMP": -2.5})  # a correction: last write wins
    publisher.publish("guanyuan", start, {}, payload=b"PM2.5=12")  # not a reading
    publisher.publish("guanyuan", start, {}, payload=json.dumps({"PM2.5": 1}).encode())  # no timestamp
    publisher.publish("guanyuan", start, {}, payload=json.dumps({"timestamp": start, "PM2.5": "high"}).encode())
    publisher.publish("changping", start, {}, payload=json.dumps(  # another station's reading on this topic
        {"station": "dongsi", "timestamp": start, "PM2.5": 1}).encode())
    assert len(publisher.acknowledged()) == len({key for _, key in publisher.sent})
    publisher.close()
    deadline = time.monotonic() + WAIT
    while sum(archive_rows(archive).values()) < 24 and time.monotonic() < deadline:
        time.sleep(0.1)
    stopped = collector.stop()

    assert sorted(partitions(archive)) == ["changping", "dongsi", "guanyuan"]  # ids as the trainer spells them
    for station in partitions(archive):
        assert sorted(partitions(archive)[station]) == ["2016-01", "2016-02"]
        assert (archive / f"station={station}" / "month=2016-01" / "readings.parquet").is_file()
    rows = archive_rows(archive)
    assert len(rows) == 24 and set(rows.values()) == {1}, rows
    dongsi = read_station(archive, "dongsi").set_index("timestamp")
    assert dongsi["PM2.5"].tolist() == [10.0, 99.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0]
    assert str(dongsi.index[0]) == "2016-01-31 20:00:00+00:00"
    assert stopped["bad"] == 4 and stopped["received"] == 30, stopped
    assert stopped["archive"]["duplicates"] == 1 and stopped["archive"]["replaced"] == 1, stopped
    refused = [e["error"] for e in collector.events("reading_refused")]
    assert any("not a JSON reading" in e for e in refused) and any("no timestamp" in e for e in refused)
    assert any("'high' is not a number" in e for e in refused)
    assert any("is not the topic's" in e for e in refused), refused
    assert "Traceback" not in log.read_text()
    # pyarrow reads the layout as a hive-partitioned dataset, station and month as columns.
    import pyarrow.dataset as ds

    table = ds.dataset(archive, format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 24 and {"station", "month", "timestamp", "PM2.5"} <= set(table.column_names)


def test_retention_removes_whole_old_months_and_refuses_bad_options(mqtt_broker, tmp_path):
    archive, log = tmp_path / "archive", tmp_path / "collect.log"
    now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    old = now - timedelta(days=3 * 365)
    collector = Collector(mqtt_broker, archive, log=log)
    collector.wait_for("mqtt_subscribed")
    publisher = Publisher(mqtt_broker)
    for moment in (old, old + timedelta(hours=1), now):
        publisher.publish("hub-1", int(moment.timestamp()), {"PM2.5": 5.0})
    publisher.acknowledged()
    time.sleep(1.0)
    collector.stop()
    assert sorted(partitions(archive)["hub-1"]) == sorted({f"{old:%Y-%m}", f"{now:%Y-%m}"})

    collector = Collector(mqtt_broker, archive, "--retention", "400d", log=log)
    collector.wait_for("mqtt_subscribed")
    publisher.publish("hub-1", int((old + timedelta(hours=2)).timestamp()), {"PM2.5": 6.0})  # past retention
    publisher.publish("hub-1", int((now - timedelta(hours=1)).timestamp()), {"PM2.5": 7.0})
    publisher.acknowledged()
    publisher.close()
    time.sleep(1.0)
    stopped = collector.stop()
    assert sorted(partitions(archive)["hub-1"]) == [f"{now:%Y-%m}"] or \
        sorted(partitions(archive)["hub-1"]) == sorted({f"{now - timedelta(hours=1):%Y-%m}", f"{now:%Y-%m}"})
    removed = [m for e in collector.events("compacted") for m in e["months_removed"]]
    assert f"hub-1/{old:%Y-%m}" in removed, collector.events("compacted")
    assert stopped["archive"]["expired"] == 1, stopped
    assert not list(archive.glob(".removing-*"))

    for extra, fragment in ((["--retention", "fortnight"], "--retention: duration 'fortnight'"),
                            (["--retention", "0d"], "--retention must be positive")):
        result = run_cli("collect", "--broker", f"127.0.0.1:{mqtt_broker.port}", "--archive", archive, *extra)
        assert result.returncode == 2 and fragment in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    nobody = run_cli("collect", "--broker", "127.0.0.1:1", "--archive", tmp_path / "other")
    assert nobody.returncode == 2 and "cannot connect to the broker 127.0.0.1:1" in nobody.stderr, nobody.stderr
    assert len(nobody.stderr.strip().splitlines()) == 1


def test_collect_logs_in_with_a_password_over_tls_and_says_what_is_missing(secure_broker, tmp_path):  # noqa: F811
    import paho.mqtt.client as mqtt

    archive, log = tmp_path / "archive", tmp_path / "collect.log"
    broker = f"127.0.0.1:{secure_broker.operator_port}"
    login = ["--username", "operator", "--password-file", secure_broker.password_file("operator")]
    plain = run_cli("collect", "--broker", broker, "--archive", archive, *login, timeout=120)
    assert plain.returncode == 2 and "the port speaks TLS" in plain.stderr and "--ca-file" in plain.stderr, plain.stderr
    assert len(plain.stderr.strip().splitlines()) == 1
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-it\n")
    refused = run_cli("collect", "--broker", broker, "--archive", archive, "--username", "operator",
                      "--password-file", wrong, "--ca-file", secure_broker.ca_file, timeout=120)
    assert refused.returncode == 2 and "refused the connection" in refused.stderr, refused.stderr

    args = ["collect", "--broker", broker, "--archive", str(archive), *map(str, login),
            "--ca-file", str(secure_broker.ca_file), "--client-id", "collector"]
    with open(log, "wb") as handle:
        process = subprocess.Popen([str(EDGECAST), *args], stderr=handle, start_new_session=True)
    try:
        deadline = time.monotonic() + WAIT
        while "mqtt_subscribed" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        hub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="hub-1", protocol=mqtt.MQTTv5)
        hub.username_pw_set("hub-1", "hub-1-secret")
        hub.tls_set(ca_certs=str(secure_broker.ca_file))
        hub.connect("127.0.0.1", secure_broker.port)
        hub.loop_start()
        hub.publish("edgecast/readings/hub-1", json.dumps({"timestamp": 1451606400, "PM2.5": 8.0}),
                    qos=1).wait_for_publish(WAIT)
        hub.disconnect()
        hub.loop_stop()
        while not (archive / ".journal").is_dir() or not any(p.stat().st_size for p in (archive / ".journal").iterdir()):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(WAIT) == 0, log.read_text()
    assert read_station(archive, "hub-1")["PM2.5"].tolist() == [8.0]


def test_a_killed_runs_journal_is_compacted_at_start_and_its_torn_last_line_dropped(mqtt_broker, tmp_path):
    archive, log = tmp_path / "archive", tmp_path / "collect.log"
    journal = archive / ".journal"
    journal.mkdir(parents=True)
    lines = [ArchivedReading("alpha", 1_451_606_400_000 + 3_600_000 * hour, {"PM2.5": 3.0 + hour}).journal_line()
             for hour in range(3)]
    (journal / "0000000007.jsonl").write_bytes(b"".join(lines[:2]))
    (journal / "0000000008.jsonl").write_bytes(lines[2] + lines[2][:15])  # a write cut by SIGKILL
    collector = Collector(mqtt_broker, archive, log=log)
    collector.wait_for("collect_started")
    stopped = collector.stop()
    assert stopped["archive"]["readings"] == 3 and stopped["archive"]["torn"] == 1, stopped
    assert read_station(archive, "alpha")["PM2.5"].tolist() == [3.0, 4.0, 5.0]
    assert not list(journal.iterdir())


def test_sigkill_at_random_points_loses_and_duplicates_no_acknowledged_reading(mqtt_broker, tmp_path):
    archive, log = tmp_path / "archive", tmp_path / "collect.log"
    rng = random.Random(25)
    start = int(datetime(2016, 2, 29, 12, tzinfo=timezone.utc).timestamp())  # minutes crossing into March
    publisher = Publisher(mqtt_broker)
    # The session (and its subscription) must exist before the first reading, or the broker has no queue for it.
    first = Collector(mqtt_broker, archive, log=log)
    first.wait_for("mqtt_subscribed")
    first.kill()
    stop_publishing = threading.Event()

    def publish() -> None:
        minute = 0
        while not stop_publishing.is_set():
            for station in ("alpha", "beta"):
                publisher.publish(station, start + 60 * minute, {"PM2.5": float(minute % 97), "TEMP": 1.5})
            minute += 1
            time.sleep(0.004)

    sender = threading.Thread(target=publish, daemon=True)
    sender.start()
    kills, killed_after, while_collecting = 0, [], 0
    started = time.monotonic()
    try:
        while kills < 22:
            collector = Collector(mqtt_broker, archive, "--compact-every", "0.3", log=log)
            if rng.random() < 0.25:  # during start-up: imports, the start-up compaction, connecting
                delay = rng.uniform(0.2, 3.0)
            else:  # collecting: mid-batch, mid-fsync, mid-acknowledgement, mid-compaction (every 0.3 s)
                collector.wait_for("mqtt_connected")
                delay = rng.uniform(0.0, 1.5)
                while_collecting += 1
            time.sleep(delay)
            collector.kill()
            kills += 1
            killed_after.append(round(delay, 2))
    finally:
        stop_publishing.set()
        sender.join()
    acknowledged = publisher.acknowledged()
    publisher.close()
    kill_seconds = time.monotonic() - started

    final = Collector(mqtt_broker, archive, "--compact-every", "0.5", log=log)
    deadline = time.monotonic() + 120
    rows = archive_rows(archive)
    while not acknowledged <= set(rows) and time.monotonic() < deadline:
        time.sleep(0.5)
        rows = archive_rows(archive)
    stopped = final.stop()
    rows = archive_rows(archive)
    lost = acknowledged - set(rows)
    duplicated = {key: n for key, n in rows.items() if n > 1}
    compactions = final.events("compacted")
    redelivered = sum(e["duplicates"] for e in compactions)
    torn = sum(e["torn"] for e in compactions)
    figures = {"sigkills": kills, "killed_while_collecting": while_collecting,
               "kill_after_seconds (start or connection)": killed_after, "published": len(publisher.sent),
               "acknowledged_by_broker": len(acknowledged), "archived": len(rows), "lost": len(lost),
               "duplicate_rows": len(duplicated), "journaled_twice_one_row": redelivered,
               "torn_journal_lines": torn, "seconds_under_kills": round(kill_seconds, 1),
               "drain_readings_per_second": stopped["readings_per_second"]}
    record("collect SIGKILL", **figures)
    print("collect SIGKILL figures:", json.dumps(figures))
    assert not lost, sorted(lost)[:10]
    assert not duplicated, list(duplicated.items())[:10]
    assert kills >= 20 and while_collecting >= 10 and len(acknowledged) > 2000, figures
    assert set(partitions(archive)["alpha"]) == {"2016-02", "2016-03"}  # 720 minutes to March: 1,440 readings
    assert "Traceback" not in log.read_text()


def test_fleet_trains_on_an_archived_window(mqtt_broker, tmp_path):
    archive, log = tmp_path / "archive", tmp_path / "collect.log"
    collector = Collector(mqtt_broker, archive, log=log)
    collector.wait_for("mqtt_subscribed")
    publisher = Publisher(mqtt_broker)
    for seed, station in enumerate(("north", "south")):
        frame = hourly_frame(hours=400, seed=seed)  # from 2024-01-01 00:00 (UTC here)
        times = pd.to_datetime(frame[["year", "month", "day", "hour"]]).dt.tz_localize("UTC")
        for moment, pm, temp in zip(times, frame["PM2.5"], frame["TEMP"]):
            publisher.publish(station, int(moment.timestamp()), {"PM2.5": pm, "TEMP": temp})
    publisher.acknowledged()
    publisher.close()
    deadline = time.monotonic() + WAIT
    while _journaled(archive) < 800 and time.monotonic() < deadline:
        time.sleep(0.2)
    collector.stop()

    models = tmp_path / "models"
    tiny = ["--target", "PM2.5", "--features", "TEMP", "--look-back", "6", "--horizon", "2", "--units", "4",
            "--epochs", "2", "--batch-size", "32", "--seed", "3", "--workers", "1"]
    result = run_cli("fleet", "train", archive, "--since", "2024-01-02", "--until", "2024-01-14", *tiny,
                     "--models-dir", models, "--name", "archived", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 trained, 0 skipped, 0 failed of 2 stations" in result.stdout
    for station in ("north", "south"):
        assert (models / "archived" / station / "metrics.json").is_file()
        exported = pd.read_csv(models / "archived" / ".archive" / "1" / f"{station}.csv")
        assert len(exported) == 12 * 24  # the window: 2024-01-02 inclusive to 2024-01-14 exclusive
        assert exported["timestamp"].iloc[0] == "2024-01-02T00:00:00+00:00"
    again = run_cli("fleet", "train", archive, "--since", "2024-01-02", "--until", "2024-01-14", *tiny,
                    "--models-dir", models, "--name", "archived", cwd=tmp_path)
    assert "0 trained, 2 skipped" in again.stdout, again.stdout + again.stderr  # same window, same data

    empty = run_cli("fleet", "train", archive, "--since", "2030-01-01", *tiny, "--models-dir", models, cwd=tmp_path)
    assert empty.returncode == 2, empty.stderr
    assert "no readings in the archive within --since 2030-01-01 00:00 UTC (2 station(s))" in empty.stderr
    assert len(empty.stderr.strip().splitlines()) == 1 and "Traceback" not in empty.stderr
    backwards = run_cli("fleet", "train", archive, "--since", "2024-02-01", "--until", "2024-01-01", *tiny,
                        "--models-dir", models, cwd=tmp_path)
    assert backwards.returncode == 2 and "--since 2024-02-01 is not before --until 2024-01-01" in backwards.stderr
    one = [t for t in tiny if t not in ("--workers", "1")]
    single = run_cli("train", archive / "station=south", "--since", "2024-01-03", "--until", "2024-01-15", *one,
                     "--models-dir", models, cwd=tmp_path)
    assert single.returncode == 0, single.stdout + single.stderr
    assert (models / "south" / "metrics.json").is_file()
    assert len(pd.read_csv(models / ".archive" / "south.csv")) == 12 * 24
    whole = run_cli("train", archive, *one, "--models-dir", models, cwd=tmp_path)
    assert whole.returncode == 2 and "is an archive of 2 station(s) (north, south); train one" in whole.stderr
    assert len(whole.stderr.strip().splitlines()) == 1, whole.stderr
    csv = tmp_path / "plain.csv"
    hourly_frame(hours=50).to_csv(csv, index=False)
    plain = run_cli("fleet", "train", csv, "--since", "2024-01-01", *tiny, "--models-dir", models, cwd=tmp_path)
    assert plain.returncode == 2 and "select a time range of an archive" in plain.stderr, plain.stderr


def _journaled(archive: Path) -> int:
    """Readings in the archive's journal files and partitions so far."""
    journal = sum(len(p.read_bytes().splitlines()) for p in (archive / ".journal").glob("*.jsonl")) \
        if (archive / ".journal").is_dir() else 0
    return journal + sum(archive_rows(archive).values())

