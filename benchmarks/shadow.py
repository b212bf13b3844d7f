"""A hub with its champion alone against the same hub with a challenger in shadow
(`make bench-shadow`; not part of the test suite). Issue 25, "Done when" 4: with champion
and shadow loaded a hub stays under its unit's memory cap (MemoryMax in
runtime/deploy/edgecast-runtime.service, peak RSS) and its answer latency p99 rises by at
most 1.5x against the champion alone.

Models: two real LSTM bundles trained with `edgecast train` on the Changping file (PM2.5
from PM2.5, TEMP, PRES and DEWP, look-back 24, horizon 24, the trainer's default shape; seeds
1 and 2, `--epochs` epochs) and exported without TFLite, cached in `--models-dir` (trained
again when missing or trained with other settings). The challenger is signed per hub
(`edgecast keys new`, `edgecast sign FLEET`), one bundle folder per hub id.

One Mosquitto on loopback (plain, `set_tcp_nodelay true`; the client sets TCP_NODELAY too,
so back-to-back messages are not held by Nagle's algorithm against delayed ACKs). The two
configurations alternate over fresh hub processes (`.venv-runtime/bin/edgecast-runtime mqtt
--trust --state`, each with its own hub id and folder), in ABBA order:

  alone   the champion only;
  shadow  the champion, and the challenger sent with `edgecast release --shadow`; measured
          once the hub's status says shadow.state "running".

Every hub takes the same gap-free stretch of Changping rows, one simulated hour a reading:

  warm-up  `--warmup` readings back to back (each sent when the previous one is answered):
           the buffer fills and the shadow's scored pairs grow to their retention (8 weeks
           of hourly pairs), the steady state of a hub that has run a challenger for a
           while. The last `--burst-tail` forecasts are reported as "burst" (a backlog
           delivered at once), not judged.
  paced    `--paced` readings, each sent `--gap` s after the previous answer: every reading
           finds the hub idle, as hourly readings do. These latencies are judged.

A paced reading stands for an hour, so the hub's own wall-clock schedule is scaled alike:
the hubs run with `--shadow-report-every` = their default (6 h) x GAP / 1 h, and every 6th
paced reading republishes the status with the shadow's pairs (~630 kB at the retention),
as every 6th hourly reading does on a hub. Such a reading "reports" (its status arrives
before the next reading); the figures say how many did and their latency apart.

Latency: from the publish of a reading to the arrival of its answer at the client (matched
by the answer's `timestamp`; only "forecast" answers count). Peak RSS: the hub's VmHWM at
the end of its set. Scored pairs: the last status's, and the hub's store read after it
stopped. Per configuration, medians over the sets; the ratios shadow/alone with a bootstrap
95 % interval (the sets of each configuration resampled) and the per-pair min-max.
Writes benchmarks/shadow.json, prints a table; exit 1 when a target is missed, the shadow
did not run, or .venv-runtime changed during the run. Every process started is stopped on
the way out (SIGTERM and Ctrl-C included).

    .venv/bin/python benchmarks/shadow.py [--sets 4] [--paced 72] [--gap 0.5] [--retrain] ..."""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import paho.mqtt.client as mqtt
from rollout_fleet import HUB_RUNTIME, REPO, cpu_seconds, load_average, peak_memory_mib
from support.runtime import LOOPBACK, end_process, free_port, mosquitto_binary

from edgecast_runtime.releases.delivery import SHADOW_REPORT_SECONDS
from edgecast_runtime.skill.pairs import DEFAULT_RETENTION_SECONDS

OUT = REPO / "benchmarks" / "shadow.json"
EDGECAST = REPO / ".venv" / "bin" / "edgecast"
RUNTIME_PYTHON = REPO / ".venv-runtime" / "bin" / "python"
UNIT = REPO / "runtime" / "deploy" / "edgecast-runtime.service"
DATA = REPO.parent / "shared" / "data" / "PRSA_Data_Changping_20130301-20170228.csv"
MODELS = Path(tempfile.gettempdir()) / "edgecast-bench-shadow-models"
TARGET, FEATURES = "PM2.5", ("TEMP", "PRES", "DEWP")
LOOK_BACK, HORIZON = 24, 24
SEEDS = {"champion": 1, "challenger": 2}
BEIJING = timezone(timedelta(hours=8))  # the stations' clock (the file's year/month/day/hour)
MAX_P99_RATIO = 1.5
ALONE, SHADOW = "alone", "shadow"
STATUS_TIMES_KEPT = 8  # statuses whose arrival times are kept per hub, for the publish delay


def arguments() -> argparse.Namespace:
    pairs_steady = int(DEFAULT_RETENTION_SECONDS // 3600)  # hourly pairs kept by the hub
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=4, help="fresh hub processes per configuration")
    parser.add_argument("--warmup", type=int, default=LOOK_BACK + HORIZON + pairs_steady + 8,
                        help="readings sent back to back first (default: enough for the pairs' retention)")
    parser.add_argument("--burst-tail", type=int, default=300, help="last warm-up forecasts reported as burst")
    parser.add_argument("--paced", type=int, default=72, help="readings sent one at a time, --gap apart (judged)")
    parser.add_argument("--gap", type=float, default=0.5, help="seconds between an answer and the next reading")
    parser.add_argument("--shadow-report-every", type=float, default=None, metavar="SECONDS",
                        help="the hubs' --shadow-report-every (default: theirs, 6 h, on the simulated clock: "
                        "6 h x GAP / 1 h of wall time, so every 6th paced reading republishes the pairs)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--models-dir", type=Path, default=MODELS, help="trained bundles, kept between runs")
    parser.add_argument("--retrain", action="store_true", help="train and export again even when cached")
    parser.add_argument("--answer-timeout", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0, help="of the bootstrap")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--workdir", type=Path, help="kept afterwards (default: a temporary folder, removed)")
    return parser.parse_args()


def on_signal(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through the finally that stops everything


# --- models ------------------------------------------------------------------------------------


def run_logged(command: list[str], log: Path, timeout: float) -> None:
    with open(log, "ab") as handle:
        handle.write(("$ " + " ".join(command) + "\n").encode())
        handle.flush()
        result = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"{' '.join(command[:3])} ... exited {result.returncode}:\n{tail}")


def train_settings(args: argparse.Namespace, name: str) -> dict:
    stat = args.data.stat()
    return {"data": str(args.data), "data_bytes": stat.st_size, "target": TARGET, "features": list(FEATURES),
            "look_back": LOOK_BACK, "horizon": HORIZON, "epochs": args.epochs, "seed": SEEDS[name]}


def build_models(args: argparse.Namespace) -> dict[str, Path]:
    """The champion and challenger bundles, trained and exported unless cached with the same settings."""
    args.models_dir.mkdir(parents=True, exist_ok=True)
    bundles = {}
    for name in SEEDS:
        bundle, stamp = args.models_dir / name, args.models_dir / f"{name}.settings.json"
        settings = train_settings(args, name)
        cached = (not args.retrain and (bundle / "model.onnx").is_file() and (bundle / "manifest.json").is_file()
                  and stamp.is_file() and json.loads(stamp.read_text()) == settings)
        if not cached:
            stamp.unlink(missing_ok=True)
            shutil.rmtree(bundle, ignore_errors=True)
            began = time.monotonic()
            log = args.models_dir / f"{name}.log"
            log.unlink(missing_ok=True)
            print(f"training {name} (seed {SEEDS[name]}, {args.epochs} epochs) into {bundle}", flush=True)
            run_logged([str(EDGECAST), "train", str(args.data), "--target", TARGET, "--features", ",".join(FEATURES),
                        "--look-back", str(LOOK_BACK), "--horizon", str(HORIZON), "--epochs", str(args.epochs),
                        "--seed", str(SEEDS[name]), "--name", name, "--models-dir", str(args.models_dir)], log, 900)
            run_logged([str(EDGECAST), "export", str(bundle), "--no-tflite"], log, 600)
            stamp.write_text(json.dumps(settings))
            print(f"  {name} trained and exported in {time.monotonic() - began:.0f} s", flush=True)
        else:
            print(f"using the cached {name} bundle {bundle}", flush=True)
        bundles[name] = bundle
    return bundles


def model_figures(bundle: Path) -> dict:
    manifest = json.loads((bundle / "manifest.json").read_text())
    onnx = manifest["artifacts"]["model.onnx"]
    return {"bundle": str(bundle), "sha256": onnx["sha256"], "onnx_bytes": onnx["bytes"], "seed": SEEDS[bundle.name]}


# --- readings ----------------------------------------------------------------------------------


def readings(path: Path, count: int) -> tuple[list[tuple[float, str]], dict]:
    """`count` consecutive rows with all four columns present (the first such stretch), as
    (timestamp, JSON reading) in time order."""
    columns = (TARGET, *FEATURES)
    rows = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            values = [row[name] for name in columns]
            complete = all(value not in ("", "NA") for value in values)
            stamp = datetime(int(row["year"]), int(row["month"]), int(row["day"]), int(row["hour"]),
                             tzinfo=BEIJING).timestamp()
            rows.append((stamp, [float(v) for v in values] if complete else None))
    start = run = 0
    for index, (_, values) in enumerate(rows):
        if values is None:
            start, run = index + 1, 0
            continue
        run += 1
        if run == count:
            break
    else:
        raise RuntimeError(f"{path} has no {count} consecutive complete rows of {', '.join(columns)}")
    chosen = rows[start:start + count]
    texts = [(stamp, json.dumps({"timestamp": stamp, **dict(zip(columns, values))})) for stamp, values in chosen]
    return texts, {"file": path.name, "first_row": start, "rows": count,
                   "first_time": datetime.fromtimestamp(chosen[0][0], BEIJING).isoformat(),
                   "last_time": datetime.fromtimestamp(chosen[-1][0], BEIJING).isoformat()}


# --- the broker and the client -----------------------------------------------------------------


def start_broker(folder: Path) -> tuple[subprocess.Popen, int]:
    binary = mosquitto_binary()
    if binary is None:
        raise SystemExit("mosquitto is not installed: run `bash tests/runtime/setup.sh`")
    port = free_port()
    config = folder / "mosquitto.conf"
    config.write_text(f"listener {port} {LOOPBACK}\nallow_anonymous true\nset_tcp_nodelay true\n")
    with open(folder / "mosquitto.log", "ab") as log:
        process = subprocess.Popen([binary, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mosquitto exited: {(folder / 'mosquitto.log').read_text()[-2000:]}")
        try:
            socket.create_connection((LOOPBACK, port), timeout=0.5).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    end_process(process)
    raise RuntimeError(f"mosquitto did not listen on {port} within 10 s")


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


def order(sets: int) -> list[tuple[str, int]]:
    """ABBA: alone, shadow, shadow, alone, alone, shadow, ... so that a drift of the machine
    over the run weighs on both configurations alike."""
    pattern = []
    for number in range(1, sets + 1):
        pair = [ALONE, SHADOW] if number % 2 else [SHADOW, ALONE]
        pattern += [(config, number) for config in pair]
    return pattern


def runtime_current() -> dict:
    """Whether .venv-runtime (not editable) holds the runtime's current sources, and a digest
    of what it holds (other sessions may reinstall it while the benchmark runs)."""
    installed = next(iter(sorted((REPO / ".venv-runtime" / "lib").glob("python*/site-packages/edgecast_runtime"))),
                     None)
    source = REPO / "runtime" / "edgecast_runtime"
    if installed is None:
        return {"current": False, "differing": ["(not installed)"], "digest": None}
    differing = []
    for path in sorted(source.rglob("*.py")):
        other = installed / path.relative_to(source)
        if not other.is_file() or other.read_bytes() != path.read_bytes():
            differing.append(str(path.relative_to(source)))
    digest = hashlib.sha256()
    for path in sorted(installed.rglob("*.py")):
        digest.update(str(path.relative_to(installed)).encode() + b"\0" + path.read_bytes())
    return {"current": not differing, "differing": differing[:10], "digest": digest.hexdigest()[:16]}


def versions() -> dict:
    found = {"python": platform.python_version()}
    try:
        output = subprocess.run([str(RUNTIME_PYTHON), "-c", "import onnxruntime, numpy, paho.mqtt; "
                                 "print(onnxruntime.__version__, numpy.__version__, paho.mqtt.__version__)"],
                                capture_output=True, text=True, timeout=60).stdout.split()
        found.update(zip(("onnxruntime", "numpy", "paho_mqtt"), output))
    except (OSError, subprocess.TimeoutExpired):
        pass
    binary = mosquitto_binary()
    if binary:
        text = subprocess.run([binary, "-h"], capture_output=True, text=True).stdout
        match = re.search(r"mosquitto version (\S+)", text)
        found["mosquitto"] = match.group(1) if match else None
    return found


def memory_cap_mib() -> float:
    match = re.search(r"^MemoryMax=(\d+)([KMG])\s*$", UNIT.read_text(), re.MULTILINE)
    if not match:
        raise SystemExit(f"no MemoryMax=NUMBER[KMG] in {UNIT}")
    return int(match.group(1)) * {"K": 1 / 1024, "M": 1, "G": 1024}[match.group(2)]


def measure(args: argparse.Namespace, work: Path, figures: dict, report_every: float) -> list[dict]:
    bundles = build_models(args)
    champion_sha = model_figures(bundles["champion"])["sha256"]
    figures["models"] = {name: model_figures(bundle) for name, bundle in bundles.items()}
    rows, figures["data"] = readings(args.data, args.warmup + args.paced)
    run_logged([str(EDGECAST), "keys", "new", str(work / "keys")], work / "keys.log", 120)
    private_key, public_key = work / "keys" / "private.pem", work / "keys" / "public.pem"
    plan = order(args.sets)
    fleet = work / "fleet"
    for config, number in plan:
        if config == SHADOW:
            shutil.copytree(bundles["challenger"], fleet / f"hub-s{number}")
    run_logged([str(EDGECAST), "sign", str(fleet), "--key", str(private_key)], work / "sign.log", 300)

    results, broker, client, hub = [], None, None, None
    try:
        broker, port = start_broker(work)
        client = Client(port)
        figures["machine"]["load_average_measuring_start"] = load_average()
        for position, (config, number) in enumerate(plan, 1):
            name = f"hub-{config[0]}{number}"
            hub = HubRun(name, config, work, bundles["champion"], public_key, port, report_every)
            began = time.monotonic()
            try:
                hub.start(client)
                if config == SHADOW:
                    hub.release_shadow(client, fleet, private_key)
                hub.feed(client, rows, args.warmup, args.burst_tail, args.gap, args.answer_timeout, champion_sha)
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}\n{name} log:\n{hub.log_tail()}") from None
            finally:
                hub.stop()
            result = hub.figures
            result.update(set=number, position=position, seconds=round(time.monotonic() - began, 1),
                          load_average_end=load_average())
            results.append(result)
            paced, burst = result["paced"], result["burst"]
            print(f"  {position}/{len(plan)} {name:7} {config:6}  paced p50 {paced['p50_ms']:7.2f} ms  "
                  f"p99 {paced['p99_ms']:7.2f} ms  burst p50 {burst['p50_ms']:6.2f} p99 {burst['p99_ms']:7.2f}  "
                  f"VmHWM {result.get('peak_rss_mib')} MiB  pairs {result['scored_pairs']}/{result['store_scored_pairs']}  "
                  f"reports {result['paced_reporting']['count']}  "
                  f"{result['seconds']} s  (load {load_average()[0]})", flush=True)
            hub = None
    finally:
        if hub is not None:
            hub.stop()
        if client is not None:
            client.close()
        if broker is not None:
            end_process(broker)
    return results


# --- figures -----------------------------------------------------------------------------------


def summary(results: list[dict], config: str) -> dict:
    chosen = [r for r in results if r["config"] == config]

    def over_sets(values: list) -> dict:
        values = [v for v in values if v is not None]
        return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
                "max": round(max(values), 3)} if values else None

    pooled = [value for r in chosen for value in r["paced_latencies_ms"]]
    return {"sets": len(chosen),
            "paced_p50_ms": over_sets([r["paced"]["p50_ms"] for r in chosen]),
            "paced_p99_ms": over_sets([r["paced"]["p99_ms"] for r in chosen]),
            "paced_pooled": quantiles(pooled),
            "paced_reporting_p50_ms": over_sets([r["paced_reporting"].get("p50_ms") for r in chosen]),
            "paced_not_reporting_p50_ms": over_sets([r["paced_not_reporting"].get("p50_ms") for r in chosen]),
            "paced_reporting_readings": over_sets([r["paced_reporting"]["count"] for r in chosen]),
            "burst_p50_ms": over_sets([r["burst"]["p50_ms"] for r in chosen]),
            "burst_p99_ms": over_sets([r["burst"]["p99_ms"] for r in chosen]),
            "peak_rss_mib": over_sets([r.get("peak_rss_mib") for r in chosen]),
            "cpu_seconds": over_sets([r.get("cpu_seconds") for r in chosen]),
            "status_bytes_at_end": over_sets([r["status_bytes_at_end"] for r in chosen]),
            "status_after_answer_ms_p50": over_sets([(r["status_after_answer_ms"] or {}).get("p50_ms")
                                                     for r in chosen]),
            "scored_pairs_at_end": over_sets([r["scored_pairs"] for r in chosen]),
            "store_scored_pairs": over_sets([r.get("store_scored_pairs") for r in chosen])}


def ratio(results: list[dict], phase: str, key: str, seed: int, resamples: int = 4000) -> dict:
    """shadow/alone of the medians over sets, with a bootstrap 95 % interval (the sets of each
    configuration resampled with replacement) and the min-max of the per-pair ratios (the
    k-th set of one configuration against the k-th of the other: neighbours in the ABBA order)."""
    alone = {r["set"]: r[phase][key] for r in results if r["config"] == ALONE}
    shadow = {r["set"]: r[phase][key] for r in results if r["config"] == SHADOW}
    a, s = np.array(list(alone.values())), np.array(list(shadow.values()))
    generator = np.random.default_rng(seed)
    boots = [np.median(generator.choice(s, len(s))) / np.median(generator.choice(a, len(a)))
             for _ in range(resamples)]
    pairs = [shadow[k] / alone[k] for k in sorted(alone) if k in shadow]
    return {"measure": f"{phase} {key}", "median_shadow_over_median_alone": round(float(np.median(s) / np.median(a)), 3),
            "bootstrap_95": [round(float(np.percentile(boots, 2.5)), 3), round(float(np.percentile(boots, 97.5)), 3)],
            "per_pair": [round(value, 3) for value in pairs],
            "per_pair_min_max": [round(min(pairs), 3), round(max(pairs), 3)] if pairs else None}


def print_table(figures: dict) -> None:
    alone, shadow = figures["summary"][ALONE], figures["summary"][SHADOW]

    def cell(part: dict | None, digits: int = 2) -> str:
        if not part:
            return "–"
        return f"{part['median']:.{digits}f} ({part['min']:.{digits}f}–{part['max']:.{digits}f})"

    ratios = figures["ratios"]
    rows = [("paced answer latency p50, ms", "paced_p50_ms", ratios["paced_p50"]),
            ("paced answer latency p99, ms", "paced_p99_ms", ratios["paced_p99"]),
            ("burst answer latency p50, ms", "burst_p50_ms", ratios["burst_p50"]),
            ("burst answer latency p99, ms", "burst_p99_ms", ratios["burst_p99"]),
            ("hub VmHWM, MiB", "peak_rss_mib", None),
            ("hub CPU s per set", "cpu_seconds", None),
            ("status bytes at the end", "status_bytes_at_end", None),
            ("paced readings that republished the pairs", "paced_reporting_readings", None),
            ("  their latency p50, ms", "paced_reporting_p50_ms", None),
            ("  the other readings' latency p50, ms", "paced_not_reporting_p50_ms", None),
            ("status published after the answer, p50 ms", "status_after_answer_ms_p50", None),
            ("scored pairs: last status / the hub's store", "scored_pairs_at_end", None)]
    print(f"\n{alone['sets']} sets per configuration; medians over the sets (min–max)\n")
    print("| measure | alone | shadow | shadow/alone [bootstrap 95 %] (per pair min–max) |")
    print("| --- | --- | --- | --- |")
    for label, key, found in rows:
        digits = 0 if key in ("status_bytes_at_end", "scored_pairs_at_end", "paced_reporting_readings") else (
            1 if key == "peak_rss_mib" else 2)
        text = "" if found is None else (f"{found['median_shadow_over_median_alone']:.2f}× "
                                         f"[{found['bootstrap_95'][0]:.2f}, {found['bootstrap_95'][1]:.2f}] "
                                         f"({found['per_pair_min_max'][0]:.2f}–{found['per_pair_min_max'][1]:.2f})")
        left, right = cell(alone.get(key), digits), cell(shadow.get(key), digits)
        if key == "scored_pairs_at_end":
            left += f" / {cell(alone.get('store_scored_pairs'), 0)}"
            right += f" / {cell(shadow.get('store_scored_pairs'), 0)}"
        print(f"| {label} | {left} | {right} | {text} |")
    print(f"| paced, all sets pooled: p50 / p99, ms | {alone['paced_pooled']['p50_ms']:.2f} / "
          f"{alone['paced_pooled']['p99_ms']:.2f} | {shadow['paced_pooled']['p50_ms']:.2f} / "
          f"{shadow['paced_pooled']['p99_ms']:.2f} | |")
    print("\n| target | measured | limit | met |\n| --- | --- | --- | --- |")
    for target in figures["targets"]:
        print(f"| {target['name']} | {target['measured']} | {target['limit']} | "
              f"{'yes' if target['met'] else '**no**'} |")


def judge(figures: dict, results: list[dict], cap: float) -> None:
    p99 = figures["ratios"]["paced_p99"]["median_shadow_over_median_alone"]
    peak = max(r.get("peak_rss_mib") or float("inf") for r in results)
    figures["targets"] = [
        {"name": "paced answer latency p99, shadow / alone (medians over sets)", "measured": p99,
         "limit": MAX_P99_RATIO, "met": p99 <= MAX_P99_RATIO},
        {"name": "hub peak RSS (VmHWM), largest of every set, MiB", "measured": peak, "limit": cap, "met": peak < cap}]
    shadow_sets = [r for r in results if r["config"] == SHADOW]
    alone_sets = [r for r in results if r["config"] == ALONE]
    figures["checks"] = {
        "shadow_ran_in_every_shadow_set": all(r["shadow_state_at_end"] == "running" and (r["scored_pairs"] or 0) > 0
                                              and (r.get("store_scored_pairs") or 0) > 0 for r in shadow_sets),
        "no_shadow_in_alone_sets": all(r["shadow_state_at_end"] == "none" and not r.get("store_scored_pairs")
                                       for r in alone_sets),
        "runtime_unchanged_during_the_run": figures["runtime_venv"]["digest"] == figures["runtime_venv"]["digest_at_end"],
        "every_answer_from_the_champion": all(r["answers_not_from_champion"] == 0 for r in results),
        "no_error_answers": all(r["error_answers"] == 0 for r in results),
        "no_hub_exited_early": all(not r.get("exited_before_stop") for r in results)}
    figures["passed"] = all(t["met"] for t in figures["targets"]) and all(figures["checks"].values())


def main() -> int:
    args = arguments()
    signal.signal(signal.SIGTERM, on_signal)
    if not HUB_RUNTIME.exists() or not EDGECAST.exists():
        raise SystemExit("run `make .venv/.installed .venv-runtime/.installed` first")
    if not args.data.is_file():
        raise SystemExit(f"{args.data} not found (the Beijing stations' data; --data FILE)")
    if args.warmup < LOOK_BACK + args.burst_tail or args.paced < 1 or args.sets < 1:
        raise SystemExit("--warmup must cover the look-back and --burst-tail; --paced and --sets at least 1")
    current = runtime_current()
    if not current["current"]:
        print(f"warning: .venv-runtime does not hold the current runtime sources ({', '.join(current['differing'])}): "
              "run `make .venv-runtime/.installed`", file=sys.stderr)
    cap = memory_cap_mib()
    report_every = (SHADOW_REPORT_SECONDS * args.gap / 3600 if args.shadow_report_every is None
                    else args.shadow_report_every)
    started = time.monotonic()
    figures: dict = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                 "load_average_start": load_average(), **versions()},
                     "runtime_venv": current,
                     "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                     "memory_cap_mib": cap, "pairs_retention_hours": DEFAULT_RETENTION_SECONDS / 3600,
                     "hub_shadow_report_every_seconds": round(report_every, 3),
                     "hub_default_shadow_report_every_seconds": SHADOW_REPORT_SECONDS}
    with tempfile.TemporaryDirectory(prefix="edgecast-bench-shadow-") as temporary:
        work = args.workdir or Path(temporary)
        if args.workdir is not None and work.exists() and any(work.iterdir()):
            raise SystemExit(f"--workdir {work} is not empty")
        work.mkdir(parents=True, exist_ok=True)
        try:
            results = measure(args, work, figures, report_every)
        except (RuntimeError, KeyboardInterrupt, subprocess.TimeoutExpired) as exc:
            print(f"shadow benchmark failed: {exc}", file=sys.stderr)
            return 1
    figures["machine"]["load_average_end"] = load_average()
    figures["runtime_venv"]["digest_at_end"] = runtime_current()["digest"]
    figures["summary"] = {config: summary(results, config) for config in (ALONE, SHADOW)}
    figures["ratios"] = {f"{phase}_{q}": ratio(results, phase, f"{q}_ms", args.seed)
                         for phase in ("paced", "burst") for q in ("p50", "p99")}
    judge(figures, results, cap)
    figures["sets"] = results
    figures["harness_seconds"] = round(time.monotonic() - started, 1)
    args.out.write_text(json.dumps(figures, indent=1) + "\n")
    print_table(figures)
    failed = [name for name, ok in figures["checks"].items() if not ok]
    print(f"\n{'PASSED' if figures['passed'] else 'FAILED'}"
          f"{': checks failed: ' + ', '.join(failed) if failed else ''}; "
          f"{figures['harness_seconds']} s; written {args.out}")
    return 0 if figures["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
