"""Run inside a network namespace that has only loopback (bubblewrap --unshare-net, see
tests/runtime/test_telemetry.py): `predict`, `serve` and `mqtt` of the installed
runtime, each under `strace -f`, with HOME a fresh folder. Nothing can leave the
machine from here (every address but loopback is unreachable), and strace records
every attempt: each connect()/sendto()/sendmsg() of the command and its children
(the trial's child included) with its address and the first bytes sent.

    python no_telemetry_driver.py WORK CLI MODEL MOSQUITTO [COMMAND,...]

runs the COMMANDs given (default predict,serve,mqtt) and writes WORK/trace.{predict,serve,mqtt} and WORK/driver.json (what was answered)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HOLD_SECONDS = 12.0  # onnxruntime 1.32 resolved its collector within ~5 s of a session
TRACE = ["strace", "-f", "-qq", "-e", "trace=connect,sendto,sendmsg,sendmmsg", "-s", "256"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def traced(work: Path, name: str, argv: list, **options) -> subprocess.Popen:
    log = open(work / f"{name}.log", "wb")
    return subprocess.Popen([*TRACE, "-o", str(work / f"trace.{name}"), "--", *argv], stdout=log,
                            stderr=subprocess.STDOUT, **options)


def tracee(proc: subprocess.Popen) -> int:
    """The command strace started (signals go to it: strace would only detach)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.05)
    raise SystemExit("strace started nothing")


def wait_for_line(path: Path, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise SystemExit(f"no {text!r} in {path.name}: {path.read_text(errors='replace')[-2000:]}")


def stop(proc: subprocess.Popen) -> int:
    os.kill(tracee(proc), signal.SIGTERM)
    return proc.wait(30)


def post(port: int, path: str, body: dict) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def main(work: Path, cli: str, model: str, mosquitto: str, commands: str = "predict,serve,mqtt") -> None:
    done = {}
    if "predict" in commands:
        predict = traced(work, "predict", [cli, "predict", model, "70", "72", "75", "80"])
        done["predict"] = predict.wait(60)
    if "serve" in commands:
        done.update(run_serve(work, cli, model))
    if "mqtt" in commands:
        done.update(run_mqtt(work, cli, model, mosquitto))
    (work / "driver.json").write_text(json.dumps(done))


def run_serve(work: Path, cli: str, model: str) -> dict:
    done = {}

    port = free_port()
    serve = traced(work, "serve", [cli, "serve", model, "--port", str(port), "--state", str(work / "serve.json")])
    try:
        wait_for_line(work / "serve.log", '"listening"')
        done["serve_predict"] = post(port, "/v1/predict", {"window": [70, 72, 75, 80]})["forecast"]
        start = (int(time.time()) // 3600 - 10) * 3600
        for hour, value in enumerate([70, 72, 75, 80]):
            done["serve_observe"] = post(port, "/v1/observe", {"value": value, "timestamp": start + 3600 * hour})
        time.sleep(HOLD_SECONDS)
    finally:
        done["serve"] = stop(serve)
    return done


def run_mqtt(work: Path, cli: str, model: str, mosquitto: str) -> dict:
    done = {}
    broker_port = free_port()
    (work / "mosquitto.conf").write_text(f"listener {broker_port} 127.0.0.1\nallow_anonymous true\n"
                                         f"user {os.environ.get('USER') or 'root'}\n")
    broker = subprocess.Popen([mosquitto, "-c", str(work / "mosquitto.conf")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        mqtt = traced(work, "mqtt", [cli, "mqtt", model, "--broker", f"127.0.0.1:{broker_port}",
                                     "--subscribe", "telemetry/in", "--publish", "telemetry/out",
                                     "--state", str(work / "mqtt.json")])
        try:
            wait_for_line(work / "mqtt.log", '"mqtt_subscribed"')
            done["mqtt_answers"] = publish_readings(broker_port)
            time.sleep(HOLD_SECONDS)
        finally:
            done["mqtt"] = stop(mqtt)
    finally:
        broker.terminate()
        broker.wait(10)
    return done


def publish_readings(port: int) -> list:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    answers = []
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="telemetry-probe")
    client.on_message = lambda c, u, message: answers.append(json.loads(message.payload))
    client.connect("127.0.0.1", port, keepalive=10)
    client.loop_start()
    try:
        client.subscribe("telemetry/out", qos=1)
        time.sleep(0.5)
        start = (int(time.time()) // 3600 - 10) * 3600
        for hour, value in enumerate([70, 72, 75, 80]):
            client.publish("telemetry/in", json.dumps({"value": value, "timestamp": start + 3600 * hour}),
                           qos=1).wait_for_publish(10)
        deadline = time.monotonic() + 20
        while len(answers) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        client.disconnect()
        client.loop_stop()
    return [answer.get("status") for answer in answers]


if __name__ == "__main__":
    main(Path(sys.argv[1]), *sys.argv[2:6])
