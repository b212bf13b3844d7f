"""The closed loop end to end (issue 25), on a real Mosquitto on loopback, through the
command lines a network operator runs:

a station's sensor publishes hourly PM2.5 (simulated hours, sent as fast as the hub
answers) to `edgecast/readings/north`; a hub (`edgecast-runtime mqtt --trust`) forecasts
with a champion trained on the station's earlier history; `edgecast collect` archives the
same readings. A week in, the sensor's gain changes (x4, a recalibration gone wrong that
the network keeps): the champion, which never saw such levels, loses to persistence and
the hub's skill alarm is raised. `edgecast fleet retrain ARCHIVE` then trains a challenger
on the archive's recent (drifted) weeks, signs it and releases it in shadow; it stops
waiting for scored pairs. The hub runs the challenger beside the champion for 200 more
hours (every answer is still the champion's, checked against the champion run apart);
`edgecast fleet status` shows both models' skill and `edgecast fleet promote --dry-run`
the decision; a second `fleet retrain` goes on from its plan, finds enough pairs and
promotes through a canary release; from then on the answers are the challenger's and the
hub's rolling skill recovers (the alarm is cleared)."""
from __future__ import annotations

import json
import queue
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from conftest import hourly_pm25, run_cli
from support.runtime import record
from test_collect import Collector, mqtt_broker  # noqa: F401  (the fixture)

from edgecast.release.signing import new_keys
from edgecast_runtime import Forecaster, StreamingForecaster

STATION = "north"
READINGS, ANSWERS = f"edgecast/readings/{STATION}", f"edgecast/hub/{STATION}/forecasts"
START = pd.Timestamp("2024-01-01", tz="UTC")
PRE_DRIFT, DRIFTED, SHADOWED, AFTER = 7 * 24, 25 * 24, 200, 150
GAIN = 4.0
RUNTIME = Path(sys.executable).parent / "edgecast-runtime"
WAIT = 60.0
TINY = ["--target", "PM2.5", "--look-back", "12", "--horizon", "3", "--units", "8", "--epochs", "10", "--seed", "1"]


def pm25(hours: int, seed: int) -> np.ndarray:
    return hourly_pm25(hours, seed)  # a daily and a weekly cycle, AR(1) noise


class Hub:
    """`edgecast-runtime mqtt --trust` for the station; its JSON log kept in a file."""

    def __init__(self, folder: Path, model: Path, public_key: Path, port: int):
        self.log = folder / "hub.log"
        handle = open(self.log, "wb")
        self.process = subprocess.Popen(
            [str(RUNTIME), "mqtt", str(model), "--broker", f"127.0.0.1:{port}", "--subscribe", READINGS,
             "--publish", ANSWERS, "--state", str(folder / "state.json"), "--trust", str(public_key),
             "--hub-id", STATION, "--client-id", f"hub-{STATION}", "--poll-interval", "0",
             "--skill-alarm-window", "72h", "--skill-checks", "24", "--shadow-report-every", "0"],
            stdout=subprocess.DEVNULL, stderr=handle, start_new_session=True)
        handle.close()

    def events(self, name: str) -> list[dict]:
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                event = json.loads(line)
                if event.get("event") == name:
                    found.append(event)
        return found

    def wait_for(self, name: str) -> dict:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if self.events(name):
                return self.events(name)[-1]
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            time.sleep(0.1)
        raise AssertionError(f"no {name} from the hub: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(15)


class Sensor:
    """Publishes the station's readings one at a time (QoS 1) and takes the hub's answer to
    each; the same readings go through the champion and the challenger run apart."""

    def __init__(self, port: int, values: np.ndarray):
        import paho.mqtt.client as mqtt

        self.values, self.sent = values, 0
        self.answers: queue.Queue = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-sensor", protocol=mqtt.MQTTv5)
        self.client.on_message = lambda client, userdata, message: self.answers.put(json.loads(message.payload))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(ANSWERS, qos=1)
        self.apart: dict[str, StreamingForecaster] = {}

    def follow(self, name: str, model: Path) -> None:
        """Run `model` apart on every reading sent so far and from now on."""
        stream = StreamingForecaster(Forecaster(model))
        for index in range(self.sent):
            stream.observe([float(self.values[index])], self._stamp(index))
        self.apart[name] = stream

    @staticmethod
    def _stamp(index: int) -> int:
        return int(START.timestamp()) + 3600 * index

    def send(self, count: int) -> list[tuple[dict, dict]]:
        """(the hub's answer, {name: the answer of each model run apart}) per reading; the
        readings are sent at once (QoS 1 keeps their order), the answers taken as they come."""
        indices = range(self.sent, self.sent + count)
        infos = [self.client.publish(READINGS, json.dumps({"timestamp": self._stamp(index),
                                                           "PM2.5": float(self.values[index])}), qos=1)
                 for index in indices]
        for info in infos:
            info.wait_for_publish(WAIT)
        found = []
        for index in indices:
            stamp, value = self._stamp(index), float(self.values[index])
            answer = self.answers.get(timeout=WAIT)
            while answer.get("timestamp") != stamp:
                answer = self.answers.get(timeout=WAIT)
            found.append((answer, {name: stream.observe([value], stamp) for name, stream in self.apart.items()}))
        self.sent += count
        return found

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def forecasts(pairs: list[tuple[dict, dict]], name: str | None = None) -> list:
    return [(answer if name is None else apart[name]).get("forecast") for answer, apart in pairs]


def table_rows(stdout: str, first: str) -> list[list[str]]:
    rows = []
    for line in stdout.splitlines():
        cells = [cell.strip() for cell in re.split(r"[│┃|]", line)]
        if len(cells) > 2 and cells[1] == first:
            rows.append(cells[1:-1])
    return rows


def test_drift_raises_the_alarm_and_a_shadowed_challenger_is_promoted_on_evidence(mqtt_broker, tmp_path):  # noqa: F811
    started = time.monotonic()
    history = pd.DataFrame({"timestamp": pd.date_range("2023-11-01", periods=60 * 24, freq="h", tz="UTC")
                           .strftime("%Y-%m-%dT%H:%M:%S+00:00"), "PM2.5": pm25(60 * 24, seed=1)})
    history.to_csv(tmp_path / "north-history.csv", index=False)
    models, keys = tmp_path / "models", new_keys(tmp_path / "keys")
    trained = run_cli("train", tmp_path / "north-history.csv", *TINY, "--models-dir", models, "--name", "champion")
    assert trained.returncode == 0, trained.stdout + trained.stderr
    exported = run_cli("export", models / "champion")
    assert exported.returncode == 0, exported.stdout + exported.stderr
    champion = models / "champion" / "model.onnx"

    total = PRE_DRIFT + DRIFTED + SHADOWED + AFTER
    values = pm25(total, seed=2)
    values[PRE_DRIFT:] = (values[PRE_DRIFT:] * GAIN).round(1)  # the sensor's gain changes
    archive = tmp_path / "archive"
    collector = Collector(mqtt_broker, archive, "--compact-every", "1", log=tmp_path / "collect.log")
    collector.wait_for("mqtt_subscribed")
    hub_dir = tmp_path / "hub"
    hub_dir.mkdir()
    hub = Hub(hub_dir, champion, keys.public, mqtt_broker.port)
    sensor = Sensor(mqtt_broker.port, values)
    broker = ["--broker", f"127.0.0.1:{mqtt_broker.port}"]
    try:
        hub.wait_for("mqtt_subscribed")
        sensor.follow("champion", champion)
        before = sensor.send(PRE_DRIFT)
        assert not hub.events("alarm_raised")
        drifted = sensor.send(DRIFTED)
        raised = [e for e in hub.events("alarm_raised") if e["alarm"] == "skill"]
        assert raised and raised[0]["timestamp"] > sensor._stamp(PRE_DRIFT), hub.events("alarm_raised")
        assert forecasts(before + drifted) == forecasts(before + drifted, "champion")

        # The archive holds every reading (compacted within a second of arriving).
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline and not _archived(archive, PRE_DRIFT + DRIFTED):
            time.sleep(0.2)
        assert _archived(archive, PRE_DRIFT + DRIFTED)

        retrain = ["fleet", "retrain", archive, *TINY, "--workers", "1", "--days", "20", "--models-dir", models,
                   "--name", "weekly", "--key", keys.private, *broker, "--min-pairs", "150", "--canary", "1",
                   "--healthy-seconds", "1", "--hub-timeout", "60"]
        print(f"readings to the alarm: {time.monotonic() - started:.1f} s")
        first = run_cli(*retrain, cwd=tmp_path)
        print(first.stdout, f"first retrain: {time.monotonic() - started:.1f} s")
        assert first.returncode == 0, first.stdout + first.stderr
        assert "round 1" in first.stdout and "shadow: release 1 to 1 hub(s) in shadow" in first.stdout
        assert "still waiting for north (0 of 150 pairs, shadow running)" in first.stdout, first.stdout
        challenger = models / "weekly-r1" / STATION / "model.onnx"
        assert challenger.is_file()
        sensor.follow("challenger", challenger)

        shadowed = sensor.send(SHADOWED)
        assert forecasts(shadowed) == forecasts(shadowed, "champion")  # never the shadow's before promotion
        assert forecasts(shadowed) != forecasts(shadowed, "challenger")

        status = run_cli("fleet", "status", *broker, "--wait", "1")
        assert status.returncode == 0, status.stderr
        assert f"running v1 {Forecaster(challenger).sha256[:12]}, {SHADOWED - 3} pairs scored" in status.stdout
        leads = table_rows(status.stdout, STATION)
        skill = [row for row in leads if len(row) == 8 and row[3] == "72h"]
        assert [row[2] for row in skill] == ["1", "2", "3"] and all(float(row[7]) < 1 for row in skill), status.stdout
        dry = run_cli("fleet", "promote", "--dry-run", "--min-pairs", "150", *broker, "--wait", "1")
        assert table_rows(dry.stdout, STATION)[0][7] == "promote", dry.stdout

        print(status.stdout, dry.stdout, f"shadowed: {time.monotonic() - started:.1f} s")
        second = run_cli(*retrain, "--wait", "30", cwd=tmp_path)
        print(second.stdout, f"second retrain: {time.monotonic() - started:.1f} s")
        assert second.returncode == 0, second.stdout + second.stderr
        for step in ("train", "sign", "shadow"):
            assert f"{step}: done at" in second.stdout  # carried on from the plan, not redone
        assert "promoting on 1 hub(s): north (release 1)" in second.stdout, second.stdout
        assert "challenger promoted on 1 hub(s): north; round 1 finished" in second.stdout

        after = sensor.send(AFTER)
        print(f"after: {time.monotonic() - started:.1f} s")
        assert forecasts(after) == forecasts(after, "challenger")  # the challenger answers now
        cleared = [e for e in hub.events("alarm_cleared") if e["alarm"] == "skill"]
        assert cleared and cleared[-1]["pooled_ratio"] < 1.0, hub.events("alarm_cleared")
        plan = json.loads((models / "weekly.plan.json").read_text())
        assert plan["steps"]["promote"]["promoted"] == [STATION]
    finally:
        sensor.close()
        hub.stop()
        collector.stop()
    record("closed_loop", alarm_raised_hours_after_drift=(raised[0]["timestamp"] - sensor._stamp(PRE_DRIFT)) / 3600,
           alarm_ratio=round(raised[0]["pooled_ratio"], 3), cleared_ratio=round(cleared[-1]["pooled_ratio"], 3),
           seconds=round(time.monotonic() - started, 1))
    shutil.rmtree(tmp_path / "keys", ignore_errors=True)


def _archived(archive: Path, count: int) -> bool:
    from edgecast.archive.partitions import partitions, read_partition

    rows = sum(len(read_partition(path)) for months in partitions(archive).values() for path in months.values())
    return rows >= count


def test_retrain_says_a_bad_key_or_an_empty_archive_in_one_line(tmp_path):
    """Before any training: a key that cannot be read; then an archive without readings."""
    (tmp_path / "archive" / "station=x").mkdir(parents=True)
    keys = new_keys(tmp_path / "keys")
    common = ["fleet", "retrain", tmp_path / "archive", "--target", "PM2.5", "--broker", "127.0.0.1:1",
              "--models-dir", tmp_path / "models"]
    missing = run_cli(*common, "--key", tmp_path / "none.pem")
    assert missing.returncode == 2 and missing.stderr.strip().splitlines() == [
        f"edgecast: error: cannot read the key {tmp_path / 'none.pem'}: No such file or directory"], missing.stderr
    assert not (tmp_path / "models").exists()  # no plan begun
    empty = run_cli(*common, "--key", keys.private)
    lines = empty.stderr.strip().splitlines()
    assert empty.returncode == 2 and len(lines) == 1 and "holds no readings to train on" in lines[0], empty.stderr
