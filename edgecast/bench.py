"""`edgecast bench`: one model, five backends, the same inputs, one JSON report.

Backends: the edgecast runtime (`Forecaster`), bare onnxruntime on the same
model.onnx, LiteRT's interpreter on model.tflite (static batch 1), Keras `predict`
and Keras direct call (`model(x, training=False)`). Keras gets the scaler around it
(MinMaxScaler in float64, as the trainer's reference does), so every backend turns
the same raw windows into the same raw-units forecasts.

Every measurement runs in a child process (edgecast/bench_child.py), so thread
counts hold (TensorFlow fixes its thread pools at start-up) and no backend warms
another's caches. Measured per backend:
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
import re
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np

from edgecast.common import write_json_atomic

BACKENDS = ("runtime", "onnxruntime", "litert", "keras-predict", "keras-call")
CHILD = Path(__file__).with_name("bench_child.py")
REPO = Path(__file__).resolve().parents[1]
SCHEMA_VERSION = 1

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
ARTIFACTS = {
    "runtime": ["model.onnx"],
    "onnxruntime": ["model.onnx"],
    "litert": ["model.tflite"],
    "keras-predict": ["model.keras", "preprocessing.json"],
    "keras-call": ["model.keras", "preprocessing.json"],
}
ENVIRONMENT = {"runtime": "runtime-only", "onnxruntime": "runtime-only", "litert": "full toolkit",
               "keras-predict": "full toolkit", "keras-call": "full toolkit"}


class BenchError(RuntimeError):
    pass


def default_runtime_python() -> Path | None:
    """The runtime-only environment (`make .venv-runtime/.installed`), when it exists."""
    candidate = REPO / ".venv-runtime" / "bin" / "python"
    return candidate if candidate.exists() else None


def bench_bundle(bundle_dir: Path, quick: bool = False, runtime_python: Path | None = None,
                 thread_counts: tuple[int, ...] | None = None, backends=BACKENDS, progress=print,
                 environments: dict | None = None) -> dict:
    bundle_dir = Path(bundle_dir)
    settings = QUICK if quick else FULL
    spec = _read_json(bundle_dir / "preprocessing.json")
    for name in {a for b in backends for a in ARTIFACTS[b]}:
        if not (bundle_dir / name).is_file():
            raise BenchError(f"{bundle_dir / name} is missing: run 'edgecast export {bundle_dir}' first")
    cores = os.cpu_count() or 1
    threads = thread_counts or ((1,) if quick else tuple(sorted({1, cores})))
    look_back, n_features = spec["look_back"], len(spec["features"])
    runtime_python = runtime_python if runtime_python is not None else default_runtime_python()
    windows = _windows(spec, settings["big"])
    report = {
        "model": {
            "name": bundle_dir.name, "path": str(bundle_dir), "look_back": look_back, "n_features": n_features,
            "horizon": spec["horizon"], "units": _units(bundle_dir),
        },
        "backends": {},
    }
    with tempfile.TemporaryDirectory(prefix="edgecast-bench-") as scratch:
        windows_path = Path(scratch) / "windows.npy"
        np.save(windows_path, windows)
        for backend in backends:
            entry = report["backends"][backend] = {"threads_latency": 1}
            for count in threads:
                progress(f"  {bundle_dir.name}: {backend} speed, {count} thread(s)")
                child_settings = {
                    "latency_calls": settings["latency_calls"][backend] if count == 1 else 0,
                    "warmup": settings["warmup"][backend], "pool": 256, "batch": settings["batch"],
                    "batch_repeats": settings["batch_repeats"][backend], "big": settings["big"],
                    "big_repeats": settings["big_repeats"][backend],
                }
                result = _child(sys.executable, ["speed", backend, str(bundle_dir), str(windows_path), str(count),
                                                 json.dumps(child_settings)])
                if "latency_us" in result:
                    entry["latency_us"] = result["latency_us"]
                entry.setdefault("throughput", []).append({
                    "threads": count,
                    f"batch_{settings['batch']}_windows_per_s": result["batch"]["windows_per_s"],
                    f"n_{settings['big']}_windows_per_s": result["big"]["windows_per_s"],
                    f"n_{settings['big']}_seconds": result["big"]["seconds"],
                    "cpu_per_wall": result["big"]["cpu_per_wall"],
                    f"n_{settings['big']}_windows_per_cpu_s": result["big"]["windows_per_s"] / max(result["big"]["cpu_per_wall"], 1e-9),
                    "checksum": result["big"]["checksum"],
                })
            interpreter = runtime_python if (ENVIRONMENT[backend] == "runtime-only" and runtime_python) else Path(sys.executable)
            progress(f"  {bundle_dir.name}: {backend} cold start x{settings['cold_runs']} ({interpreter})")
            entry["cold_start"] = _cold(interpreter, backend, bundle_dir, windows[0], settings["cold_runs"])
            entry["artifact_bytes"] = sum((bundle_dir / name).stat().st_size for name in ARTIFACTS[backend])
            entry["artifacts"] = ARTIFACTS[backend]
            entry["environment"] = ENVIRONMENT[backend]
            if backend == "litert":
                entry["note"] = "static batch 1: batch throughput is a loop of single-window invokes"
            if backend == "keras-predict":
                entry["note"] = "model.predict(batch_size=1024) on the scaled windows, scaler in float64 numpy"
    report["settings"] = {
        "quick": quick, "threads_measured": list(threads), "latency_threads": 1,
        "latency_calls": settings["latency_calls"], "batch": settings["batch"], "big": settings["big"],
        "big_repeats": settings["big_repeats"], "batch_repeats": settings["batch_repeats"],
        "keras_threads": "TensorFlow intra- and inter-op pools set to the count; tf.data may add its own threads",
        "cold_runs": settings["cold_runs"], "inputs": "uniform random raw windows over the training range, seed 0",
    }
    if environments is not None:
        for entry in report["backends"].values():
            entry["environment_bytes"] = environments[entry["environment"]]["bytes"]
    report["targets"] = targets(report, environments)
    return report


def run(bundle_dirs: list[Path], out: Path | None, quick: bool = False, runtime_python: Path | None = None,
        progress=print) -> dict:
    """Benchmark every bundle; write the JSON report (atomically) when `out` is given."""
    runtime_python = runtime_python if runtime_python is not None else default_runtime_python()
    environments = environment_sizes(runtime_python)
    report = {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "versions": versions(),
        "runtime_python": str(runtime_python) if runtime_python else None,
        "environments": environments,
        "models": [bench_bundle(path, quick, runtime_python, progress=progress, environments=environments)
                   for path in bundle_dirs],
    }
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out, report)
    return report


# --- targets ---------------------------------------------------------------------


def targets(model_report: dict, environments: dict | None) -> list[dict]:
    """The issue's targets, each with its measured ratio and whether it is met."""
    b = model_report["backends"]
    found = []

    def add(name, value, limit, met, unit="x"):
        found.append({"target": name, "value": value, "limit": limit, "unit": unit, "met": bool(met)})

    def latency(name):
        return b[name]["latency_us"]["median"] if name in b and "latency_us" in b[name] else None

    rt, ort_, lite, kp = latency("runtime"), latency("onnxruntime"), latency("litert"), latency("keras-predict")
    if rt and ort_:
        add("runtime latency / bare onnxruntime latency", rt / ort_, 1.15, rt / ort_ <= 1.15)
    if rt and lite:
        add("runtime latency / LiteRT latency", rt / lite, 1.0, rt < lite)
    if rt and kp:
        add("Keras predict latency / runtime latency", kp / rt, 1000, kp / rt >= 1000)
    if "runtime" in b and "keras-predict" in b:
        cold_rt, cold_k = b["runtime"]["cold_start"], b["keras-predict"]["cold_start"]
        ratio = cold_rt["median_s"] / cold_k["median_s"]
        add("runtime cold start / Keras cold start", ratio, 0.1, ratio <= 0.1)
        ratio = cold_rt["peak_rss_mib"] / cold_k["peak_rss_mib"]
        add("runtime peak RSS / Keras peak RSS", ratio, 0.2, ratio <= 0.2)
        for rt_row, k_row in zip(b["runtime"]["throughput"], b["keras-predict"]["throughput"]):
            key = next(k for k in rt_row if k.startswith("n_") and k.endswith("_windows_per_s"))
            ratio = rt_row[key] / k_row[key]
            add(f"runtime / Keras predict throughput, {key[2:-14]} windows, {rt_row['threads']} thread(s)",
                ratio, 1.0, ratio >= 1.0)
            cpu_key = key.replace("_windows_per_s", "_windows_per_cpu_s")
            if cpu_key in rt_row and cpu_key in k_row:  # less sensitive to other load on a shared machine
                found[-1]["ratio_per_cpu_second"] = rt_row[cpu_key] / k_row[cpu_key]
    if environments and "runtime-only" in environments and "full toolkit" in environments:
        ratio = environments["runtime-only"]["bytes"] / environments["full toolkit"]["bytes"]
        add("runtime-only environment / full toolkit environment", ratio, 0.1, ratio <= 0.1)
    return found


# --- children --------------------------------------------------------------------


def _child(python, args: list[str], timeout: float = 1800) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run([str(python), str(CHILD), *args], capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise BenchError(f"benchmark child {' '.join(args[:2])} failed (exit {done.returncode}): " + " | ".join(tail))
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cold(python, backend: str, bundle_dir: Path, window: np.ndarray, runs: int) -> dict:
    window_json = json.dumps(window.tolist())
    seconds, rss, maxrss, forecasts = [], [], [], []
    for _ in range(runs):
        start = time.clock_gettime(time.CLOCK_MONOTONIC)
        result = _child(python, ["cold", backend, str(bundle_dir), window_json])
        seconds.append(result["t_first_forecast"] - start)
        rss.append((result["vm_hwm_kib"] or result["ru_maxrss_kib"]) / 1024)
        maxrss.append(result["ru_maxrss_kib"] / 1024)
        forecasts.append(result["forecast"])
    return {
        "runs": runs, "median_s": statistics.median(seconds), "all_s": seconds,
        "peak_rss_mib": statistics.median(rss), "ru_maxrss_mib": statistics.median(maxrss),
        "peak_rss_how": "VmHWM of the child at its first forecast (its ru_maxrss also counts the spawning "
                        "parent's peak, inherited through fork and exec on Linux)",
        "python": str(python), "forecast": forecasts[0],
    }


def _windows(spec: dict, count: int) -> np.ndarray:
    low = np.asarray(spec["scaler"]["data_min"], np.float64)
    high = np.asarray(spec["scaler"]["data_max"], np.float64)
    shape = (count, spec["look_back"], len(low))
    return np.random.default_rng(0).uniform(low, high, size=shape).astype(np.float32)


def _units(bundle_dir: Path):
    training = bundle_dir / "training.json"
    if training.is_file():
        return _read_json(training).get("config", {}).get("units")
    return None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BenchError(f"{path}: cannot read ({exc})") from None


# --- environments ----------------------------------------------------------------


def environment_sizes(runtime_python: Path | None) -> dict:
    """Installed bytes: the toolkit's site-packages, and what the runtime needs.

    "runtime-only" is the runtime-only venv's site-packages when it exists (less pip,
    setuptools and the test tools that `make` puts there, which a hub does not need),
    else the closure of edgecast-runtime's requirements measured in this environment.
    """
    toolkit_site = Path(sysconfig.get_paths()["purelib"])
    sizes = {"full toolkit": {"bytes": _tree_bytes(toolkit_site), "path": str(toolkit_site),
                              "how": "all of the toolkit venv's site-packages"}}
    closure = _closure("edgecast-runtime")
    sizes["runtime closure (measured in toolkit venv)"] = {
        "bytes": sum(_dist_bytes(name) for name in closure), "distributions": sorted(closure),
        "how": "files of edgecast-runtime and its transitive requirements (RECORD)",
    }
    if runtime_python:
        found = subprocess.run([str(runtime_python), "-I", "-c", _RUNTIME_SIZE_SCRIPT], capture_output=True, text=True,
                               cwd="/")
        if found.returncode == 0:
            measured = json.loads(found.stdout)
            sizes["runtime-only"] = {**measured, "how": "runtime venv site-packages minus pip, setuptools and test tools"}
    if "runtime-only" not in sizes:
        sizes["runtime-only"] = dict(sizes["runtime closure (measured in toolkit venv)"])
    return sizes


_RUNTIME_SIZE_SCRIPT = r"""
import json, os, sysconfig, importlib.metadata as md
site = sysconfig.get_paths()["purelib"]
def tree(p):
    total = 0
    for root, _, files in os.walk(p):
        for f in files:
            try: total += os.lstat(os.path.join(root, f)).st_size
            except OSError: pass
    return total
skip = {"pip", "setuptools", "wheel", "pytest", "hypothesis", "iniconfig", "pluggy", "pygments", "sortedcontainers", "attrs"}
excluded = 0
names = []
for dist in md.distributions():
    name = dist.metadata["Name"].lower()
    if name in skip:
        excluded += sum(os.lstat(os.path.join(site, str(f))).st_size for f in (dist.files or []) if os.path.exists(os.path.join(site, str(f))))
    else:
        names.append(name)
total = tree(site)
print(json.dumps({"bytes": total - excluded, "site_packages_bytes": total, "path": site, "distributions": sorted(names)}))
"""


def _tree_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _closure(root: str) -> set[str]:
    from packaging.requirements import Requirement

    seen, todo = set(), [root]
    while todo:
        name = _canonical(todo.pop())
        if name in seen:
            continue
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen


def _dist_bytes(name: str) -> int:
    dist = metadata.distribution(name)
    total = 0
    for file in dist.files or []:
        path = Path(dist.locate_file(file))
        if path.is_file():
            total += path.stat().st_size
    if name == "edgecast-runtime":  # editable install: the sources live in the repo
        import edgecast_runtime

        total += sum(p.stat().st_size for p in Path(edgecast_runtime.__file__).parent.glob("*.py"))
    return total


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


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


# --- tables ----------------------------------------------------------------------


def markdown(report: dict) -> str:
    """The results as Markdown tables (one row per model and backend) and the targets."""
    lines = []
    env = report["environments"]
    for model in report["models"]:
        m = model["model"]
        s = model["settings"]
        threads = s["threads_measured"]
        lines.append(f"### {m['name']}: look-back {m['look_back']}, {m['units']} units, {m['n_features']} feature(s)\n")
        head = ["backend", "latency median µs (1 thr)", "p99 µs"]
        for t in threads:
            head += [f"batch {s['batch']} win/s ({t} thr)", f"{s['big']:,} win/s ({t} thr)"]
        head += ["cold start s", "peak RSS MiB", "artifact bytes", "env MB"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for name, b in model["backends"].items():
            lat = b.get("latency_us", {})
            row = [name, _fmt(lat.get("median")), _fmt(lat.get("p99"))]
            for t_row in b["throughput"]:
                row += [_fmt(t_row[f"batch_{s['batch']}_windows_per_s"]), _fmt(t_row[f"n_{s['big']}_windows_per_s"])]
            row += [f"{b['cold_start']['median_s']:.2f}", f"{b['cold_start']['peak_rss_mib']:.0f}",
                    f"{b['artifact_bytes']:,}", f"{env[b['environment']]['bytes'] / 1e6:.0f}"]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        lines.append("| target | measured | limit | met |")
        lines.append("|---|---|---|---|")
        for t in model["targets"]:
            lines.append(f"| {t['target']} | {t['value']:.3g}× | {t['limit']:g}× | {'yes' if t['met'] else '**no**'} |")
        lines.append("")
    return "\n".join(lines)


def _fmt(value) -> str:
    if value is None:
        return "–"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if value < 10 else f"{value:.1f}"
