"""`edgecast bench`: one model, five backends, the same inputs, one report.

Backends: the edgecast runtime (`Forecaster`), bare onnxruntime on the same model.onnx,
LiteRT's interpreter on model.tflite (static batch 1), Keras `predict` and a direct
Keras call (`model(x, training=False)`). Keras runs inside the trainer's own pipeline
(scaler, model, inverse), so every backend turns the same raw windows into the same
raw-units forecasts; all but the runtime run through export/backends.py, the runner
parity and the accuracy report use.

Every backend runs in its own child process (child.py), so thread counts hold
(TensorFlow fixes its thread pools at start-up) and no backend warms another's caches;
the backends are timed interleaved, in rounds (interleaved.py, rounds.py), so load from
elsewhere on the machine lands on all of them alike. Measured per backend:
  * single-window latency, median and p99 over every call of every round, 1 thread;
  * throughput in windows/s at batch 1024 (median over rounds) and for one call on
    100,000 windows, at 1 thread and at every core; LiteRT has batch 1 only, so its
    "batch" is a loop of single invokes;
  * the ratios between backends (runtime/onnxruntime, runtime/LiteRT, ...): per round,
    then the median over rounds with a bootstrap 95 % interval;
  * cold start: spawn of a new process to its first forecast, median of several runs
    of a tiny script (import, load, forecast), interleaved too, and its peak RSS;
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

from edgecast.base import write_json_atomic
from edgecast_runtime.contract import KERAS_FILE, MANIFEST_NAME, ONNX_FILE, SPEC_FILE, TFLITE_FILE, TRAINING_FILE
from edgecast_runtime.spec import Spec, SpecError

from . import child
from .interleaved import measure
from .results import BackendResult, BenchError, BenchReport, ColdStart, ModelInfo, ModelResult
from .rounds import round_order
from .sizes import environment_sizes

BACKENDS = child.BACKENDS
REPO = Path(__file__).resolve().parents[2]

# Latency blocks are single-window calls per backend per round: 40 rounds give 5,000
# calls of the runtime, onnxruntime and LiteRT, 480 of a Keras call, 200 of Keras predict.
# The rounds run in 8 fresh process sets of 5 (one full rotation of the five backends each).
FULL = {
    "rounds": 40,
    "process_sets": 8,
    "latency_block": {"runtime": 125, "onnxruntime": 125, "litert": 125, "keras-call": 12, "keras-predict": 5},
    "warmup": {"runtime": 300, "onnxruntime": 300, "litert": 300, "keras-call": 20, "keras-predict": 5},
    "batch": 1024,
    "big": 100_000,
    "big_repeats": {"runtime": 3, "onnxruntime": 3, "litert": 1, "keras-call": 3, "keras-predict": 3},
    "cold_runs": 5,
}
QUICK = {
    "rounds": 4,
    "process_sets": 2,
    "latency_block": {"runtime": 50, "onnxruntime": 50, "litert": 50, "keras-call": 3, "keras-predict": 2},
    "warmup": {"runtime": 20, "onnxruntime": 20, "litert": 20, "keras-call": 2, "keras-predict": 1},
    "batch": 64,
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


def default_runtime_python() -> Path | None:
    """The runtime-only environment (`make .venv-runtime/.installed`), when it exists."""
    candidate = REPO / ".venv-runtime" / "bin" / "python"
    return candidate if candidate.exists() else None


def run(bundle_dirs: list[Path], quick: bool = False, runtime_python: Path | None = None,
        progress: Callable[[str], None] = print) -> BenchReport:
    """Benchmark every bundle; `runtime_python` defaults to .venv-runtime when present."""
    runtime_python = runtime_python if runtime_python is not None else default_runtime_python()
    environments = environment_sizes(runtime_python)
    load_before = _load_average()
    models = [bench_bundle(Path(path), quick, runtime_python, environments, progress=progress)
              for path in bundle_dirs]
    return BenchReport(
        created=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        machine={**machine(), "load_average_before": load_before, "load_average_after": _load_average()},
        versions=versions(), runtime_python=str(runtime_python) if runtime_python else None,
        environments=environments, models=models,
    )


def write_report(out: Path, report: dict) -> None:
    """A report's JSON form (`BenchReport.to_json()`, perhaps with more added), written atomically."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(out), report)


def bench_bundle(bundle_dir: Path, quick: bool, runtime_python: Path | None, environments: dict,
                 backends: tuple[str, ...] = BACKENDS, progress: Callable[[str], None] = print) -> ModelResult:
    settings = QUICK if quick else FULL
    for name in sorted({artifact for backend in backends for artifact in ARTIFACTS[backend]}):
        if not (bundle_dir / name).is_file():
            raise BenchError(f"{bundle_dir / name} is missing: run 'edgecast export {bundle_dir}' first")
    spec = _read_spec(bundle_dir / "preprocessing.json")
    threads = (1,) if quick else tuple(sorted({1, os.cpu_count() or 1}))
    resets = _reset_flags(bundle_dir)
    windows = _windows(spec, settings["big"])
    result = ModelResult(
        model=ModelInfo(name=bundle_dir.name, path=str(bundle_dir), look_back=spec.look_back,
                        n_features=spec.n_features, horizon=spec.horizon, units=_units(bundle_dir)),
        settings=_settings_record(settings, quick, threads),
    )
    with tempfile.TemporaryDirectory(prefix="edgecast-bench-") as scratch:
        windows_path = Path(scratch) / "windows.npy"
        np.save(windows_path, windows)

        def child_options(backend: str) -> dict:
            return {"windows": str(windows_path), "reset_variables": resets.get(ARTIFACTS[backend][0], False),
                    "warmup": settings["warmup"][backend], "pool": LATENCY_POOL, "batch": settings["batch"],
                    "big": settings["big"]}

        speeds = [measure(sys.executable, bundle_dir, backends, count, settings, child_options, progress)
                  for count in threads]
        result.ratios = [found for speed in speeds for found in speed.ratios]
        colds = _colds(bundle_dir, backends, windows[0], resets, settings["cold_runs"], runtime_python, progress)
        for backend in backends:
            result.backends[backend] = BackendResult(
                latency=speeds[0].latency.get(backend), throughput=[speed.throughput[backend] for speed in speeds],
                cold_start=colds[backend], artifacts=ARTIFACTS[backend],
                artifact_bytes=sum((bundle_dir / name).stat().st_size for name in ARTIFACTS[backend]),
                environment=ENVIRONMENT[backend], environment_bytes=environments[ENVIRONMENT[backend]]["bytes"],
                note=NOTES.get(backend),
            )
    return result


def _colds(bundle_dir: Path, backends: tuple[str, ...], window: np.ndarray, resets: dict[str, bool], runs: int,
           runtime_python: Path | None, progress: Callable[[str], None]) -> dict[str, ColdStart]:
    """Cold starts interleaved like the speed rounds: run k starts every backend once, in rotating order."""
    def interpreter(backend: str) -> Path:
        runtime_only = ENVIRONMENT[backend] == RUNTIME_ONLY and runtime_python
        return runtime_python if runtime_only else Path(sys.executable)

    progress(f"  {bundle_dir.name}: cold starts, {runs} round(s) of {', '.join(backends)}")
    found: dict[str, list[dict]] = {backend: [] for backend in backends}
    for index in range(runs):
        for backend in round_order(backends, index):
            options = {"window": window.tolist(), "reset_variables": resets.get(ARTIFACTS[backend][0], False)}
            start = time.clock_gettime(time.CLOCK_MONOTONIC)
            measured = _child(interpreter(backend), "cold", backend, bundle_dir, options)
            found[backend].append({**measured, "seconds": measured["t_first_forecast"] - start})
    colds = {}
    for backend, runs_of in found.items():
        seconds = [run["seconds"] for run in runs_of]
        colds[backend] = ColdStart(
            runs=runs, median_s=statistics.median(seconds), all_s=seconds,
            peak_rss_mib=statistics.median((run["vm_hwm_kib"] or run["ru_maxrss_kib"]) / 1024 for run in runs_of),
            ru_maxrss_mib=statistics.median(run["ru_maxrss_kib"] / 1024 for run in runs_of),
            python=str(interpreter(backend)), forecast=runs_of[0]["forecast"])
    return colds


def _settings_record(settings: dict, quick: bool, threads: tuple[int, ...]) -> dict:
    return {
        "quick": quick, "threads_measured": list(threads), "latency_threads": 1,
        "rounds": settings["rounds"], "process_sets": settings["process_sets"],
        "latency_block": settings["latency_block"],
        "latency_calls": {name: settings["rounds"] * calls for name, calls in settings["latency_block"].items()},
        "batch": settings["batch"], "big": settings["big"], "big_repeats": settings["big_repeats"],
        "interleaving": "each round times a block of single-window calls and one batch call of every backend, "
                        "in an order rotated by one each round; every backend in its own process, the rounds "
                        "spread over fresh process sets (started, loaded, a few rounds, closed); the big call "
                        "is timed once per backend after the last set's rounds",
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


def _reset_flags(bundle_dir: Path) -> dict[str, bool]:
    """Artifacts whose manifest entry says to reset variables before each window."""
    path = bundle_dir / MANIFEST_NAME
    if not path.is_file():
        return {}
    artifacts = _read_json(path).get("artifacts", {})
    return {name: bool(entry.get("reset_variables_before_invoke")) for name, entry in artifacts.items()}


def _windows(spec: Spec, count: int) -> np.ndarray:
    low = np.asarray(spec.scaler.data_min, np.float64)
    high = np.asarray(spec.scaler.data_max, np.float64)
    shape = (count, spec.look_back, len(low))
    return np.random.default_rng(0).uniform(low, high, size=shape).astype(np.float32)


def _units(bundle_dir: Path) -> int | None:
    training = bundle_dir / TRAINING_FILE
    if training.is_file():
        return _read_json(training).get("config", {}).get("units")
    return None


def _read_spec(path: Path) -> Spec:
    try:
        return Spec.from_dict(_read_json(path))
    except SpecError as exc:
        raise BenchError(f"{path}: {exc}") from None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BenchError(f"{path}: cannot read ({exc})") from None


# --- context ---------------------------------------------------------------------


def _load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (as `uptime` prints them), where there are any."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


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
