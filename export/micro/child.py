"""One TensorFlow Lite Micro run in its own process: `python -m edgecast.exporter.micro.child`.

TFLM's interpreter aborts or crashes the whole process (SIGSEGV, SIGABRT) when its arena
is too small for some ops, instead of raising, so every TFLM run goes through this
child. The request is one JSON object on stdin:
  {"model": path, "arena_bytes": int, "inputs": path of a float32 .npy [n, look_back, features],
   "outputs": path to write a float64 .npy [n, horizon] (optional),
   "timing_invokes": int (optional; also times LiteRT on the same file and windows)}
The answer is one JSON line on stdout. Exit 0: ran; 3: TFLM refused to allocate (a
RuntimeError); anything else (a signal) means it crashed.
"""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tflite_micro.python.tflite_micro.runtime import Interpreter as MicroInterpreter

REFUSED = 3


def tflm_forecasts(interpreter: MicroInterpreter, x: np.ndarray) -> np.ndarray:
    """One forecast per window, each from freshly reset state (the fused LSTM keeps h and c)."""
    rows = []
    for window in x:
        interpreter.reset()
        interpreter.set_input(window[np.newaxis], 0)
        interpreter.invoke()
        rows.append(np.asarray(interpreter.get_output(0))[0].astype(np.float64))
    return np.asarray(rows)


def median_microseconds(run_one: Callable[[np.ndarray], np.ndarray], windows: np.ndarray, invokes: int) -> float:
    """Median wall time of one forecast (reset, fill input, invoke, read output), cycling the windows."""
    timings = []
    for i in range(invokes):
        window = windows[i % len(windows)][np.newaxis]
        start = time.perf_counter()
        run_one(window)
        timings.append(time.perf_counter() - start)
    return float(np.median(timings) * 1e6)


def litert_runner(model_path: str) -> Callable[[np.ndarray], np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=model_path, num_threads=1)
    interpreter.allocate_tensors()
    (window,) = interpreter.get_input_details()
    (forecast,) = interpreter.get_output_details()

    def run_one(x: np.ndarray) -> np.ndarray:
        interpreter.reset_all_variables()
        interpreter.set_tensor(window["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(forecast["index"])

    return run_one


def main() -> int:
    request = json.loads(sys.stdin.read())
    from tflite_micro.python.tflite_micro import runtime

    try:
        interpreter = runtime.Interpreter.from_file(request["model"], arena_size=int(request["arena_bytes"]))
    except RuntimeError as exc:
        print(json.dumps({"ok": False, "error": str(exc)}))
        return REFUSED
    x = np.load(request["inputs"]).astype(np.float32)
    answer = {"ok": True}
    forecasts = tflm_forecasts(interpreter, x)
    if request.get("outputs"):
        np.save(request["outputs"], forecasts)
    invokes = int(request.get("timing_invokes") or 0)
    if invokes:
        def tflm_one(window: np.ndarray) -> np.ndarray:
            interpreter.reset()
            interpreter.set_input(window, 0)
            interpreter.invoke()
            return interpreter.get_output(0)

        answer["tflm_us"] = median_microseconds(tflm_one, x, invokes)
        answer["litert_us"] = median_microseconds(litert_runner(request["model"]), x, invokes)
        answer["timing_invokes"] = invokes
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
