"""The shipped systemd unit (runtime/deploy/edgecast-runtime.service): how exposed
`systemd-analyze security` rates it, and the service working under its settings:
ready and watchdog notifications, HTTP on loopback, a hot reload, the state in the
state folder only, a clean stop. Where systemd is not the init (this container, CI)
the sandbox is rebuilt with bubblewrap from the unit's own keys (tests/support/unit_sandbox.py)."""

import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from support.runtime import FIXTURES, ONE_V2, Background, expected_forecast, record, replace_atomically
from support.unit_sandbox import (
    UNIT,
    bwrap_command,
    bwrap_works,
    compile_filter,
    exec_start,
    seccomp_available,
    service_settings,
    systemd_is_init,
    systemd_run_command,
)

from edgecast_runtime.systemd_notify import Notifier, socket_address, watchdog_seconds

MAX_EXPOSURE = 2.5
WATCHDOG_USEC = 3_000_000  # short, so that pings come every 1.5 s


def test_unit_exposure_is_at_most_2_5():
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", str(UNIT)],
                            capture_output=True, text=True, timeout=60)
    found = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert found, result.stdout[-2000:] + result.stderr
    exposure = float(found.group(1))
    print(f"systemd-analyze security --offline=true: exposure {exposure}")
    record("unit", exposure=exposure)
    assert exposure <= MAX_EXPOSURE, result.stdout


def test_unit_is_a_notify_service_with_a_watchdog_and_an_empty_working_directory():
    settings = service_settings()
    assert settings["Type"] == "notify" and settings["NotifyAccess"] == "main"
    assert settings["WatchdogSec"] and settings["UMask"] == "0077"
    assert settings["WorkingDirectory"] == "/run/" + settings["RuntimeDirectory"]
    assert "ORT_DISABLE_TELEMETRY=1" in settings["Environment"].split()  # issue 26: no telemetry
    assert exec_start(settings)[:2] == ["/opt/edgecast/venv/bin/edgecast-runtime", "serve"]


# --- sd_notify against real sockets ------------------------------------------------------


class NotifySocket:
    """A datagram socket that plays systemd's part: it records each message with the
    time it arrived."""

    def __init__(self, address: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(socket_address(address))
        self.sock.settimeout(0.2)
        self.messages = []
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def wait_for(self, text: str, timeout: float = 20.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for arrived, message in list(self.messages):
                if text in message.splitlines():
                    return arrived
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} within {timeout}s; got {self.messages}")

    def times_of(self, text: str) -> list:
        return [arrived for arrived, message in list(self.messages) if text in message.splitlines()]

    def close(self):
        self._stop.set()
        self._reader.join(5)
        self.sock.close()


@pytest.mark.parametrize("kind", ["abstract", "path"])
def test_notifier_sends_to_a_real_socket(tmp_path, kind):
    address = f"@edgecast-test-{uuid.uuid4().hex}" if kind == "abstract" else str(tmp_path / "notify")
    listener = NotifySocket(address)
    try:
        notifier = Notifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "4000000"})
        assert notifier.enabled and notifier.watchdog_interval == 4.0
        assert notifier.ready("serving")
        assert notifier.watchdog(alive=True)
        assert not notifier.watchdog(alive=True)  # within half the interval: not again yet
        assert not notifier.watchdog(alive=False)
        assert notifier.stopping()
        listener.wait_for("STOPPING=1", timeout=5)
        assert [message for _, message in listener.messages] == [
            "READY=1\nSTATUS=serving", "WATCHDOG=1", "STOPPING=1"]
    finally:
        listener.close()


def test_notifier_pings_only_while_alive():
    notifier = Notifier({"NOTIFY_SOCKET": "@edgecast-test-unused", "WATCHDOG_USEC": "2"})
    assert not notifier.watchdog(alive=False)


def test_no_notify_socket_means_no_op():
    notifier = Notifier({"WATCHDOG_USEC": "30000000"})
    assert not notifier.enabled and notifier.watchdog_interval is None
    assert not notifier.ready() and not notifier.watchdog(alive=True) and not notifier.stopping()
    assert not Notifier({"NOTIFY_SOCKET": "relative/name"}).enabled


def test_a_vanished_manager_does_not_raise(tmp_path):
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.enabled and not notifier.ready()


@pytest.mark.parametrize("environ, expected", [
    ({"WATCHDOG_USEC": "30000000"}, 30.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
    ({"WATCHDOG_USEC": "0"}, None), ({"WATCHDOG_USEC": "soon"}, None), ({}, None),
])
def test_watchdog_interval_follows_the_environment(environ, expected):
    assert watchdog_seconds(environ, os.getpid()) == expected


def test_the_serve_loop_pings_only_while_the_watcher_lives():
    from edgecast_runtime.http.command import feed_watchdog

    class Loop:
        def __init__(self):
            self.passes = 0

        def service_actions(self):
            self.passes += 1

    class Watcher:
        alive = False

    sent = []
    notifier = Notifier({})
    notifier.watchdog_interval = 0.0  # every pass is due
    notifier.notify = lambda *lines: sent.append(lines) or True
    loop, watcher = Loop(), Watcher()
    feed_watchdog(loop, notifier, watcher)
    loop.service_actions()
    assert loop.passes == 1 and sent == []  # a dead watcher: no ping
    watcher.alive = True
    loop.service_actions()
    assert loop.passes == 2 and sent == [("WATCHDOG=1",)]


# --- the service under the unit's sandbox ------------------------------------------------


class SandboxedService(Background):
    """The unit's ExecStart= run by `command` (the sandbox); stderr events as in
    Background. Signals go to the service itself, not to the sandbox around it."""

    def __init__(self, command, *, umask, pass_fds=()):
        self.args = command
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True,
                                     umask=umask, pass_fds=pass_fds)
        self.stderr_lines, self.events, self.answers = [], [], None
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        self._answer_reader = threading.Thread(target=self.proc.stdout.read, daemon=True)
        self._answer_reader.start()

    def service_pid(self) -> int:
        """The edgecast-runtime process among the sandbox's descendants."""
        pending = [self.proc.pid]
        while pending:
            pid = pending.pop()
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                continue
            if any(part.endswith(b"edgecast-runtime") for part in command[:2]) and command[0] != b"bwrap":
                return pid
            pending += [int(child) for child in children]
        raise AssertionError(f"no edgecast-runtime process under {self.proc.pid}")

    def send_signal(self, signum):
        os.kill(self.service_pid(), signum)


def request(port: int, method: str, path: str, body=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        connection.request(method, path, body=payload,
                           headers={"Content-Type": "application/json"} if payload else {})
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def deploy(opt: Path, source: Path) -> str:
    """A new model and its manifest, each written beside and renamed over the old."""
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    manifest = json.loads((opt / "model" / "manifest.json").read_text())
    manifest["artifacts"]["model.onnx"].update(sha256=digest, bytes=source.stat().st_size)
    incoming = opt / "model" / "manifest.json.incoming"
    incoming.write_text(json.dumps(manifest))
    replace_atomically(source, opt / "model" / "model.onnx")
    incoming.replace(opt / "model" / "manifest.json")
    return digest


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


PROBE = r"""
import json, os, socket
def writable(path):
    try:
        with open(os.path.join(path, "probe"), "w"):
            pass
        return True
    except OSError:
        return False
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
try:
    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)
    netlink = True
except OSError:
    netlink = False
print(json.dumps({"cwd": os.getcwd(), "cwd_entries": os.listdir("."), "umask": os.umask(0),
                  "uid": os.getuid(), "no_new_privs": status["NoNewPrivs"].strip(),
                  "cap_eff": status["CapEff"].strip(), "netlink": netlink,
                  "devices": sorted(os.listdir("/dev")), "omp": os.environ.get("OMP_NUM_THREADS"),
                  "writable": {path: writable(path) for path in
                               ("/var/lib/edgecast-runtime", "/run/edgecast-runtime", "/tmp",
                                "/opt/edgecast/model", "/etc", "/var/lib", "/run", "/")}}))
"""


def sandbox_parts(tmp_path: Path):
    """The unit's settings and the host folders behind /opt/edgecast, the state and the
    runtime directory; skips where the sandbox cannot be rebuilt."""
    why_not = bwrap_works()
    if why_not:
        pytest.skip(why_not)
    settings = service_settings()
    opt, state, runtime = tmp_path / "opt", tmp_path / "state", tmp_path / "run"
    for folder in (opt, state, runtime):
        folder.mkdir()
    shutil.copytree(FIXTURES / "bundle", opt / "model")
    (opt / "venv").symlink_to(Path(sys.executable).parent.parent)  # the venv running these tests
    return settings, opt, state, runtime


def test_the_sandbox_is_what_the_unit_asks(tmp_path):
    """The rebuilt sandbox itself, seen from inside: only the state folder and the
    private /tmp and working directory are writable, no privileges, the umask."""
    settings, opt, state, runtime = sandbox_parts(tmp_path)
    filter_fd = None
    if seccomp_available():
        compile_filter(settings, tmp_path / "filter.bpf")
        filter_fd = os.open(tmp_path / "filter.bpf", os.O_RDONLY)
    try:
        command = bwrap_command(settings, opt=opt, state=state, runtime=runtime, environment={},
                                seccomp_fd=filter_fd) + [sys.executable, "-c", PROBE]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60,
                                umask=int(settings["UMask"], 8), pass_fds=[filter_fd] if filter_fd else [])
    finally:
        if filter_fd is not None:
            os.close(filter_fd)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["cwd"] == settings["WorkingDirectory"] and seen["cwd_entries"] == []
    assert seen["umask"] == 0o077 and seen["uid"] != 0 and seen["omp"] == "1"
    assert seen["no_new_privs"] == "1" and int(seen["cap_eff"], 16) == 0
    assert "sda" not in seen["devices"] and "null" in seen["devices"]
    assert seen["writable"] == {"/var/lib/edgecast-runtime": True, "/run/edgecast-runtime": True,
                                "/tmp": True, "/opt/edgecast/model": False, "/etc": False,
                                "/var/lib": False, "/run": False, "/": False}
    if filter_fd is not None:
        assert not seen["netlink"]  # RestrictAddressFamilies= from the compiled filter


@contextlib.contextmanager
def running_in_sandbox(tmp_path: Path, settings: dict, folders: tuple, argv: list):
    """(service, notify listener, description): `argv` started in the unit's sandbox
    with a NOTIFY_SOCKET the test listens on and a short WATCHDOG_USEC."""
    opt, state, runtime = folders
    address = f"@edgecast-unit-{uuid.uuid4().hex}"  # abstract: reachable from inside
    environment = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    filter_fd, sandbox = None, "bubblewrap: read-only root, private /tmp /dev /run, user namespace, no capabilities"
    if seccomp_available():
        allowed = compile_filter(settings, tmp_path / "filter.bpf")
        filter_fd = os.open(tmp_path / "filter.bpf", os.O_RDONLY)
        sandbox += f", SystemCallFilter ({allowed} calls), RestrictAddressFamilies, MemoryDenyWriteExecute by libseccomp"
    else:
        sandbox += "; no system-call filter (python3-seccomp is missing: tests/runtime/setup.sh installs it)"
    sandbox += ("; systemd is the init here too (test_service_serves_under_systemd_run runs the unit itself)"
                if systemd_is_init() else "; in place of systemd, which is not the init here")
    print(f"sandbox: {sandbox}")
    command = bwrap_command(settings, opt=opt, state=state, runtime=runtime,
                            environment=environment, seccomp_fd=filter_fd) + argv
    listener = NotifySocket(address)
    try:
        with SandboxedService(command, umask=int(settings["UMask"], 8),
                              pass_fds=[filter_fd] if filter_fd is not None else []) as service:
            yield service, listener, sandbox
    finally:
        listener.close()
        if filter_fd is not None:
            os.close(filter_fd)


def watchdog_gaps(listener: NotifySocket, ready_at: float) -> tuple:
    """The pings so far (at least three half-intervals after READY=1) and the gaps between them."""
    time.sleep(max(0.0, ready_at + 5.0 - time.monotonic()))
    pings = listener.times_of("WATCHDOG=1")
    gaps = [later - earlier for earlier, later in zip(pings, pings[1:])]
    assert len(pings) >= 3, listener.messages
    assert max(gaps) < WATCHDOG_USEC / 1e6, gaps  # systemd would have killed it otherwise
    return pings, gaps


def stop_cleanly(service: SandboxedService, listener: NotifySocket) -> None:
    service.send_signal(signal.SIGTERM)
    assert service.proc.wait(20) == 0, service.stderr_lines[-20:]
    listener.wait_for("STOPPING=1", timeout=5)


def test_service_serves_under_the_units_sandbox(tmp_path):
    settings, opt, state, runtime = sandbox_parts(tmp_path)
    port = free_loopback_port()
    argv = exec_start(settings)
    argv[argv.index("--port") + 1] = str(port)  # 8080 may be taken on a test machine
    with running_in_sandbox(tmp_path, settings, (opt, state, runtime), argv) as (service, listener, sandbox):
        ready_at = listener.wait_for("READY=1")
        assert service.wait_event("listening")["port"] == port
        assert service.proc.poll() is None

        status, health = request(port, "GET", "/healthz")
        assert status == 200 and health["status"] == "ok", health
        window = [70.0, 72.0, 75.0, 80.0]
        status, answer = request(port, "POST", "/v1/predict", {"window": window})
        assert status == 200 and answer["forecast"] == pytest.approx(expected_forecast(window)), answer
        start = (int(time.time()) // 3600 - 10) * 3600
        for hour, value in enumerate(window):
            status, answer = request(port, "POST", "/v1/observe",
                                     {"value": value, "timestamp": start + 3600 * hour})
            assert status == 200, answer

        new_sha = deploy(opt, ONE_V2)  # the hot reload: the watcher polls every 2 s
        assert service.wait_event("reloaded", timeout=30)["sha256"] == new_sha
        status, answer = request(port, "POST", "/v1/predict", {"window": window})
        assert answer["model_sha256"] == new_sha
        assert answer["forecast"] == pytest.approx(expected_forecast(window, 1000.0))

        pings, gaps = watchdog_gaps(listener, ready_at)
        stop_cleanly(service, listener)

    written = assert_only_the_state_written(opt, state, runtime)
    median_gap = round(statistics.median(gaps), 2)
    print(f"watchdog: {len(pings)} pings, median gap {median_gap} s for WATCHDOG_USEC {WATCHDOG_USEC}")
    record("unit", sandbox=sandbox, watchdog_pings=len(pings), watchdog_median_gap_s=median_gap,
           watchdog_usec=WATCHDOG_USEC, state_files=written)


def assert_only_the_state_written(opt: Path, state: Path, runtime: Path) -> list:
    """The state folder holds the state (owner-only); the working directory stays empty."""
    written = sorted(path.name for path in state.iterdir())
    assert "stream-state.json" in written, written
    modes = {path.name: path.stat().st_mode & 0o777 for path in state.iterdir()}
    # UMask=0077 makes what the service creates owner-only; the state file itself gets
    # the mode its writer sets (durable.py), which must not let others write it.
    assert all(mode & 0o077 == 0 for name, mode in modes.items() if name != "stream-state.json"), modes
    assert modes["stream-state.json"] & 0o022 == 0, modes
    assert list(runtime.iterdir()) == []
    assert sorted(path.name for path in (opt / "model").iterdir()) == ["manifest.json", "model.onnx"]
    return written


# --- the unit under systemd itself, where systemd is the init ---------------------------


def systemctl_show(unit: str, prop: str) -> str:
    return subprocess.run(["systemctl", "show", unit, "-p", prop, "--value"], capture_output=True,
                          text=True, timeout=30).stdout.strip()


def test_service_serves_under_systemd_run(tmp_path):
    if not systemd_is_init():
        pytest.skip("systemd is not the init here (no /run/systemd/system): the unit's sandbox is "
                    "rebuilt with bubblewrap instead (test_service_serves_under_the_units_sandbox)")
    if os.geteuid() != 0:
        pytest.skip("a transient system service needs root")
    venv = Path(sys.executable).parent.parent.resolve()
    if str(venv).startswith(("/home/", "/root/", "/tmp/", "/var/tmp/", "/run/user/")):
        pytest.skip(f"the test venv {venv} is hidden from the service by ProtectHome=/PrivateTmp=")
    name = f"edgecast-unit-test-{uuid.uuid4().hex[:12]}"
    opt = Path("/run") / f"{name}-opt"  # not under /tmp: PrivateTmp= hides the host's /tmp
    settings = service_settings()
    port = free_loopback_port()
    argv = exec_start(settings)
    argv[argv.index("--port") + 1] = str(port)
    try:
        opt.mkdir(mode=0o755)
        shutil.copytree(FIXTURES / "bundle", opt / "model")
        (opt / "venv").symlink_to(venv)
        command = systemd_run_command(name, opt, argv, WATCHDOG_USEC / 1e6)
        print("systemd-run: " + " ".join(command))
        with SandboxedService(command, umask=0o022) as service:
            service.wait_event("listening", timeout=60)
            assert systemctl_show(name, "ActiveState") == "active"  # Type=notify: after READY=1
            assert systemctl_show(name, "StatusText") == f"serving on 127.0.0.1:{port}"
            status, health = request(port, "GET", "/healthz")
            assert status == 200 and health["status"] == "ok", health
            window = [70.0, 72.0, 75.0, 80.0]
            start = (int(time.time()) // 3600 - 10) * 3600
            for hour, value in enumerate(window):
                assert request(port, "POST", "/v1/observe", {"value": value, "timestamp": start + 3600 * hour})[0] == 200
            new_sha = deploy(opt, ONE_V2)
            assert service.wait_event("reloaded", timeout=30)["sha256"] == new_sha
            assert request(port, "POST", "/v1/predict", {"window": window})[1]["model_sha256"] == new_sha
            pinged = systemctl_show(name, "WatchdogTimestampMonotonic")
            time.sleep(2 * WATCHDOG_USEC / 1e6)  # past WatchdogSec: alive only if the pings arrive
            assert systemctl_show(name, "ActiveState") == "active"
            assert systemctl_show(name, "WatchdogTimestampMonotonic") != pinged
            subprocess.run(["systemctl", "stop", name], check=True, timeout=60)
            assert service.proc.wait(30) == 0, service.stderr_lines[-20:]
        written = sorted(path.name for path in (Path("/var/lib/private") / name).iterdir())
        assert "stream-state.json" in written, written
        record("unit", systemd_run="passed", systemd_run_state_files=written)
    finally:
        subprocess.run(["systemctl", "stop", name], capture_output=True, timeout=60)
        subprocess.run(["systemctl", "reset-failed", name], capture_output=True, timeout=60)
        shutil.rmtree(opt, ignore_errors=True)
        shutil.rmtree(Path("/var/lib/private") / name, ignore_errors=True)
        if Path("/var/lib", name).is_symlink():
            Path("/var/lib", name).unlink()
