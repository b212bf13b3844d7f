"""One hub of benchmarks/shadow.py: an `edgecast-runtime mqtt --trust` process, the client
that feeds it readings and times each answer, its shadow released when the configuration
asks for one, and what it leaves behind (peak memory, CPU, scored pairs in its store)."""

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Callable

import numpy as np
import paho.mqtt.client as mqtt
from rollout_fleet import HUB_RUNTIME, cpu_seconds, peak_memory_mib
from shadow_setup import EDGECAST, run_logged
from support.runtime import LOOPBACK, end_process

STATUS_TIMES_KEPT = 8  # statuses whose arrival times are kept per hub, for the publish delay


class Client:
    """One MQTT session for the whole run: readings out, every hub's answers and retained
    statuses in. Answers are keyed by (hub, timestamp); a status is kept as raw bytes with
    its arrival time and decoded only when asked for, so a large status costs the network
    thread no parsing while an answer may be on its way."""

    def __init__(self, port: int) -> None:
        self.changed = threading.Condition()
        self.answers: dict[tuple[str, float], tuple[float, dict]] = {}
        self.statuses: dict[str, bytes] = {}
        self.status_times: dict[str, list[float]] = {}
        self.status_counts: dict[str, int] = {}
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-shadow-{os.getpid()}")
        self.client.on_message = self._on_message
        self.client.connect(LOOPBACK, port)
        self.client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client.subscribe([("edgecast/hub/+/forecasts", 1), ("edgecast/hub/+/status", 1)])
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_message(self, client: object, userdata: object, message: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        parts = message.topic.split("/")
        hub, kind = parts[2], parts[3]
        with self.changed:
            if kind == "forecasts":
                try:
                    answer = json.loads(message.payload)
                except ValueError:
                    answer = {"status": "not JSON"}
                self.answers[(hub, answer.get("timestamp"))] = (now, answer)
            elif kind == "status":
                self.statuses[hub] = bytes(message.payload)
                self.status_counts[hub] = self.status_counts.get(hub, 0) + 1
                times = self.status_times.setdefault(hub, [])
                times.append(now)
                del times[:-STATUS_TIMES_KEPT]
            self.changed.notify_all()

    def status(self, hub: str) -> dict:
        with self.changed:
            raw = self.statuses.get(hub)
        return json.loads(raw) if raw else {}

    def wait_status(self, hub: str, ready: Callable[[dict], bool], timeout: float, process: subprocess.Popen, what: str) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(hub)
            if status and ready(status):
                return status
            if process.poll() is not None:
                raise RuntimeError(f"{hub} exited ({process.returncode}) before {what}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{hub}: not {what} within {timeout:g} s; last status {json.dumps(status)[:600]}")
            with self.changed:
                self.changed.wait(0.2)

    def ask(self, hub: str, stamp: float, text: str, timeout: float) -> tuple[float, float, dict]:
        """Publish one reading and wait for its answer: (sent at, answered at, answer)."""
        key = (hub, stamp)
        sent = time.perf_counter()
        self.client.publish(f"edgecast/readings/{hub}", text, qos=1)
        with self.changed:
            if not self.changed.wait_for(lambda: key in self.answers, timeout):
                raise RuntimeError(f"{hub}: no answer to the reading of {stamp:.0f} within {timeout:g} s")
            answered, answer = self.answers.pop(key)
        return sent, answered, answer


# --- one hub -----------------------------------------------------------------------------------


def quantiles(values: list[float]) -> dict:
    if not values:
        return {"count": 0}
    array = np.asarray(values)
    return {"count": len(values), "p50_ms": round(float(np.percentile(array, 50)), 3),
            "p99_ms": round(float(np.percentile(array, 99)), 3), "max_ms": round(float(array.max()), 3)}


class HubRun:
    """One fresh hub process through warm-up and paced readings; `figures` once done."""

    def __init__(self, name: str, config: str, work: Path, champion: Path, public_key: Path, port: int,
                 report_every: float) -> None:
        self.name, self.config, self.port = name, config, port
        self.folder = work / "hubs" / name
        self.folder.mkdir(parents=True)
        for file in ("model.onnx", "manifest.json"):
            shutil.copy(champion / file, self.folder / file)
        self.command = [str(HUB_RUNTIME), "mqtt", str(self.folder / "model.onnx"),
                        "--broker", f"{LOOPBACK}:{port}", "--subscribe", f"edgecast/readings/{name}",
                        "--publish", f"edgecast/hub/{name}/forecasts", "--state", str(self.folder / "state.json"),
                        "--trust", str(public_key), "--hub-id", name, "--poll-interval", "0",
                        "--shadow-report-every", f"{report_every:g}s"]
        self.process: subprocess.Popen | None = None
        self.figures: dict = {"hub": name, "config": config}

    def start(self, client: Client) -> None:
        began = time.monotonic()
        with open(self.folder / "hub.log", "ab") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        client.wait_status(self.name, lambda s: s.get("state") == "running", 120, self.process, "running")
        self.figures["start_seconds"] = round(time.monotonic() - began, 2)

    def release_shadow(self, client: Client, fleet: Path, private_key: Path) -> None:
        began = time.monotonic()
        run_logged([str(EDGECAST), "release", str(fleet / self.name), "--shadow", "--version", "1",
                    "--key", str(private_key), "--broker", f"{LOOPBACK}:{self.port}", "--canary", "1",
                    "--healthy-seconds", "1"], self.folder / "release.log", 300)
        status = client.wait_status(self.name, lambda s: (s.get("shadow") or {}).get("state") == "running", 60,
                                    self.process, "running its shadow")
        self.figures["release_seconds"] = round(time.monotonic() - began, 2)
        self.figures["shadow_sha256"] = status["shadow"].get("sha256")

    def feed(self, client: Client, rows: list[tuple[float, str]], warmup: int, burst_tail: int, gap: float,
             timeout: float, champion_sha: str) -> None:
        """The warm-up back to back, then the paced readings. A paced reading "reports" when
        the hub's status arrives between its answer and the next reading: the shadow's pairs
        republished, which the hub does at most every --shadow-report-every."""
        burst, paced, errors, status_delays = [], [], [], []  # paced: [latency ms, reported, row index]
        other_models, last_answered, statuses_before = 0, 0.0, 0

        def reported(since: float, until: float) -> None:
            times = [t for t in client.status_times.get(self.name, []) if since <= t <= until]
            if times and paced and paced[-1][2] == index - 1:
                paced[-1][1] = True
                status_delays.append(1000 * (times[0] - since))

        for index, (stamp, text) in enumerate(rows):
            if index == warmup:
                statuses_before = client.status_counts.get(self.name, 0)
            if index >= warmup:
                time.sleep(gap)
            sent, answered, answer = client.ask(self.name, stamp, text, timeout)
            if index > warmup:
                reported(last_answered, sent)
            status = answer.get("status")
            if answer.get("model_sha256") != champion_sha:
                other_models += 1
            if status == "forecast":
                if index >= warmup:
                    paced.append([1000 * (answered - sent), False, index])
                else:
                    burst.append(1000 * (answered - sent))
            elif status != "filling":
                errors.append(answer)
            last_answered = answered
        time.sleep(1.0)  # the last status publish (throttled to one per 0.5 s)
        index = len(rows)
        reported(last_answered, time.perf_counter())
        status = client.status(self.name)
        shadow = status.get("shadow") or {}
        self.figures.update({
            "answers_not_from_champion": other_models, "error_answers": len(errors), "first_errors": errors[:3],
            "burst": quantiles(burst[-burst_tail:]), "paced": quantiles([p[0] for p in paced]),
            "paced_reporting": quantiles([p[0] for p in paced if p[1]]),
            "paced_not_reporting": quantiles([p[0] for p in paced if not p[1]]),
            "paced_latencies_ms": [round(p[0], 3) for p in paced],
            "statuses_during_paced": client.status_counts.get(self.name, 0) - statuses_before,
            "status_after_answer_ms": quantiles(status_delays) if status_delays else None,
            "status_bytes_at_end": len(client.statuses.get(self.name, b"")),
            "shadow_state_at_end": shadow.get("state"), "shadow_reason": shadow.get("reason"),
            "scored_pairs": shadow.get("scored_pairs"), "pending_pairs": shadow.get("pending_pairs")})
        if self.process.poll() is None:
            self.figures["peak_rss_mib"] = round(peak_memory_mib(self.process.pid), 1)
            self.figures["cpu_seconds"] = cpu_seconds(self.process.pid)

    def stop(self) -> None:
        if self.process is not None:
            alive = self.process.poll() is None
            end_process(self.process, timeout=20)
            self.figures["exited_before_stop"] = not alive
            self.figures["exit_code"] = self.process.returncode
            self.figures["store_scored_pairs"] = store_pairs(self.folder / "state.json.scores.sqlite")

    def log_tail(self, lines: int = 5) -> str:
        path = self.folder / "hub.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def store_pairs(path: Path) -> int | None:
    """Champion-shadow pairs scored in a stopped hub's forecast store (skill/pairs.py)."""
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            return db.execute("SELECT COUNT(DISTINCT issued) FROM shadow_scored").fetchone()[0]
    except sqlite3.Error:
        return None


# --- the run -----------------------------------------------------------------------------------


