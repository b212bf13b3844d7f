"""What benchmarks/shadow.py needs before it measures: the two real LSTM bundles (trained
and exported with the toolkit, cached between runs), the stretch of Changping readings
every hub takes, a Mosquitto on loopback, and the facts of the machine and the runtime
installed (its digest, to notice a reinstall in the middle of a run)."""

import argparse
import csv
import hashlib
import json
import platform
import re
import shutil
import socket
import subprocess
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from rollout_fleet import REPO
from support.runtime import LOOPBACK, end_process, free_port, mosquitto_binary

EDGECAST = REPO / ".venv" / "bin" / "edgecast"
RUNTIME_PYTHON = REPO / ".venv-runtime" / "bin" / "python"
UNIT = REPO / "runtime" / "deploy" / "edgecast-runtime.service"
DATA = REPO.parent / "shared" / "data" / "PRSA_Data_Changping_20130301-20170228.csv"
MODELS = Path(tempfile.gettempdir()) / "edgecast-bench-shadow-models"
TARGET, FEATURES = "PM2.5", ("TEMP", "PRES", "DEWP")
LOOK_BACK, HORIZON = 24, 24
SEEDS = {"champion": 1, "challenger": 2}
BEIJING = timezone(timedelta(hours=8))  # the stations' clock (the file's year/month/day/hour)



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


