"""Readings per second through `edgecast collect` (not part of the test suite).

One Mosquitto on loopback (`max_queued_messages 0`; the broker's `max_inflight_messages`
as given, Mosquitto's default 20 and a larger one), one `edgecast collect` process and a
paho publisher sending QoS-1 readings of 10 stations as fast as the broker takes them.
Per round: **live**, the collector connected while the readings are published (first
publish to the last one journaled: fsynced and acknowledged); **backlog**, the readings
published while the collector is down and drained when it starts (the collector's own
`readings_per_second`: journaled / first message to last acknowledgement); then the
shutdown compaction into Parquet (rows, seconds). Medians over the rounds; writes
benchmarks/collect.json and prints it. Every process started is stopped on the way out.

    .venv/bin/python benchmarks/collect.py [--readings 20000] [--rounds 3] [--inflight 20,1000]"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt

REPO = Path(__file__).resolve().parents[1]
EDGECAST = REPO / ".venv" / "bin" / "edgecast"
OUT = REPO / "benchmarks" / "collect.json"
STATIONS = [f"station-{n}" for n in range(10)]
START = 1_451_606_400  # 2016-01-01T00:00Z


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--inflight", default="20,1000", help="the broker's max_inflight_messages values to run")
    parser.add_argument("--out", type=Path, default=OUT)
    return parser.parse_args()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_broker(folder: Path, inflight: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    config = folder / f"mosquitto-{inflight}.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
                      f"max_inflight_messages {inflight}\n")
    broker = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(config)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return broker, port
        except OSError:
            time.sleep(0.05)
    raise SystemExit("mosquitto did not start")


def start_collector(port: int, archive: Path, log: Path) -> subprocess.Popen:
    before = len(events(log, "mqtt_subscribed"))
    with open(log, "ab") as handle:
        process = subprocess.Popen([str(EDGECAST), "collect", "--broker", f"127.0.0.1:{port}", "--archive", str(archive),
                                    "--client-id", "bench-collector", "--compact-every", "3600"],
                                   stdout=subprocess.DEVNULL, stderr=handle, start_new_session=True)
    wait_for(log, "mqtt_subscribed", before)
    return process


def events(log: Path, name: str) -> list[dict]:
    found = []
    for line in log.read_text().splitlines() if log.exists() else []:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == name:
            found.append(event)
    return found


def wait_for(log: Path, name: str, seen: int, timeout: float = 120) -> dict:
    """The next `name` event after the `seen` ones already in the log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = events(log, name)
        if len(found) > seen:
            return found[-1]
        time.sleep(0.02)
    raise SystemExit(f"no {name} within {timeout} s: {log.read_text()[-2000:]}")


def journaled(archive: Path) -> int:
    folder = archive / ".journal"
    return sum(p.read_bytes().count(b"\n") for p in folder.glob("*.jsonl")) if folder.is_dir() else 0


def publish(port: int, count: int, offset: int) -> float:
    """Publish `count` readings with QoS 1, waiting for every PUBACK; seconds taken."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-publisher", protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    started = time.perf_counter()
    infos = []
    for n in range(offset, offset + count):
        station = STATIONS[n % len(STATIONS)]
        body = json.dumps({"timestamp": START + 60 * (n // len(STATIONS)), "PM2.5": float(n % 500), "TEMP": 3.5})
        infos.append(client.publish(f"edgecast/readings/{station}", body, qos=1))
    for info in infos:
        info.wait_for_publish(120)
    seconds = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return seconds


def one_round(port: int, folder: Path, readings: int) -> dict:
    archive, log = folder / "archive", folder / "collect.log"
    shutil.rmtree(archive, ignore_errors=True)
    log.unlink(missing_ok=True)
    collector = start_collector(port, archive, log)
    try:
        started = time.perf_counter()
        publish(port, readings, 0)
        while journaled(archive) < readings:
            time.sleep(0.005)
        live = time.perf_counter() - started
        collector.send_signal(signal.SIGTERM)  # the shutdown compaction of `readings` rows
        collector.wait(300)
        first_stop = events(log, "collect_stopped")[-1]
        publish(port, readings, readings)  # while the collector is down: the broker queues them
        collector = start_collector(port, archive, log)
        while journaled(archive) < readings:
            time.sleep(0.01)
        compaction_started = time.perf_counter()
        collector.send_signal(signal.SIGTERM)
        collector.wait(300)
        shutdown = time.perf_counter() - compaction_started
        stopped = events(log, "collect_stopped")[-1]
    finally:
        if collector.poll() is None:
            collector.kill()
    return {"live_readings_per_second": round(readings / live, 1),
            "live_fsyncs": first_stop["fsyncs"],
            "backlog_readings_per_second": stopped["readings_per_second"],
            "backlog_fsyncs": stopped["fsyncs"],
            "rows_after": stopped["archive"]["added"] + first_stop["archive"]["added"],
            "shutdown_with_compaction_seconds": round(shutdown, 2)}


def main() -> None:
    args = arguments()
    results = {"readings_per_round": args.readings, "rounds": args.rounds, "stations": len(STATIONS),
               "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average": os.getloadavg()},
               "by_max_inflight": {}}
    with tempfile.TemporaryDirectory(prefix="edgecast-bench-collect-") as temporary:
        folder = Path(temporary)
        for inflight in map(int, args.inflight.split(",")):
            broker, port = start_broker(folder, inflight)
            try:
                rounds = [one_round(port, folder, args.readings) for _ in range(args.rounds)]
            finally:
                broker.terminate()
                broker.wait(10)
            assert all(r["rows_after"] == 2 * args.readings for r in rounds), rounds
            medians = {key: statistics.median(r[key] for r in rounds) for key in rounds[0] if key != "rows_after"}
            results["by_max_inflight"][str(inflight)] = {"median": medians, "rounds": rounds}
            print(f"max_inflight_messages {inflight}: {json.dumps(medians)}", flush=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
