"""The processes of the rollout benchmark: one Mosquitto with a password file, the ACL
and TLS (made the way tests/support/broker.py makes them, every hub its own user),
N `edgecast-runtime mqtt --trust` hubs started in batches, signed bundles for them, and
what /proc says about each process (peak memory, CPU time, bytes through its sockets).

Everything started here is stopped by `Fleet.stop`, which the caller runs in a finally."""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the shared helpers: support.broker, support.runtime

from support import broker as secure  # noqa: E402
from support.runtime import LOOPBACK, end_process, free_port, mosquitto_binary  # noqa: E402

FIXTURES = REPO / "tests" / "runtime" / "fixtures"
V1, V2 = FIXTURES / "one_feature.onnx", FIXTURES / "one_feature_v2.onnx"  # mean + 1, mean + 1001
WINDOWS = np.array([[[10.0], [12.0], [14.0], [16.0]], [[50.0], [40.0], [30.0], [20.0]]], dtype=np.float32)
HUB_RUNTIME = REPO / ".venv-runtime" / "bin" / "edgecast-runtime"  # as on a hub: no TensorFlow
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
OPERATOR = ("operator", "operator-secret")


def hub_names(count: int) -> list[str]:
    return [f"hub-{number:03d}" for number in range(1, count + 1)]


# --- /proc ------------------------------------------------------------------------------


def peak_memory_mib(pid: int) -> float | None:
    """VmHWM (the resident high-water mark) of a live process, MiB; None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a live process and of its children it has waited for."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return sum(int(value) for value in fields[11:15]) / CLOCK_TICKS  # utime stime cutime cstime


def io_bytes(pid: int) -> dict:
    """rchar/wchar of a live process: every byte through read/write calls (sockets, TLS
    records included, and the log file)."""
    try:
        pairs = (line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
        return {key: int(value) for key, value in pairs if key in ("rchar", "wchar")}
    except OSError:
        return {}


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


# --- the broker ----------------------------------------------------------------------------


def start_broker(folder: Path, hubs: list[str]) -> secure.SecureBroker:
    """Mosquitto as in tests/support/broker.py (hubs' listener with client ids bound to user
    names, the operator's listener), $SYS every second and readable by the operator."""
    if mosquitto_binary() is None:
        raise SystemExit("mosquitto is not installed: run `bash tests/runtime/setup.sh`")
    folder.mkdir(parents=True)
    passwords = {hub: f"{hub}-secret-{os.urandom(6).hex()}" for hub in hubs}
    passwords[OPERATOR[0]] = OPERATOR[1]
    secure.make_certificates(folder, [])  # hubs log in with passwords; only the server needs one
    secure.make_password_file(folder / "passwd", passwords)
    secure.make_password_file(folder / "operator.passwd", dict([OPERATOR]))
    (folder / "acl").write_text(secure.acl_text(OPERATOR[0], operator_reads=("$SYS/#",)))
    broker = secure.SecureBroker(folder, free_port(), free_port(), folder / "ca.crt", passwords,
                                 operator_port=free_port())
    (folder / "mosquitto.conf").write_text(secure.config_text(broker) + "\nsys_interval 1\n")
    secure.start(broker)
    return broker


def operator_options(broker: secure.SecureBroker) -> list[str]:
    return ["--broker", f"{LOOPBACK}:{broker.operator_port}", "--username", OPERATOR[0],
            "--password-file", str(broker.password_file(OPERATOR[0])), "--ca-file", str(broker.ca_file)]


# --- bundles and hubs -------------------------------------------------------------------------


def make_bundles(fleet_dir: Path, hubs: list[str], key: Path) -> Path:
    """A signed v2 bundle per hub (fleet_dir/HUB): model.onnx, manifest.json, windows.npz,
    model.sig, as `edgecast release` finds them."""
    from edgecast.release.signing import sign_bundle
    from edgecast_runtime.manifest import file_sha256

    for hub in hubs:
        folder = fleet_dir / hub
        folder.mkdir(parents=True)
        shutil.copy(V2, folder / "model.onnx")
        manifest = {"schema_version": 1, "model_name": "one-feature",
                    "artifacts": {"model.onnx": {"kind": "onnx", "sha256": file_sha256(folder / "model.onnx"),
                                                 "bytes": (folder / "model.onnx").stat().st_size}}}
        (folder / "manifest.json").write_text(json.dumps(manifest))
        np.savez(folder / "windows.npz", test_x=WINDOWS)
        sign_bundle(folder, key)
    return fleet_dir


def bundle_bytes(folder: Path) -> int:
    """The bytes a hub is sent: the files its release record lists (all but windows.npz)."""
    return sum(path.stat().st_size for path in folder.iterdir() if path.name != "windows.npz")


@dataclass
class Hub:
    name: str
    folder: Path
    process: subprocess.Popen | None = None
    peak_mib: float | None = None  # VmHWM, read just before it is stopped
    cpu: float | None = None

    def start(self, broker: secure.SecureBroker, public_key: Path) -> None:
        if not self.folder.exists():  # a restart keeps the folder: its release, its state
            self.folder.mkdir(parents=True)
            shutil.copy(V1, self.folder / "model.onnx")
        command = [str(HUB_RUNTIME), "mqtt", str(self.folder / "model.onnx"),
                   "--broker", f"{LOOPBACK}:{broker.port}",
                   "--subscribe", f"edgecast/readings/{self.name}", "--publish", f"edgecast/hub/{self.name}/forecasts",
                   "--username", self.name, "--password-file", str(broker.password_file(self.name)),
                   "--ca-file", str(broker.ca_file), "--trust", str(public_key), "--hub-id", self.name,
                   "--release-dir", str(self.folder / "releases"), "--poll-interval", "0",
                   "--state", str(self.folder / "state.json")]
        with open(self.folder / "hub.log", "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def measure(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.peak_mib, self.cpu = peak_memory_mib(self.process.pid), cpu_seconds(self.process.pid)

    def log_tail(self, lines: int = 3) -> str:
        path = self.folder / "hub.log"
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


@dataclass
class Fleet:
    """The broker and the hubs, with `stop` to end every process."""

    folder: Path
    broker: secure.SecureBroker | None = None
    hubs: list[Hub] = field(default_factory=list)

    def start_broker(self, names: list[str]) -> None:
        self.broker = start_broker(self.folder / "broker", names)

    def start_hubs(self, names: list[str], public_key: Path, ready: Callable[[list[str]], bool], batch: int, timeout: float) -> list[float]:
        """Hubs in batches of `batch`: each batch is started, then waited for until `ready(names)`
        says every hub of it reported `running`. Returns each batch's seconds."""
        seconds = []
        for first in range(0, len(names), batch):
            group = [Hub(name, self.folder / "hubs" / name) for name in names[first:first + batch]]
            began = time.monotonic()
            for hub in group:
                self.hubs.append(hub)
                hub.start(self.broker, public_key)
            deadline = began + timeout
            while not ready([hub.name for hub in group]):
                dead = [hub for hub in group if hub.process.poll() is not None]
                if dead:
                    raise RuntimeError(f"{dead[0].name} exited ({dead[0].process.returncode}): {dead[0].log_tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"hubs {group[0].name}..{group[-1].name} not running within {timeout:g} s")
                time.sleep(0.2)
            seconds.append(round(time.monotonic() - began, 2))
            print(f"  hubs {group[0].name}..{group[-1].name} running in {seconds[-1]} s "
                  f"(load {load_average()[0]})", flush=True)
        return seconds

    def restart(self, hubs: list[Hub], public_key: Path, gone: Callable[[list[str]], bool],
                back: Callable[[list[str]], bool], timeout: float) -> float:
        """Stops `hubs` (SIGTERM) and waits until `gone(names)`, starts them again on their
        folders and waits until `back(names)`; returns the seconds from the restarts to that."""
        names = [hub.name for hub in hubs]
        for hub in hubs:
            end_process(hub.process, timeout=20)
        began = time.monotonic()
        while not gone(names) and time.monotonic() - began < 30:
            time.sleep(0.1)
        began = time.monotonic()
        for hub in hubs:
            hub.start(self.broker, public_key)
        while not back(names):
            if time.monotonic() - began > timeout:
                raise RuntimeError(f"restarted hubs not back on their release within {timeout:g} s")
            time.sleep(0.2)
        return round(time.monotonic() - began, 2)

    def broker_figures(self) -> dict:
        pid = self.broker.process.pid
        return {"peak_rss_mib": peak_memory_mib(pid), "cpu_seconds": cpu_seconds(pid), **io_bytes(pid)}

    def hub_figures(self) -> dict:
        for hub in self.hubs:
            hub.measure()
        peaks = [hub.peak_mib for hub in self.hubs if hub.peak_mib is not None]
        cpu = [hub.cpu for hub in self.hubs if hub.cpu is not None]
        return {"measured": len(peaks),
                "peak_rss_mib": {"max": round(max(peaks), 1), "median": round(statistics.median(peaks), 1),
                                 "min": round(min(peaks), 1), "sum": round(sum(peaks), 1)} if peaks else None,
                "cpu_seconds": {"sum": round(sum(cpu), 2), "median": round(statistics.median(cpu), 2),
                                "max": round(max(cpu), 2)} if cpu else None}

    def stop(self) -> list[str]:
        """SIGTERM every hub at once, then wait for each (SIGKILL after 20 s); then the broker.
        Returns the names of hubs that had exited before."""
        exited = [hub.name for hub in self.hubs if hub.process is not None and hub.process.poll() is not None]
        for hub in self.hubs:
            if hub.process is not None and hub.process.poll() is None:
                hub.process.terminate()
        for hub in self.hubs:
            end_process(hub.process, timeout=20)
        if self.broker is not None:
            secure.stop(self.broker)
        return exited
