"""onnxruntime's telemetry stays off (issue 26): onnxruntime 1.29 and later write
~/.cache/Microsoft/DeveloperTools/.onnxruntime/{deviceid,onnxruntime.db} and resolve
mobile.events.data.microsoft.com unless ORT_DISABLE_TELEMETRY=1 is set before the
library loads; the runtime sets it itself (edgecast_runtime/__init__.py, and trial.py
for the trial's child), so an install outside the unit reports nothing either.

How it is observed: `predict`, `serve` and `mqtt` run with HOME an empty folder,
inside a network namespace with loopback only (bubblewrap --unshare-net, so a query
can never leave this machine, whatever happens) and under `strace -f`, which records
every connect/sendto/sendmsg of the command and of every child with its address and
payload, whether it succeeds or not. A DNS query shows as a connect or send to port
53 (the resolver in /etc/resolv.conf: unreachable here, but attempted), and the
collector's name in a payload. No LD_PRELOAD and no resolver to fake: the kernel's
view of what the processes tried. The control run (ORT_DISABLE_TELEMETRY=0, which the
runtime leaves alone) shows the detector sees the telemetry when it is on."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.runtime import ONE, REPO, cli_path, mosquitto_binary, record
from support.telemetry import telemetry_environment

DRIVER = REPO / "tests" / "support" / "no_telemetry_driver.py"
ADDRESS = re.compile(r'inet_(?:addr|pton)\((?:AF_INET6, )?"([^"]+)"')
DNS_PORT = re.compile(r"sin6?_port=htons\(53\)")


def sandbox_available() -> str:
    for tool in ("bwrap", "strace"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (tests/runtime/setup.sh installs bubblewrap and strace)"
    if mosquitto_binary() is None:
        return "mosquitto is not installed (tests/runtime/setup.sh installs it)"
    probe = subprocess.run(["bwrap", "--unshare-user", "--unshare-net", "--dev-bind", "/", "/", "--proc", "/proc",
                            "strace", "-qq", "-e", "trace=none", "true"], capture_output=True, text=True, timeout=30)
    return "" if probe.returncode == 0 else f"no network namespace or ptrace here: {probe.stderr.strip()[-300:]}"


def run_isolated(tmp_path: Path, commands: str, telemetry_setting=None) -> tuple:
    why_not = sandbox_available()
    if why_not:
        pytest.skip(why_not)
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    environment = telemetry_environment(home, telemetry_setting)
    command = ["bwrap", "--unshare-user", "--unshare-net", "--die-with-parent", "--dev-bind", "/", "/",
               "--proc", "/proc", sys.executable, str(DRIVER), str(work), cli_path(), str(ONE),
               mosquitto_binary(), commands]
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    done = json.loads((work / "driver.json").read_text())
    written = sorted(str(path.relative_to(home)) for path in home.rglob("*") if not path.is_dir())
    traces = {path.suffix[1:]: path.read_text(errors="replace") for path in work.glob("trace.*")}
    return done, written, traces


def attempts(trace: str) -> dict:
    """What the processes tried on the network: DNS queries, addresses other than
    loopback, and lines naming the telemetry collector."""
    lines = [line for line in trace.splitlines() if re.search(r"\b(connect|sendto|sendmsg|sendmmsg)\(", line)]
    return {"dns": [line for line in lines if DNS_PORT.search(line)],
            "off_loopback": [line for line in lines
                             if any(address not in ("127.0.0.1", "::1") for address in ADDRESS.findall(line))],
            "collector": [line for line in trace.splitlines() if "microsoft" in line.lower()]}


def test_predict_serve_and_mqtt_write_nothing_under_home_and_resolve_no_telemetry_host(tmp_path):
    done, written, traces = run_isolated(tmp_path, "predict,serve,mqtt")
    assert done["predict"] == 0 and done["serve"] == 0 and done["mqtt"] == 0, done
    assert done["serve_predict"] and done["serve_observe"]["status"] == "forecast", done
    assert "forecast" in done["mqtt_answers"], done  # the model ran: sessions were opened
    assert written == [], written
    assert set(traces) == {"predict", "serve", "mqtt"}
    found = {name: attempts(trace) for name, trace in traces.items()}
    for name, seen in found.items():
        assert seen == {"dns": [], "off_loopback": [], "collector": []}, (name, seen)
    record("telemetry", files_under_home_after=0, dns_queries_after=0)


def test_the_detector_sees_telemetry_when_it_is_on(tmp_path):
    """The control: with ORT_DISABLE_TELEMETRY=0 (kept: the runtime only sets a default),
    onnxruntime's own telemetry writes under HOME and tries DNS, and the checks above see it.
    Skipped for an onnxruntime built without telemetry."""
    import onnxruntime

    library = next(Path(onnxruntime.__file__).parent.glob("capi/libonnxruntime.so*"), None)
    if library is None or b"mobile.events.data.microsoft.com" not in library.read_bytes():
        pytest.skip("this onnxruntime has no telemetry collector compiled in")
    done, written, traces = run_isolated(tmp_path, "serve", telemetry_setting="0")
    seen = attempts(traces["serve"])
    print(f"telemetry on: {len(written)} files under HOME ({written}), {len(seen['dns'])} DNS attempts")
    record("telemetry", files_under_home_before=len(written), dns_queries_before=len(seen["dns"]))
    assert any("onnxruntime" in path for path in written), written
    assert seen["dns"], traces["serve"][-2000:]
