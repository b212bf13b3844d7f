"""Shared helpers for the runtime tests (a uniquely named module, so that it never
clashes with the toolkit tests' helpers): fixture paths, the installed console
script, background processes (always killed in a finally), a loopback HTTP
client and a Mosquitto broker started on a free loopback port."""

import hashlib
import http.client
import json
import os
import queue
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "runtime" / "fixtures"
SEED_MODEL = REPO / "models" / "pm25-seed" / "model.onnx"
LOOPBACK = "127.0.0.1"
# Waits in these helpers are multiplied by this: `make test-aarch64` runs the suite under
# qemu-user emulation, many times slower than the machine itself (its timings mean nothing).
TIME_SCALE = float(os.environ.get("EDGECAST_TEST_TIME_SCALE", "1"))

# What the corpus, load and fault tests tried and measured, by test area; printed in
# the terminal summary by conftest.py.
FIGURES = {}


def record(area: str, **figures) -> None:
    FIGURES.setdefault(area, {}).update(figures)


def add_count(area: str, key: str, amount: int = 1) -> None:
    FIGURES.setdefault(area, {})
    FIGURES[area][key] = FIGURES[area].get(key, 0) + amount


ONE = FIXTURES / "one_feature.onnx"  # look_back 4, 1 feature, horizon 1, interval 3600 s
ONE_V2 = FIXTURES / "one_feature_v2.onnx"  # the same with +1000 on every forecast
ONE_REEXPORT = FIXTURES / "one_feature_reexport.onnx"  # ONE converted again: other bytes
ONE_RANGES = FIXTURES / "one_feature_ranges.onnx"  # ONE with valid_ranges PM2.5 [0, 500]
THREE = FIXTURES / "three_features.onnx"  # look_back 6, 3 features, horizon 3, interval 60 s
SCHEMA2 = FIXTURES / "schema2" / "model.onnx"  # a real export: PM2.5, TEMP, wd, hour, weekday


def expected_forecast(window, offset=0.0):
    """What the fixture models compute (see make_fixtures.py)."""
    rows = [[v] if not isinstance(v, (list, tuple)) else list(v) for v in window]
    target_mean = sum(row[0] for row in rows) / len(rows)
    horizon = 3 if len(rows[0]) == 3 else 1
    return [target_mean + step + offset for step in range(1, horizon + 1)]


def cli_path() -> str:
    """The console script of the installed wheel, beside the interpreter running pytest."""
    candidate = Path(sys.executable).parent / "edgecast-runtime"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("edgecast-runtime")
    if not found:
        pytest.fail("the edgecast-runtime console script is not installed beside "
                    f"{sys.executable}; run `make .venv-runtime/.installed`")
    return found


def run_cli(*args, stdin=None, timeout=60):
    timeout *= TIME_SCALE
    return subprocess.run([cli_path(), *map(str, args)], input=stdin, capture_output=True,
                          text=True, timeout=timeout)


def assert_one_line_error(result, exit_code, *fragments):
    """The CLI's promise: one line `edgecast-runtime: error: ...`, never a traceback."""
    lines = result.stderr.splitlines()
    assert result.returncode == exit_code, (result.returncode, result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("edgecast-runtime: error: "), lines[0]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


class Background:
    """A CLI command in the background. Its stderr is read by a thread; JSON lines
    become `events`, which tests wait for. Its stdout is read by another; each line
    (decoded JSON when it is) becomes an answer, taken with `answer()`; `send()`
    writes a line to its stdin (with stdin=True). Use as a context manager: the
    process is killed on the way out whatever happened."""

    def __init__(self, *args, stdin=False, preexec_fn=None):
        self.args = [cli_path(), *map(str, args)]
        self.proc = subprocess.Popen(self.args, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True, preexec_fn=preexec_fn)
        self.stderr_lines = []
        self.events = []
        self.answers = queue.Queue()
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        self._answer_reader = threading.Thread(target=self._read_answers, daemon=True)
        self._answer_reader.start()

    def _read_answers(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            try:
                self.answers.put(json.loads(line))
            except ValueError:
                self.answers.put(line)

    def send(self, line: str):
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def answer(self, timeout=10.0):
        return self.answers.get(timeout=timeout * TIME_SCALE)

    def _drain(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._changed:
                self.stderr_lines.append(line)
                try:
                    event = json.loads(line)
                except ValueError:
                    event = None
                if isinstance(event, dict):
                    self.events.append(event)
                self._changed.notify_all()
        # stderr closes as the process exits, a moment before poll() can see the exit:
        # wait for it, or a waiter woken now would sleep out its whole timeout.
        self.proc.wait()
        with self._changed:
            self._changed.notify_all()

    def wait_event(self, name, timeout=15.0, count=1, **fields):
        """The `count`-th event called `name` whose fields match; fails after `timeout`."""
        timeout *= TIME_SCALE
        def matching():
            return [e for e in self.events if e.get("event") == name
                    and all(e.get(k) == v for k, v in fields.items())]

        with self._changed:
            found = self._changed.wait_for(
                lambda: len(matching()) >= count or self.proc.poll() is not None, timeout)
            hits = matching()
        if len(hits) < count:
            raise AssertionError(f"no {name!r} event (x{count}) within {timeout}s "
                                 f"(running={self.proc.poll() is None}, found={bool(found)}); "
                                 f"stderr:\n" + "\n".join(self.stderr_lines[-30:]))
        return hits[count - 1]

    def send_signal(self, signum):
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def stop(self, signum=signal.SIGTERM, timeout=15.0) -> int:
        self.send_signal(signum)
        timeout *= TIME_SCALE
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self._reader.join(timeout=5)
        self._answer_reader.join(timeout=5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream:
                try:
                    stream.close()
                except OSError:
                    pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()


class Server(Background):
    """`edgecast-runtime serve` on 127.0.0.1, port chosen by the OS."""

    def __init__(self, model, *extra, preexec_fn=None):
        super().__init__("serve", model, "--host", LOOPBACK, "--port", "0", *extra,
                         preexec_fn=preexec_fn)
        try:
            event = self.wait_event("listening")
        except BaseException:
            self.kill()  # not yet inside a `with`: nobody else would
            raise
        self.host, self.port = event["host"], event["port"]

    def request(self, method, path, body=None, headers=None, timeout=10.0):
        """(status, decoded JSON body, response headers); `body` may be an object
        (sent as JSON), bytes, or None; a body is sent as application/json unless
        `headers` say otherwise."""
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout * TIME_SCALE)
        try:
            if body is not None and not isinstance(body, bytes):
                body = json.dumps(body).encode()
            if body is not None:
                headers = {"Content-Type": "application/json", **(headers or {})}
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            data = response.read()
            return response.status, (json.loads(data) if data else None), dict(response.getheaders())
        finally:
            connection.close()

    def raw(self, data: bytes, timeout=10.0, trickle_every=None, trickle_for=20.0) -> bytes:
        """Send raw bytes, return everything the server sends before closing. With
        `trickle_every` seconds, one byte at a time (for at most `trickle_for` s)."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
            started = time.monotonic()
            try:
                if trickle_every is None:
                    sock.sendall(data)
                else:
                    for index in range(len(data)):  # bounded by the data and trickle_for
                        sock.sendall(data[index:index + 1])
                        time.sleep(trickle_every)
                        if time.monotonic() - started > trickle_for:
                            break
            except OSError:
                pass  # closed by the server mid-send: the answer is still in the socket
            return read_until_close(sock)


def read_until_close(sock: socket.socket) -> bytes:
    """Everything the peer sends until it closes (or the socket times out or fails)."""
    chunks = []
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError:  # socket.timeout included
        pass
    return b"".join(chunks)


UNIT_MEMORY_CAP_MB = 256  # MemoryMax= in runtime/deploy/edgecast-runtime.service


def peak_rss_mb(pid: int) -> float:
    """The peak resident memory of a live process so far (VmHWM), in MB: what a
    cgroup's MemoryMax would have counted. Read it before the process exits."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def end_process(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def kill_at_random_points(count, start, acknowledge, send_and_kill, *, seed, accepted_after,
                          stored_accepted, max_kills, seconds=90):
    """Feed readings 0..count-1 to processes killed (SIGKILL) at random points:
    bursts of 1 to 6 readings, the last one often killed in flight. `start()` gives
    a Background process; `acknowledge(process, i)` returns reading i's answer;
    `send_and_kill(process, i, delay)` sends it, kills the process after `delay`
    seconds and returns the answer if one came, else None. After every kill the
    state on disk (`stored_accepted()`) must hold every acknowledged reading and at
    most the one in flight; `accepted_after[i]` is the count once reading i is
    answered. Returns (acknowledged {i: answer}, kills, kills in flight, lost)."""
    rng = random.Random(seed)
    acknowledged, position, kills, kills_in_flight, lost = {}, 0, 0, 0, 0
    deadline = time.monotonic() + seconds
    while position < count:
        assert kills < max_kills and time.monotonic() < deadline, (kills, position)
        end = min(count, position + rng.randint(1, 6))
        kill_in_flight = rng.random() < 0.6
        with start() as process:
            for index in range(position, end):
                if kill_in_flight and index == end - 1:
                    # during parsing, predicting or fsync
                    answer = send_and_kill(process, index, rng.uniform(0, 0.004))
                    kills_in_flight += 1
                    if answer is not None:
                        acknowledged[index] = answer
                        position = index + 1
                    break
                acknowledged[index] = acknowledge(process, index)
                position = index + 1
            process.kill()
        kills += 1
        stored = stored_accepted()
        before = accepted_after[position - 1] if position else 0
        in_flight = accepted_after[position] if position < count else before
        lost += max(0, before - stored)
        assert stored in (before, in_flight), (position, stored, before, in_flight)
    return acknowledged, kills, kills_in_flight, lost


def port_range_for_tests() -> tuple[int, int]:
    """Where free_port() looks: EDGECAST_TEST_PORTS ("LOW-HIGH"; scripts/test_suites.sh
    gives each suite its own half, so two suites side by side never pick the same port),
    by default 20000-32767, kept below the kernel's ephemeral range (bind to port 0 and
    outgoing connections take ports there, Ray many of them) and above Ray's worker ports
    (10002-19999)."""
    text = os.environ.get("EDGECAST_TEST_PORTS", "20000-32767")
    low, high = (int(part) for part in text.split("-"))
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
        high = min(high, ephemeral_low - 1)
    except (OSError, ValueError, IndexError):
        pass
    return low, high


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on, for a broker or server a test starts
    by port number. Between this check and the bind of the process started, only another
    test picking ports from the same range could take it (see port_range_for_tests)."""
    low, high = port_range_for_tests()
    picker = random.SystemRandom()
    for _ in range(500):
        port = picker.randint(low, high)
        with socket.socket() as sock:
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free port on {LOOPBACK} in {low}-{high}")


def mosquitto_binary():
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


class Broker:
    """A Mosquitto broker on 127.0.0.1 with a generated config, restartable on the
    same port."""

    def __init__(self, folder: Path):
        self.binary = mosquitto_binary()
        self.port = free_port()
        self.config = folder / "mosquitto.conf"
        self.config.write_text(f"listener {self.port} {LOOPBACK}\nallow_anonymous true\n")
        self.log = folder / "mosquitto.log"
        self.proc = None

    def start(self):
        log = open(self.log, "ab")
        try:
            self.proc = subprocess.Popen([self.binary, "-c", str(self.config)], stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            try:
                socket.create_connection((LOOPBACK, self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"mosquitto did not listen on {self.port} within 10 s")

    def stop(self):
        end_process(self.proc)


@pytest.fixture
def broker(tmp_path):
    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed (tests/runtime/setup.sh installs it)")
    instance = Broker(tmp_path)
    try:
        yield instance.start()
    finally:
        instance.stop()


@pytest.fixture
def model_copy(tmp_path):
    """A private copy of the one-feature model that a test may replace."""
    folder = tmp_path / "model"
    folder.mkdir()
    target = folder / "model.onnx"
    shutil.copyfile(ONE, target)
    return target


def manifest_for(model: Path) -> str:
    """A manifest.json that lists `model` as model.onnx, as an export writes it."""
    return json.dumps({"model_name": "fixture", "artifacts": {
        "model.onnx": {"sha256": hashlib.sha256(Path(model).read_bytes()).hexdigest(),
                       "kind": "onnx"}}})


def bundled_copy(source: Path, folder: Path) -> Path:
    """`source` copied to FOLDER/model.onnx with a manifest.json listing it (what
    --require-manifest, as in the shipped unit, asks for)."""
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "model.onnx"
    shutil.copyfile(source, model)
    (folder / "manifest.json").write_text(manifest_for(model))
    return model


def replace_atomically(source: Path, target: Path) -> None:
    """How a model is deployed: copy beside, then rename over the old one."""
    temporary = target.with_name(target.name + ".incoming")
    shutil.copyfile(source, temporary)
    os.replace(temporary, target)
