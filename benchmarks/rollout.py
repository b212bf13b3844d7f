"""Fifty hubs through one rollout (`make bench-rollout`; not part of the test suite).

One Mosquitto on loopback (password file, ACL, TLS; every hub its own user), N
`edgecast-runtime mqtt --trust` hubs from .venv-runtime started in batches on the v1
fixture model, a feeder that sends each hub readings at a steady rate and checks every
answer, then `edgecast release` of signed v2 bundles with a canary. Measured: time to
roll out, failed answers, broker and hub peak memory (VmHWM), the bytes the broker
carried ($SYS counters and its socket I/O), CPU time and the load average. Writes
benchmarks/rollout.json and prints the figures; exit 1 when the rollout did not finish
with 0 failed answers and every hub on v2. Every process started is stopped on the way
out, whatever happened (SIGTERM and Ctrl-C included).

    .venv/bin/python benchmarks/rollout.py [--hubs 50] [--batch 5] [--rate 1] ..."""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import rollout_fleet as fleet_mod
from rollout_feeder import Feeder
from rollout_fleet import REPO, Fleet, bundle_bytes, hub_names, load_average, make_bundles, operator_options

from edgecast.release.broker import BrokerSettings
from edgecast.release.rollout import canary_count as release_canary_count
from edgecast.release.rollout import parse_canary
from edgecast.release.signing import new_keys
from edgecast_runtime.manifest import file_sha256

OUT = REPO / "benchmarks" / "rollout.json"
EDGECAST = REPO / ".venv" / "bin" / "edgecast"
VERSION = 2


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hubs", type=int, default=50)
    parser.add_argument("--batch", type=int, default=5, help="hubs started at a time")
    parser.add_argument("--rate", type=float, default=1.0, help="readings per hub per second")
    parser.add_argument("--deadline", type=float, default=10.0, help="seconds within which a reading must be answered")
    parser.add_argument("--baseline", type=float, default=30.0, help="seconds of readings before the release")
    parser.add_argument("--after", type=float, default=15.0, help="seconds of readings after the last hub is on v2")
    parser.add_argument("--canary", default="10%")
    parser.add_argument("--healthy-seconds", type=float, default=10.0)
    parser.add_argument("--hub-timeout", type=float, default=900.0)
    parser.add_argument("--start-timeout", type=float, default=300.0, help="seconds for a batch of hubs to run")
    parser.add_argument("--restart", type=int, default=5, help="hubs restarted at the end, to measure a reconnect")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--workdir", type=Path, help="kept afterwards (default: a temporary folder, removed)")
    return parser.parse_args()


def on_signal(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through the finally that stops everything


def healthy(status: dict, sha: str) -> bool:
    return status.get("version") == VERSION and status.get("state") == "running" and status.get("sha256") == sha


def record_version(record: bytes) -> int | None:
    try:
        return json.loads(record)["signed"]["version"]
    except (ValueError, KeyError, TypeError):
        return None


class Rollout:
    """`edgecast release` in a child process, followed through the hubs' statuses: when
    each hub's record arrived and when it first reported v2 healthy."""

    def __init__(self, feeder: Feeder, names: list[str], v2_sha: str, log_path: Path):
        self.feeder, self.names, self.v2_sha, self.log_path = feeder, names, v2_sha, log_path
        self.record_at: dict[str, float] = {}
        self.healthy_at: dict[str, float] = {}

    def follow(self) -> None:
        now = time.monotonic()
        for hub, record in self.feeder.session.records.items():
            if hub not in self.record_at and record_version(record) == VERSION:
                self.record_at[hub] = now
        for hub, status in self.feeder.session.statuses.items():
            if hub not in self.healthy_at and healthy(status, self.v2_sha):
                self.healthy_at[hub] = now

    def run(self, command: list[str], timeout: float) -> dict:
        """Runs `command`, following the statuses; its CPU time is what this process's
        waited-for children used meanwhile (the hubs are not waited for until the end)."""
        children_before = children_cpu()
        self.began = time.monotonic()
        with open(self.log_path, "wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                while process.poll() is None and time.monotonic() - self.began < timeout:
                    self.follow()
                    self.feeder.session.wait_for_change(0.1)
            finally:
                if process.poll() is None:
                    process.kill()
                process.wait()
        self.ended = time.monotonic()
        while len(self.healthy_at) < len(self.names) and time.monotonic() - self.ended < 60:
            self.follow()  # a status the command saw last may reach this session a moment later
            self.feeder.session.wait_for_change(0.1)
        return {"exit_code": process.returncode, "seconds": round(self.ended - self.began, 2),
                "cpu_seconds": round(children_cpu() - children_before, 2),
                "output": self.log_path.read_text(errors="replace").strip().splitlines()[-5:]}

    def figures(self, canaries: int) -> dict:
        first_record = min(self.record_at.values(), default=None)
        last = max(self.healthy_at.values(), default=None)
        order = sorted(self.healthy_at, key=self.healthy_at.get)
        canary_done = max((self.healthy_at[hub] for hub in order[:canaries]), default=None)
        records = sorted(self.record_at.values())
        rest_records = records[canaries:]
        spans = [self.healthy_at[hub] - self.record_at[hub] for hub in self.healthy_at if hub in self.record_at]
        per_hub = {"median": round(statistics.median(spans), 2), "max": round(max(spans), 2)} if spans else None

        def since(moment: float | None, start: float | None) -> float | None:
            return None if moment is None or start is None else round(moment - start, 2)

        return {"hubs_on_v2": len(self.healthy_at),
                "seconds_command_start_to_last_healthy": since(last, self.began),
                "seconds_first_record_to_last_healthy": since(last, first_record),
                "seconds_to_canaries_healthy": since(canary_done, first_record),
                "seconds_rest_first_record_to_last_healthy": since(last, min(rest_records, default=None)),
                "seconds_record_to_healthy_per_hub": per_hub,
                "seconds_records_sent_canaries": since(records[canaries - 1], records[0]) if canaries else None,
                "seconds_records_sent_rest": since(rest_records[-1], rest_records[0]) if rest_records else None,
                "healthy_order": order[:canaries]}


def measure(args: argparse.Namespace, work: Path) -> dict:
    names = hub_names(args.hubs)
    figures: dict = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                 "load_average_start": load_average()},
                     "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    keys = new_keys(work / "keys")
    fleet_dir = make_bundles(work / "fleet", names, keys.private)
    v1_sha, v2_sha = file_sha256(fleet_mod.V1), file_sha256(fleet_mod.V2)
    figures["bundle_bytes_per_hub"] = bundle_bytes(fleet_dir / names[0])
    fleet = Fleet(work)
    feeder = None
    try:
        fleet.start_broker(names)
        broker = fleet.broker
        time.sleep(1.0)
        figures["broker_before_hubs"] = fleet.broker_figures()
        settings = BrokerSettings(f"127.0.0.1:{broker.operator_port}", "operator",
                                  str(broker.password_file("operator")), ca_file=str(broker.ca_file))
        feeder = Feeder(settings, names, args.rate, args.deadline).__enter__()

        def running(group: list[str]) -> bool:
            statuses = feeder.session.statuses
            return all(statuses.get(hub, {}).get("state") == "running" for hub in group)

        print(f"starting {len(names)} hubs in batches of {args.batch}", flush=True)
        began = time.monotonic()
        figures["hub_start"] = {"batch_seconds": fleet.start_hubs(names, keys.public, running, args.batch,
                                                                   args.start_timeout)}
        figures["hub_start"]["seconds"] = round(time.monotonic() - began, 2)
        figures["idle"] = {"broker": fleet.broker_figures(), "hubs": fleet.hub_figures(),
                           "sys": feeder.sys_snapshot()}

        feeder.start()
        print(f"feeding {args.rate:g} reading(s)/s to each hub; baseline {args.baseline:g} s", flush=True)
        baseline_began = time.monotonic()
        before_baseline = {"sys": feeder.sys_snapshot(0), "broker": fleet.broker_figures(),
                           "hubs": fleet.hub_figures()}
        time.sleep(args.baseline)
        baseline_ended = time.monotonic()
        before = {"sys": feeder.sys_snapshot(0), "broker": fleet.broker_figures(), "hubs": fleet.hub_figures(),
                  "load_average": load_average(), "self_cpu": self_cpu()}
        figures["baseline"] = {"seconds": round(baseline_ended - baseline_began, 2),
                               "answers": feeder.latency_figures(baseline_began, baseline_ended),
                               "sys_delta": delta(before_baseline["sys"], before["sys"]),
                               "broker_socket_io_delta": io_delta(before_baseline["broker"], before["broker"]),
                               "broker_cpu_seconds": diff(before["broker"], before_baseline["broker"], "cpu_seconds"),
                               "hubs_cpu_seconds_sum": round(before["hubs"]["cpu_seconds"]["sum"]
                                                             - before_baseline["hubs"]["cpu_seconds"]["sum"], 2)}

        rollout = Rollout(feeder, names, v2_sha, work / "release.log")
        command = [str(EDGECAST), "release", str(fleet_dir), "--version", str(VERSION), "--key", str(keys.private),
                   "--canary", args.canary, "--healthy-seconds", f"{args.healthy_seconds:g}",
                   "--hub-timeout", f"{args.hub_timeout:g}", *operator_options(broker)]
        print(f"releasing version {VERSION} to {len(names)} hubs, canary {args.canary}", flush=True)
        figures["release_command"] = rollout.run(command, timeout=args.hub_timeout * 3)
        rollout_ended = time.monotonic()
        figures["rollout"] = rollout.figures(canaries=canary_count(args.canary, len(names)))
        figures["rollout"]["load_average_end"] = load_average()
        time.sleep(args.after)
        feeder.stop()
        feeder.drain(args.deadline + 5)
        after = {"sys": feeder.sys_snapshot(), "broker": fleet.broker_figures(), "hubs": fleet.hub_figures(),
                 "self_cpu": self_cpu()}
        failures = feeder.failures + feeder.unanswered()
        statuses = feeder.session.statuses
        figures["answers"] = {
            "sent": feeder.sent, "by_model": feeder.answers_by_model({v1_sha: "v1", v2_sha: "v2"}),
            "failed": len(failures), "failed_during_rollout": sum(
                1 for f in failures if rollout.began <= f["at"] <= rollout_ended + args.deadline),
            "first_failures": [{k: v for k, v in f.items() if k != "at"} for f in failures[:10]],
            "latency_whole_run": feeder.latency_figures(),
            "latency_during_rollout": feeder.latency_figures(rollout.began, rollout_ended)}
        last_models = feeder.last_models()
        figures["every_hub_on_v2"] = {
            "status": sum(1 for hub in names if healthy(statuses.get(hub, {}), v2_sha)),
            "last_answer": sum(1 for hub in names if last_models.get(hub) == v2_sha)}
        figures["broker"] = {"peak_rss_mib": after["broker"]["peak_rss_mib"],
                             "cpu_seconds_total": after["broker"]["cpu_seconds"],
                             "cpu_seconds_rollout": diff(after["broker"], before["broker"], "cpu_seconds"),
                             "sys_at_end": after["sys"],
                             "sys_delta_rollout": delta(before["sys"], after["sys"]),
                             "socket_io_total": {k: after["broker"].get(k) for k in ("rchar", "wchar")},
                             "socket_io_delta_rollout": io_delta(before["broker"], after["broker"])}
        figures["hubs"] = {**after["hubs"], "cpu_seconds_rollout_sum": round(
            after["hubs"]["cpu_seconds"]["sum"] - before["hubs"]["cpu_seconds"]["sum"], 2),
            "idle_peak_rss_mib": figures["idle"]["hubs"]["peak_rss_mib"]}
        figures["harness_cpu_seconds_rollout"] = round(after["self_cpu"] - before["self_cpu"], 2)
        figures["rollout_window_seconds"] = round(time.monotonic() - rollout.began, 2)
        figures["dead_hubs"] = [hub.name for hub in fleet.hubs if hub.process.poll() is not None]
        figures["restart"] = restart_figures(fleet, feeder, keys.public, v2_sha, args)
    finally:
        if feeder is not None:
            feeder.__exit__()
        exited = fleet.stop()
        figures["exited_before_stop"] = exited
        figures["machine"]["load_average_end"] = load_average()
    return figures


def restart_figures(fleet: Fleet, feeder: Feeder, public_key: Path, v2_sha: str, args: argparse.Namespace) -> dict:
    """What a hub's reconnect costs the broker once a release is retained for it: `--restart`
    hubs stopped and started again (TLS handshake, login, subscriptions, and the retained
    release record and files delivered again on subscribing); $SYS and CPU deltas per hub."""
    hubs = fleet.hubs[:args.restart]
    if not hubs:
        return {}
    before = {"sys": feeder.sys_snapshot(), "broker": fleet.broker_figures()}

    def gone(group: list[str]) -> bool:
        statuses = feeder.session.statuses
        return all(statuses.get(hub, {}).get("state") == "offline" for hub in group)

    def back(group: list[str]) -> bool:
        statuses = feeder.session.statuses
        return all(healthy(statuses.get(hub, {}), v2_sha) for hub in group)

    seconds = fleet.restart(hubs, public_key, gone, back, args.start_timeout)
    after = {"sys": feeder.sys_snapshot(), "broker": fleet.broker_figures()}
    sys_delta = delta(before["sys"], after["sys"])
    return {"hubs": len(hubs), "seconds_until_back_on_v2": seconds,
            "per_hub": {key: round(sys_delta[key] / len(hubs)) for key in
                        ("bytes/received", "bytes/sent", "messages/received", "messages/sent") if key in sys_delta},
            "broker_cpu_seconds_per_hub": round((diff(after["broker"], before["broker"], "cpu_seconds") or 0)
                                                / len(hubs), 4),
            "sys_delta": sys_delta, "socket_io_delta": io_delta(before["broker"], after["broker"])}


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def delta(before: dict, after: dict) -> dict:
    return {key: round(after[key] - before[key], 2) for key in after
            if key in before and isinstance(after[key], (int, float)) and isinstance(before[key], (int, float))}


def io_delta(before: dict, after: dict) -> dict:
    return {key: value for key, value in delta(before, after).items() if key in ("rchar", "wchar")}


def diff(after: dict, before: dict, key: str) -> float | None:
    return None if after.get(key) is None or before.get(key) is None else round(after[key] - before[key], 2)


def canary_count(text: str, hubs: int) -> int:
    if "," in text or text.startswith("hub"):
        return len(text.split(","))
    number, percent = parse_canary(text)
    return release_canary_count(hubs, number, percent)


def passed(figures: dict, hubs: int) -> bool:
    return (figures.get("answers", {}).get("failed") == 0 and figures.get("release_command", {}).get("exit_code") == 0
            and figures.get("every_hub_on_v2", {}).get("status") == hubs
            and figures.get("every_hub_on_v2", {}).get("last_answer") == hubs)


def main() -> int:
    args = arguments()
    signal.signal(signal.SIGTERM, on_signal)
    if not fleet_mod.HUB_RUNTIME.exists() or not EDGECAST.exists():
        raise SystemExit("run `make .venv/.installed .venv-runtime/.installed` first")
    with tempfile.TemporaryDirectory(prefix="edgecast-rollout-") as temporary:
        work = args.workdir or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        try:
            figures = measure(args, work)
        except (RuntimeError, KeyboardInterrupt) as exc:
            print(f"rollout benchmark failed: {exc}", file=sys.stderr)
            return 1
    figures["harness_seconds"] = round(time.monotonic() - started, 1)
    figures["passed"] = passed(figures, args.hubs)
    text = json.dumps(figures, indent=1, sort_keys=False)
    args.out.write_text(text + "\n")
    print(text)
    print(f"{'PASSED' if figures['passed'] else 'FAILED'}: written {args.out}")
    return 0 if figures["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
