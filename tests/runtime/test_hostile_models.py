"""Hostile models against a real `edgecast-runtime serve` on loopback: each attack is
mounted as a reviewer found it (a model or manifest deployed by hot reload, or given
at start-up), then the fixed behaviour is checked. A hostile model deployed while the
service runs is refused, counted in /v1/model and logged on one line; the service
stays alive, /healthz says the watcher is alive, peak memory stays under the unit's
cap, and the next valid model is still hot-reloaded (by polling or by SIGHUP). The
same model at start-up exits 3 with one line.

The hostile models are built by make_fixtures.py (fixtures/hostile/); FIFOs, huge
files and manifests are made here."""

from __future__ import annotations

import functools
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
from support.runtime import (
    FIXTURES,
    LOOPBACK,
    ONE,
    ONE_V2,
    REPO,
    TIME_SCALE,
    UNIT_MEMORY_CAP_MB,
    Server,
    assert_one_line_error,
    cli_path,
    expected_forecast,
    manifest_for,
    peak_rss_mb,
    record,
    replace_atomically,
    run_cli,
)

from edgecast_runtime import Forecaster, ModelError, StreamingForecaster
from edgecast_runtime.admission import ModelLoading, trial_in_child
from edgecast_runtime.http.server import ForecastServer
from edgecast_runtime.manifest import file_sha256
from edgecast_runtime.reload import STALL_SECONDS, ModelHolder, ModelWatcher

HOSTILE = FIXTURES / "hostile"
WINDOW = [70, 72, 75, 80]
V1, V2 = file_sha256(ONE), file_sha256(ONE_V2)
PLANTED = b"ABCD"  # the file an external-data model reads, planted in the service's cwd
DEEP = "[" * 5000 + "]" * 5000


def deploy_fixture(name: str) -> Callable[[Path], None]:
    return lambda model: replace_atomically(HOSTILE / name, model)


def deploy_fifo(model: Path) -> None:
    incoming = model.with_name("model.onnx.fifo")
    os.mkfifo(incoming)
    os.replace(incoming, model)


def deploy_manifest_fifo(model: Path) -> None:
    incoming = model.with_name("manifest.json.fifo")
    os.mkfifo(incoming)
    os.replace(incoming, model.with_name("manifest.json"))


def deploy_huge_file(model: Path) -> None:
    """300 MB (sparse: no disk used): read whole, it alone passes the unit's cap."""
    incoming = model.with_name("model.onnx.incoming")
    with open(incoming, "wb") as stream:
        stream.truncate(300 << 20)
    os.replace(incoming, model)


def write_manifest(folder: Path, text: str) -> None:
    incoming = folder / "manifest.json.incoming"
    incoming.write_text(text)
    incoming.replace(folder / "manifest.json")


@dataclass
class Attack:
    name: str
    deploy: Callable[[Path], None]  # mounts the attack on a running service's model file
    fragment: str  # in the refusal
    sighup: bool = False  # reload by SIGHUP only (--poll-interval 0)
    options: list = field(default_factory=list)
    manifest: bool = False  # the model starts beside its manifest


ATTACKS = [
    Attack("deep_spec", deploy_fixture("deep_spec.onnx"), "nested more than 64 levels deep",
           sighup=True),
    Attack("deep_manifest", lambda model: write_manifest(model.parent, '{"artifacts": ' + DEEP + "}"),
           "manifest.json: cannot read the manifest (is nested more than 64 levels deep)"),
    Attack("huge_look_back", deploy_fixture("huge_look_back.onnx"),
           "'look_back' 1000000000000, more than the 10000", sighup=True),
    Attack("constant_bomb", deploy_fixture("constant_bomb.onnx"),
           "needs more than 64 MB of memory"),
    Attack("external_data", deploy_fixture("external_data.onnx"), "declares external data"),
    Attack("forged_log", deploy_fixture("forged_log.onnx"), "a forecast on a zero window failed"),
    Attack("fifo", deploy_fifo, "not a regular file (a FIFO, device or socket)"),
    Attack("manifest_fifo", deploy_manifest_fifo, "manifest.json is not a regular file"),
    Attack("huge_file", deploy_huge_file, "is 314572800 bytes, more than the 4194304 allowed"),
    Attack("missing_manifest", lambda model: (model.parent / "manifest.json").unlink(),
           "no manifest.json beside the model", options=["--require-manifest"], manifest=True),
]


def model_folder(tmp_path: Path, manifest: bool) -> Path:
    """The served model's folder, also the service's working directory, with the
    file the external-data model names planted in it."""
    folder = tmp_path / "hub"
    folder.mkdir()
    (folder / "planted.bin").write_bytes(PLANTED)
    shutil.copyfile(ONE, folder / "model.onnx")
    if manifest:
        write_manifest(folder, manifest_for(ONE))
    return folder / "model.onnx"


def reload_by(server: Server, attack: Attack) -> None:
    """A polling service notices by itself; a SIGHUP-only one is told."""
    if attack.sighup:
        time.sleep(0.05)
        server.send_signal(signal.SIGHUP)


def deploy_next_valid(model: Path, attack: Attack) -> None:
    if attack.manifest:  # the manifest first: the model it lists is not there yet
        write_manifest(model.parent, manifest_for(ONE_V2))
    elif (model.parent / "manifest.json").exists():
        (model.parent / "manifest.json").unlink()
    if model.is_fifo() or model.stat().st_size > 1 << 20:
        model.unlink()
    replace_atomically(ONE_V2, model)


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_hostile_model_by_hot_reload_is_refused_and_the_service_carries_on(tmp_path, attack):
    model = model_folder(tmp_path, attack.manifest)
    poll = ["--poll-interval", "0" if attack.sighup else "0.1"]
    with Server(model, *poll, *attack.options,
                preexec_fn=functools.partial(os.chdir, model.parent)) as server:
        attack.deploy(model)
        reload_by(server, attack)
        refused = server.wait_event("reload_refused", timeout=20)
        assert attack.fragment in refused["error"], refused
        assert refused["serving_sha256"] == V1 and "\n" not in refused["error"]

        info = server.request("GET", "/v1/model")[1]
        assert info["sha256"] == V1 and info["refused_reloads"] == 1
        assert attack.fragment in info["last_reload_error"]
        status, health, _ = server.request("GET", "/healthz")
        assert status == 200 and health["status"] == "ok", health
        assert health["watcher"]["alive"] and not health["watcher"]["stalled"]
        status, answer, _ = server.request("POST", "/v1/predict", {"window": WINDOW})
        assert status == 200 and answer["forecast"] == pytest.approx(expected_forecast(WINDOW))
        assert not any("forged" in event for event in server.events)
        peak = peak_rss_mb(server.proc.pid)
        assert peak < UNIT_MEMORY_CAP_MB, peak

        deploy_next_valid(model, attack)  # the watcher still takes a valid model
        reload_by(server, attack)
        assert server.wait_event("reloaded", timeout=20)["sha256"] == V2
        status, answer, _ = server.request("POST", "/v1/predict", {"window": WINDOW})
        assert answer["model_sha256"] == V2
        assert answer["forecast"] == pytest.approx(expected_forecast(WINDOW, offset=1000))
        assert server.request("GET", "/healthz")[1]["watcher"]["alive"]
    record("hostile_models", **{f"{attack.name}_peak_rss_mb": round(peak, 1)})


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_hostile_model_at_start_up_exits_3_with_one_line(tmp_path, attack):
    model = model_folder(tmp_path, attack.manifest)
    attack.deploy(model)
    command = [cli_path(), "serve", str(model), "--host", LOOPBACK, "--port", "0", *attack.options]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=20 * TIME_SCALE,
                                cwd=model.parent)
    except subprocess.TimeoutExpired:
        pytest.fail(f"serve did not refuse {attack.name} within {20 * TIME_SCALE:g} s")
    assert_one_line_error(result, 3, attack.fragment)


def test_external_data_is_unreachable_without_the_trial(tmp_path, monkeypatch):
    """The service's own sessions resolve external data in an empty private folder:
    even a model that skipped the trial cannot read a file from the working directory."""
    (tmp_path / "planted.bin").write_bytes(PLANTED)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError, match="declares external data"):
        Forecaster(HOSTILE / "external_data.onnx", loading=ModelLoading(trial=False))


def test_onnxruntime_prints_nothing_of_its_own(tmp_path):
    """The forged-log model loaded without the trial and run: onnxruntime's error,
    which carries the node's name, reaches no stream; the exception is ours to report."""
    probe = (
        "import sys\n"
        "from edgecast_runtime import Forecaster\n"
        "from edgecast_runtime.admission import ModelLoading\n"
        "model = Forecaster(sys.argv[1], loading=ModelLoading(trial=False))\n"
        "try:\n"
        "    model.predict([1.0, 2.0, 3.0, 4.0])\n"
        "except Exception:\n"
        "    print('refused at run')\n")
    result = subprocess.run([sys.executable, "-c", probe,
                             str(HOSTILE / "forged_log.onnx")],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.stdout.strip() == "refused at run", result
    assert result.stderr == ""


def test_max_model_bytes_and_the_unit_require_a_manifest():
    result = run_cli("info", ONE, "--max-model-bytes", "1000")
    assert_one_line_error(result, 3, "more than the 1000 allowed for a model file (--max-model-bytes)")
    unit = (REPO / "runtime" / "deploy" / "edgecast-runtime.service").read_text()
    exec_start = unit.split("\nExecStart=", 1)[1].split("\n# ", 1)[0]
    assert "--require-manifest" in exec_start


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_watcher_makes_healthz_degraded(monkeypatch):
    """What escapes the reload guard still shows: an error inside a round is logged and
    the watcher carries on; a thread that ends anyway turns /healthz into 503."""
    events = []
    holder = ModelHolder(ONE, log=events.append, loading=ModelLoading(trial=False))
    watcher = ModelWatcher(holder, interval=0.02)
    failures = iter([OSError("disk gone"), SystemExit()])

    def changed():
        raise next(failures)

    monkeypatch.setattr(holder, "changed", changed)
    streamer = StreamingForecaster(holder.current)
    server = ForecastServer((LOOPBACK, 0), holder, streamer)
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                               daemon=True)
    serving.start()
    try:
        watcher.start()
        deadline = time.monotonic() + 10
        while watcher.health()["alive"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [e["event"] for e in events] == ["watcher_error", "watcher_died"]
        assert "disk gone" in events[0]["error"]
        assert not watcher.health()["alive"]
        connection = http.client.HTTPConnection(LOOPBACK, server.server_address[1], timeout=5)
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        body = json.loads(response.read())
        connection.close()
        assert response.status == 503 and body["status"] == "degraded"
        assert body["watcher"]["alive"] is False
    finally:
        server.shutdown()
        server.server_close()
        streamer.close()


def test_the_trial_costs_little_at_start_and_reload(tmp_path):
    """Figures only (no timing assertion): the trial's wall time, and serve's start-up
    with it, median of a few runs."""
    data = ONE.read_bytes()
    trials = [trial_in_child(ONE, data, 1) for _ in range(5)]
    starts = []
    for _ in range(3):
        began = time.monotonic()
        with Server(ONE, "--poll-interval", "0") as server:
            starts.append(time.monotonic() - began)
            server.stop()
    record("hostile_models",
           trial_median_s=round(statistics.median(t["trial_seconds"] for t in trials), 3),
           trial_child_peak_rss_mb=max(t["peak_rss_mb"] for t in trials),
           serve_start_median_s=round(statistics.median(starts), 3))
    assert all(t["ok"] and t["ran"] for t in trials)


def test_a_stuck_watcher_stops_the_watchdog_pings():
    """A watcher thread that lives but no longer comes round (a reload stuck past any
    trial's timeout) counts as not alive for the service's watchdog, as for /healthz."""
    holder = ModelHolder(ONE, loading=ModelLoading(trial=False))
    watcher = ModelWatcher(holder, interval=60).start()  # asleep: it does not come round now
    try:
        assert watcher.alive
        watcher.last_round -= 10 * STALL_SECONDS  # as if its last round were long ago
        health = watcher.health()
        assert health["alive"] and health["stalled"] and not watcher.alive
    finally:
        watcher.stop()
