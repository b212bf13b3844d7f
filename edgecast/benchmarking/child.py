"""The measuring half of `edgecast bench`: a fresh process per measurement, one backend each.

    python child.py cold  BACKEND BUNDLE_DIR OPTIONS_JSON   # {"window": [[...]], "reset_variables": false}
    python child.py speed BACKEND BUNDLE_DIR OPTIONS_JSON   # {"windows": "x.npy", "threads": 1, ...}

Each prints one JSON object on its last line of stdout.

It is run by path: the runtime's and bare onnxruntime's cold starts run in the
runtime-only environment, where the `edgecast` toolkit is not installed. So this file
imports the standard library and numpy only, and the toolkit's runner
(edgecast.exporter.backends) only for backends that run in the toolkit's environment.

`cold` is the tiny script a user would write: import the backend, load the model,
forecast one window, nothing else. It reports the CLOCK_MONOTONIC time (system-wide on
Linux, so the parent can subtract its own spawn time) at the first forecast, and the
process's peak RSS at that moment: `ru_maxrss` and VmHWM (see `vm_hwm_kib`).
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np

    Predict = Callable[[np.ndarray], np.ndarray]

BACKENDS = ("runtime", "onnxruntime", "litert", "keras-predict", "keras-call")


def load(backend: str, bundle_dir: str, threads: int, reset_variables: bool = False) -> tuple[Predict, Predict]:
    """(predict_one(window [look_back, F]) -> [horizon], predict_many(windows [N, look_back, F]) -> [N, horizon])."""
    # The bundle's file names (edgecast_runtime.contract's ONNX_FILE, TFLITE_FILE) are spelled
    # out here: importing even the contract would load the runtime into every cold start.
    onnx_path = os.path.join(bundle_dir, "model.onnx")
    if backend == "runtime":
        from edgecast_runtime import Forecaster

        forecaster = Forecaster(onnx_path, threads=threads)
        return forecaster.predict, forecaster.predict_batch
    if backend not in BACKENDS:
        raise SystemExit(f"unknown backend {backend!r}; one of {', '.join(BACKENDS)}")
    from edgecast.exporter import backends

    if backend == "onnxruntime":
        runner = backends.open_onnx(onnx_path, threads)
    elif backend == "litert":
        runner = backends.open_tflite(os.path.join(bundle_dir, "model.tflite"), threads, reset_variables)
    else:
        runner = backends.load_keras(bundle_dir, threads, direct_call=backend == backends.KERAS_CALL)
    return runner.predict_one, runner.predict_many


def bare_onnxruntime(onnx_path: str) -> Predict:
    """What a user of onnxruntime alone writes; the cold start of the `onnxruntime` backend,
    which runs where the toolkit's runner cannot be imported."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    return lambda window: session.run(["forecast"], {"window": window[np.newaxis]})[0][0]


def cold(backend: str, bundle_dir: str, options: dict[str, Any]) -> dict[str, Any]:
    import resource

    import numpy as np

    window = np.asarray(options["window"], np.float32)
    if backend == "onnxruntime":
        predict_one = bare_onnxruntime(os.path.join(bundle_dir, "model.onnx"))
    else:
        predict_one, _ = load(backend, bundle_dir, 1, options.get("reset_variables", False))
    forecast = predict_one(window)
    first = time.clock_gettime(time.CLOCK_MONOTONIC)
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"t_first_forecast": first, "ru_maxrss_kib": rss_kib, "vm_hwm_kib": vm_hwm_kib(),
            "forecast": [float(v) for v in np.ravel(forecast)]}


def vm_hwm_kib() -> int | None:
    """This process's own peak RSS. Linux's ru_maxrss also counts the parent's peak at
    fork time (the forked copy's high-water mark survives exec), so a child spawned by a
    big parent reports at least the parent's size; /proc/self/status VmHWM belongs to the
    new image only. None where there is no /proc."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def speed(backend: str, bundle_dir: str, options: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Latency (when asked), batch throughput and one big call, timed by the toolkit's runner."""
    import numpy as np

    from edgecast.exporter.backends import latency_us, timed

    windows = np.load(options["windows"], mmap_mode="r")
    predict_one, predict_many = load(backend, bundle_dir, options["threads"], options.get("reset_variables", False))
    result = {}
    if options["latency_calls"]:
        pool = np.ascontiguousarray(windows[: options["pool"]])
        times = latency_us(predict_one, pool, options["latency_calls"], options["warmup"])
        result["latency_us"] = {"calls": len(times), "median": float(np.median(times)),
                                "p99": float(np.percentile(times, 99)), "mean": float(times.mean()),
                                "min": float(times.min())}
    block = np.ascontiguousarray(windows[: options["batch"]])
    predict_many(block)  # warm-up
    batch = timed(predict_many, block, options["batch_repeats"])
    result["batch"] = {"windows_per_s": float(np.median([len(block) / s for s in batch.wall_s]))}
    big = np.ascontiguousarray(windows[: options["big"]])
    predict_many(big[: options["batch"]])  # warm-up at a realistic size
    run = timed(predict_many, big, options["big_repeats"])
    result["big"] = {"seconds": run.median_s, "windows_per_s": len(big) / run.median_s,
                     "cpu_per_wall": run.cpu_per_wall, "checksum": float(np.asarray(run.forecasts, np.float64).sum())}
    return result


def main(argv: list[str]) -> None:
    mode, backend, bundle_dir, options = argv[1], argv[2], argv[3], json.loads(argv[4])
    if mode == "cold":
        report = cold(backend, bundle_dir, options)
    elif mode == "speed":
        report = speed(backend, bundle_dir, options)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    sys.stdout.write("\n" + json.dumps(report) + "\n")


if __name__ == "__main__":
    main(sys.argv)
