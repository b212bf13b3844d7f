"""`edgecast bench`: one model, five backends, the same inputs, one report.

Backends: the edgecast runtime (`Forecaster`), bare onnxruntime on the same model.onnx,
LiteRT's interpreter on model.tflite (static batch 1), Keras `predict` and a direct
Keras call (`model(x, training=False)`). Keras runs inside the trainer's own pipeline
(scaler, model, inverse), so every backend turns the same raw windows into the same
raw-units forecasts; all but the runtime run through export/backends.py, the runner
parity and the accuracy report use.

Every measurement runs in a child process (child.py), so thread counts hold
(TensorFlow fixes its thread pools at start-up) and no backend warms another's caches.
Measured per backend:
  * single-window latency, median and p99 over many calls, 1 thread;
  * throughput in windows/s at batch 1024 (median of repeats) and for one call on
    100,000 windows, at 1 thread and at every core; LiteRT has batch 1 only, so its
    "batch" is a loop of single invokes;
  * cold start: spawn of a new process to its first forecast, median of several runs
    of a tiny script (import, load, forecast), and that process's peak RSS;
  * artifact bytes and the installed size of the environment the backend needs.
"""
from __future__ import annotations

import datetime
import importlib.metadata as metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgecast.base import EdgecastError, write_json_atomic
from edgecast_runtime.contract import KERAS_FILE, MANIFEST_NAME, ONNX_FILE, SPEC_FILE, TFLITE_FILE, TRAINING_FILE

from . import child
from .results import BackendResult, BenchReport, ColdStart, Latency, ModelInfo, ModelResult, Throughput
from .sizes import environment_sizes

BACKENDS = child.BACKENDS
REPO = Path(__file__).resolve().parents[2]

FULL = {
    "latency_calls": {"runtime": 5000, "onnxruntime": 5000, "litert": 5000, "keras-call": 500, "keras-predict": 200},
    "warmup": {"runtime": 300, "onnxruntime": 300, "litert": 300, "keras-call": 20, "keras-predict": 5},
    "batch": 1024,
    "batch_repeats": {"runtime": 15, "onnxruntime": 15, "litert": 3, "keras-call": 5, "keras-predict": 5},
    "big": 100_000,
    "big_repeats": {"runtime": 3, "onnxruntime": 3, "litert": 1, "keras-call": 3, "keras-predict": 3},
    "cold_runs": 5,
}
QUICK = {
    "latency_calls": {"runtime": 200, "onnxruntime": 200, "litert": 200, "keras-call": 10, "keras-predict": 5},
    "warmup": {"runtime": 20, "onnxruntime": 20, "litert": 20, "keras-call": 2, "keras-predict": 1},
    "batch": 64,
    "batch_repeats": {"runtime": 2, "onnxruntime": 2, "litert": 1, "keras-call": 1, "keras-predict": 1},
    "big": 256,
    "big_repeats": {"runtime": 1, "onnxruntime": 1, "litert": 1, "keras-call": 1, "keras-predict": 1},
    "cold_runs": 1,
}
LATENCY_POOL = 256  # different windows the latency calls cycle over
ARTIFACTS = {
    "runtime": [ONNX_FILE],
    "onnxruntime": [ONNX_FILE],
    "litert": [TFLITE_FILE],
    "keras-predict": [KERAS_FILE, SPEC_FILE],
    "keras-call": [KERAS_FILE, SPEC_FILE],
}
RUNTIME_ONLY, FULL_TOOLKIT = "runtime-only", "full toolkit"
ENVIRONMENT = {"runtime": RUNTIME_ONLY, "onnxruntime": RUNTIME_ONLY, "litert": FULL_TOOLKIT,
               "keras-predict": FULL_TOOLKIT, "keras-call": FULL_TOOLKIT}
NOTES = {
    "litert": "static batch 1: batch throughput is a loop of single-window invokes",
    "keras-predict": "model.predict(batch_size=1024) inside the trainer's pipeline (scaler in float64)",
}


class BenchError(EdgecastError):
    """A bundle cannot be benchmarked, or a measuring child process failed."""


def default_runtime_python() -> Path | None:
    """The runtime-only environment (`make .venv-runtime/.installed`), when it exists."""
    candidate = REPO / ".venv-runtime" / "bin" / "python"
    return candidate if candidate.exists() else None


def run(bundle_dirs: list[Path], quick: bool = False, runtime_python: Path | None = None,
        progress: Callable[[str], None] = print) -> BenchReport:
    """Benchmark every bundle; `runtime_python` defaults to .venv-runtime when present."""
    runtime_python = runtime_python if runtime_python is not None else default_runtime_python()
    environments = environment_sizes(runtime_python)
    models = [bench_bundle(Path(path), quick, runtime_python, environments, progress=progress)
              for path in bundle_dirs]
    return BenchReport(
        created=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        machine=machine(), versions=versions(), runtime_python=str(runtime_python) if runtime_python else None,
        environments=environments, models=models,
    )


def write_report(out: Path, report: dict) -> None:
    """A report's JSON form (`BenchReport.to_json()`, perhaps with more added), written atomically."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(out), report)


def bench_bundle(bundle_dir: Path, quick: bool, runtime_python: Path | None, environments: dict,
                 backends: tuple[str, ...] = BACKENDS, progress: Callable[[str], None] = print) -> ModelResult:
    settings = QUICK if quick else FULL
    spec = _read_json(bundle_dir / SPEC_FILE)
    for name in sorted({artifact for backend in backends for artifact in ARTIFACTS[backend]}):
        if not (bundle_dir / name).is_file():
            raise BenchError(f"{bundle_dir / name} is missing: run 'edgecast export {bundle_dir}' first")
    threads = (1,) if quick else tuple(sorted({1, os.cpu_count() or 1}))
    resets = _reset_flags(bundle_dir)
    windows = _windows(spec, settings["big"])
    result = ModelResult(
        model=ModelInfo(name=bundle_dir.name, path=str(bundle_dir), look_back=spec["look_back"],
                        n_features=len(spec["features"]), horizon=spec["horizon"], units=_units(bundle_dir)),
        settings=_settings_record(settings, quick, threads),
    )
    with tempfile.TemporaryDirectory(prefix="edgecast-bench-") as scratch:
        windows_path = Path(scratch) / "windows.npy"
        np.save(windows_path, windows)
        for backend in backends:
            reset = resets.get(ARTIFACTS[backend][0], False)
            latency, throughput = None, []
            for count in threads:
                progress(f"  {bundle_dir.name}: {backend} speed, {count} thread(s)")
                measured = _child(sys.executable, "speed", backend, bundle_dir, {
                    "windows": str(windows_path), "threads": count, "reset_variables": reset,
                    "latency_calls": settings["latency_calls"][backend] if count == 1 else 0,
                    "warmup": settings["warmup"][backend], "pool": LATENCY_POOL, "batch": settings["batch"],
                    "batch_repeats": settings["batch_repeats"][backend], "big": settings["big"],
                    "big_repeats": settings["big_repeats"][backend],
                })
                if "latency_us" in measured:
                    latency = Latency(**measured["latency_us"])
                throughput.append(Throughput(
                    threads=count, batch=settings["batch"], big=settings["big"],
                    batch_windows_per_s=measured["batch"]["windows_per_s"],
                    big_windows_per_s=measured["big"]["windows_per_s"], big_seconds=measured["big"]["seconds"],
                    cpu_per_wall=measured["big"]["cpu_per_wall"], checksum=measured["big"]["checksum"],
                ))
            runtime_only = ENVIRONMENT[backend] == RUNTIME_ONLY and runtime_python
            interpreter = runtime_python if runtime_only else Path(sys.executable)
            progress(f"  {bundle_dir.name}: {backend} cold start x{settings['cold_runs']} ({interpreter})")
            result.backends[backend] = BackendResult(
                latency=latency, throughput=throughput,
                cold_start=_cold(interpreter, backend, bundle_dir, windows[0], reset, settings["cold_runs"]),
                artifacts=ARTIFACTS[backend],
                artifact_bytes=sum((bundle_dir / name).stat().st_size for name in ARTIFACTS[backend]),
                environment=ENVIRONMENT[backend], environment_bytes=environments[ENVIRONMENT[backend]]["bytes"],
                note=NOTES.get(backend),
            )
    return result


def _settings_record(settings: dict, quick: bool, threads: tuple[int, ...]) -> dict:
    return {
        "quick": quick, "threads_measured": list(threads), "latency_threads": 1,
        "latency_calls": settings["latency_calls"], "batch": settings["batch"], "big": settings["big"],
        "big_repeats": settings["big_repeats"], "batch_repeats": settings["batch_repeats"],
        "keras_threads": "TensorFlow intra- and inter-op pools set to the count; tf.data may add its own threads",
        "cold_runs": settings["cold_runs"], "inputs": "uniform random raw windows over the training range, seed 0",
    }


# --- children --------------------------------------------------------------------


def _child(python: Path | str, mode: str, backend: str, bundle_dir: Path, options: dict,
           timeout: float = 1800) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONDONTWRITEBYTECODE="1")
    command = [str(python), child.__file__, mode, backend, str(bundle_dir), json.dumps(options)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise BenchError(f"benchmark child {mode} {backend} failed (exit {done.returncode}): " + " | ".join(tail))
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cold(python: Path, backend: str, bundle_dir: Path, window: np.ndarray, reset: bool, runs: int) -> ColdStart:
    options = {"window": window.tolist(), "reset_variables": reset}
    seconds, rss, maxrss, forecasts = [], [], [], []
    for _ in range(runs):
        start = time.clock_gettime(time.CLOCK_MONOTONIC)
        measured = _child(python, "cold", backend, bundle_dir, options)
        seconds.append(measured["t_first_forecast"] - start)
        rss.append((measured["vm_hwm_kib"] or measured["ru_maxrss_kib"]) / 1024)
        maxrss.append(measured["ru_maxrss_kib"] / 1024)
        forecasts.append(measured["forecast"])
    return ColdStart(runs=runs, median_s=statistics.median(seconds), all_s=seconds,
                     peak_rss_mib=statistics.median(rss), ru_maxrss_mib=statistics.median(maxrss),
                     python=str(python), forecast=forecasts[0])


def _reset_flags(bundle_dir: Path) -> dict[str, bool]:
    """Artifacts whose manifest entry says to reset variables before each window."""
    path = bundle_dir / MANIFEST_NAME
    if not path.is_file():
        return {}
    artifacts = _read_json(path).get("artifacts", {})
    return {name: bool(entry.get("reset_variables_before_invoke")) for name, entry in artifacts.items()}


def _windows(spec: dict, count: int) -> np.ndarray:
    low = np.asarray(spec["scaler"]["data_min"], np.float64)
    high = np.asarray(spec["scaler"]["data_max"], np.float64)
    shape = (count, spec["look_back"], len(low))
    return np.random.default_rng(0).uniform(low, high, size=shape).astype(np.float32)


def _units(bundle_dir: Path) -> int | None:
    training = bundle_dir / TRAINING_FILE
    if training.is_file():
        return _read_json(training).get("config", {}).get("units")
    return None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BenchError(f"{path}: cannot read ({exc})") from None


# --- context ---------------------------------------------------------------------


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
        "env": {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS", "OMP_", "MKL_"))},
    }


def versions() -> dict:
    found = {}
    for name in ("edgecast", "edgecast-runtime", "onnxruntime", "onnx", "numpy", "tensorflow", "keras", "ai-edge-litert"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found
