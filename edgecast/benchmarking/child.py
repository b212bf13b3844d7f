"""The measuring half of `edgecast bench`: a fresh process per measurement, one backend each.

    python child.py cold  BACKEND BUNDLE_DIR OPTIONS_JSON   # {"window": [[...]], "reset_variables": false}
    python child.py serve BACKEND BUNDLE_DIR OPTIONS_JSON   # {"windows": "x.npy", "threads": 1, ...}

`cold` prints one JSON object on its last line of stdout. `serve` loads the backend,
warms it up, says {"ready": true} and then answers one JSON request per line of stdin
with one JSON line ({"op": "latency", "calls": K}: K single-window calls, each timed;
{"op": "batch"}: one call on the batch block; {"op": "big", "repeats": R}: the big call;
{"op": "quit"}), so the parent can time every backend in turn, round after round
(rounds.py), while each stays in its own process with its own thread settings.

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


def time_block(predict_one: Predict, pool: np.ndarray, calls: int, start: int,
               clock: Callable[[], int] = time.perf_counter_ns) -> list[float]:
    """Microseconds of each of `calls` single-window calls, cycling over `pool` from
    position `start` (successive blocks go on where the last one stopped)."""
    elapsed = []
    for index in range(start, start + calls):
        window = pool[index % len(pool)]
        began = clock()
        predict_one(window)
        elapsed.append((clock() - began) / 1000.0)
    return elapsed


def serve(backend: str, bundle_dir: str, options: dict[str, Any]) -> None:
    """Answer timing requests on stdin until "quit" or end of input (see the module's doc)."""
    import numpy as np

    from edgecast.exporter.backends import timed

    # The protocol goes to a private copy of stdout; fd 1 becomes stderr, so nothing a
    # library prints can corrupt it.
    answers = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    windows = np.load(options["windows"], mmap_mode="r")
    predict_one, predict_many = load(backend, bundle_dir, options["threads"], options.get("reset_variables", False))
    pool = np.ascontiguousarray(windows[: options["pool"]])
    block = np.ascontiguousarray(windows[: options["batch"]])
    time_block(predict_one, pool, options["warmup"], 0)
    predict_many(block)
    answers.write(json.dumps({"ready": True}) + "\n")
    position = 0
    for line in sys.stdin:
        request = json.loads(line)
        op = request["op"]
        if op == "quit":
            break
        if op == "latency":
            answer: dict[str, Any] = {"us": time_block(predict_one, pool, request["calls"], position)}
            position += request["calls"]
        elif op == "batch":
            run = timed(predict_many, block, 1)
            answer = {"seconds": run.wall_s[0], "windows": len(block)}
        elif op == "big":
            big = np.ascontiguousarray(windows[: options["big"]])
            run = timed(predict_many, big, request["repeats"])
            answer = {"seconds": run.median_s, "windows_per_s": len(big) / run.median_s,
                      "cpu_per_wall": run.cpu_per_wall,
                      "checksum": float(np.asarray(run.forecasts, np.float64).sum())}
        else:
            answer = {"error": f"unknown op {op!r}"}
        answers.write(json.dumps(answer) + "\n")


def main(argv: list[str]) -> None:
    mode, backend, bundle_dir, options = argv[1], argv[2], argv[3], json.loads(argv[4])
    if mode == "cold":
        report = cold(backend, bundle_dir, options)
    elif mode == "serve":
        serve(backend, bundle_dir, options)
        return
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    sys.stdout.write("\n" + json.dumps(report) + "\n")


if __name__ == "__main__":
    main(sys.argv)
