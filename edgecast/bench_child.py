"""The measuring half of `edgecast bench`: run in a child process, one backend at a time.

This file must stay standalone (standard library + numpy + the backend under test):
it is run by path, also by the runtime-only environment's interpreter, where the
`edgecast` toolkit is not installed.

    python bench_child.py cold  BACKEND BUNDLE_DIR WINDOW_JSON
    python bench_child.py speed BACKEND BUNDLE_DIR WINDOWS_NPY THREADS SETTINGS_JSON

Both print one JSON object on their last line of stdout.

`cold` is the tiny script a user would write: import the backend, load the model,
forecast one window, nothing else. It reports the CLOCK_MONOTONIC time (system-wide
on Linux, so the parent can subtract its own spawn time) at the first forecast, and
the process's peak RSS at that moment: `ru_maxrss` and VmHWM (see `_vm_hwm_kib`).
"""
import json
import os
import sys
import time

BACKENDS = ("runtime", "onnxruntime", "litert", "keras-predict", "keras-call")


def _scaler(bundle_dir):
    """MinMaxScaler's transform and its inverse for the target, from the spec, in float64
    exactly as scikit-learn computes them (a zero range counts as 1)."""
    import numpy as np

    with open(os.path.join(bundle_dir, "preprocessing.json"), encoding="utf-8") as handle:
        spec = json.load(handle)
    scaler = spec["scaler"]
    low, high = np.asarray(scaler["data_min"], np.float64), np.asarray(scaler["data_max"], np.float64)
    fmin, fmax = scaler["feature_range"]
    span = high - low
    scale = (fmax - fmin) / np.where(span == 0, 1.0, span)
    offset = fmin - low * scale
    return scale, offset


def load_backend(backend, bundle_dir, threads):
    """(predict_one(window [look_back, F]) -> [horizon], predict_many(windows [N, look_back, F]) -> [N, horizon])."""
    import numpy as np

    onnx_path = os.path.join(bundle_dir, "model.onnx")
    if backend == "runtime":
        from edgecast_runtime import Forecaster

        forecaster = Forecaster(onnx_path, threads=threads)
        return forecaster.predict, forecaster.predict_batch
    if backend == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        run = session.run

        def one(window):
            return run(["forecast"], {"window": window[np.newaxis]})[0][0]

        def many(windows):
            return run(["forecast"], {"window": windows})[0]

        return one, many
    if backend == "litert":
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=os.path.join(bundle_dir, "model.tflite"), num_threads=threads)
        interpreter.allocate_tensors()
        (source,) = interpreter.get_input_details()
        (sink,) = interpreter.get_output_details()
        set_tensor, invoke, get_tensor = interpreter.set_tensor, interpreter.invoke, interpreter.get_tensor
        source_index, sink_index = source["index"], sink["index"]

        def one(window):
            set_tensor(source_index, window[np.newaxis])
            invoke()
            return get_tensor(sink_index)[0]

        def many(windows):  # static batch 1: one invoke per window
            return np.stack([one(window) for window in windows])

        return one, many
    if backend in ("keras-predict", "keras-call"):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import tensorflow as tf

        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        import keras

        model = keras.saving.load_model(os.path.join(bundle_dir, "model.keras"), compile=False)
        scale, offset = _scaler(bundle_dir)
        target_scale, target_offset = scale[0], offset[0]

        def to_raw(predicted):
            return (np.asarray(predicted, np.float64) - target_offset) / target_scale

        def scaled(windows):
            return (windows * scale + offset).astype(np.float32)

        if backend == "keras-predict":
            def many(windows):
                return to_raw(model.predict(scaled(windows), batch_size=1024, verbose=0))
        else:
            def many(windows):
                return to_raw(model(scaled(windows), training=False))

        def one(window):
            return many(window[np.newaxis])[0]

        return one, many
    raise SystemExit(f"unknown backend {backend!r}; one of {', '.join(BACKENDS)}")


def cold(backend, bundle_dir, window_json):
    import resource

    import numpy as np

    window = np.asarray(json.loads(window_json), np.float32)
    one, _ = load_backend(backend, bundle_dir, 1)
    forecast = one(window)
    first = time.clock_gettime(time.CLOCK_MONOTONIC)
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"t_first_forecast": first, "ru_maxrss_kib": rss_kib, "vm_hwm_kib": _vm_hwm_kib(),
            "forecast": [float(v) for v in np.ravel(forecast)]}


def _vm_hwm_kib():
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


def speed(backend, bundle_dir, windows_npy, threads, settings):
    import numpy as np

    windows = np.load(windows_npy, mmap_mode="r")
    one, many = load_backend(backend, bundle_dir, threads)
    result = {"backend": backend, "threads": threads}
    if settings.get("latency_calls"):
        pool = np.ascontiguousarray(windows[: settings["pool"]])
        calls, warmup = settings["latency_calls"], settings["warmup"]
        for i in range(warmup):
            one(pool[i % len(pool)])
        times = []
        clock = time.perf_counter_ns
        for i in range(calls):
            window = pool[i % len(pool)]
            start = clock()
            one(window)
            times.append(clock() - start)
        times_us = np.asarray(times, np.float64) / 1000.0
        result["latency_us"] = {
            "calls": calls,
            "median": float(np.median(times_us)),
            "p99": float(np.percentile(times_us, 99)),
            "mean": float(times_us.mean()),
            "min": float(times_us.min()),
        }
    batch, repeats = settings["batch"], settings["batch_repeats"]
    block = np.ascontiguousarray(windows[:batch])
    many(block)  # warm-up
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        many(block)
        rates.append(batch / (time.perf_counter() - start))
    result["batch"] = {"windows": batch, "repeats": repeats, "windows_per_s": float(np.median(rates))}
    n_big = settings["big"]
    big = np.ascontiguousarray(windows[:n_big])
    many(big[:batch])  # warm-up at a realistic size
    seconds, cpu = [], []
    for _ in range(settings.get("big_repeats", 1)):
        start, start_cpu = time.perf_counter(), time.process_time()
        forecasts = many(big)
        seconds.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    elapsed = float(np.median(seconds))
    result["big"] = {"windows": n_big, "repeats": len(seconds), "seconds": elapsed, "windows_per_s": n_big / elapsed,
                     "all_seconds": seconds, "cpu_per_wall": float(np.sum(cpu) / np.sum(seconds)),
                     "checksum": float(np.asarray(forecasts, np.float64).sum())}
    return result


def main(argv):
    mode, backend, bundle_dir = argv[1], argv[2], argv[3]
    if mode == "cold":
        report = cold(backend, bundle_dir, argv[4])
    elif mode == "speed":
        report = speed(backend, bundle_dir, argv[4], int(argv[5]), json.loads(argv[6]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    sys.stdout.write("\n" + json.dumps(report) + "\n")


if __name__ == "__main__":
    main(sys.argv)
