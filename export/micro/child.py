"""One TensorFlow Lite Micro run in its own process: `python -m edgecast.exporter.micro.child`.

TFLM's interpreter aborts or crashes the whole process (SIGSEGV, SIGABRT) when its arena
is too small for some ops, instead of raising, so every TFLM run goes through this
child. The request is one JSON object on stdin:
  {"model": path, "arena_bytes": int, "inputs": path of a float32 .npy [n, look_back, features],
   "output_count": int (the file's number of outputs; 1 when absent),
   "outputs": path to write a float64 .npz (optional): output_0, output_1, ... in the
              file's output order, each [n, ...] (the forecast [n, horizon]; a schema-4
              file also its quantiles [n, horizon, Q] and probabilities [n, horizon, K]),
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


def tflm_outputs(interpreter: MicroInterpreter, x: np.ndarray, count: int) -> list[np.ndarray]:
    """Every output of every window, each window from freshly reset state (the fused LSTM keeps h and c)."""
    rows: list[list[np.ndarray]] = [[] for _ in range(count)]
    for window in x:
        interpreter.reset()
        interpreter.set_input(window[np.newaxis], 0)
        interpreter.invoke()
        for index in range(count):
            rows[index].append(np.asarray(interpreter.get_output(index))[0].astype(np.float64))
    return [np.asarray(row) for row in rows]


def median_microseconds(run_one: Callable[[np.ndarray], object], windows: np.ndarray, invokes: int) -> float:
    """Median wall time of one forecast (reset, fill input, invoke, read output), cycling the windows."""
    timings = []
    for i in range(invokes):
        window = windows[i % len(windows)][np.newaxis]
        start = time.perf_counter()
        run_one(window)
        timings.append(time.perf_counter() - start)
    return float(np.median(timings) * 1e6)


def litert_runner(model_path: str) -> Callable[[np.ndarray], list[np.ndarray]]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=model_path, num_threads=1)
    interpreter.allocate_tensors()
    (window,) = interpreter.get_input_details()
    outputs = interpreter.get_output_details()

    def run_one(x: np.ndarray) -> list[np.ndarray]:
        interpreter.reset_all_variables()
        interpreter.set_tensor(window["index"], x)
        interpreter.invoke()
        return [interpreter.get_tensor(output["index"]) for output in outputs]

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
    count = int(request.get("output_count", 1))  # TFLM's binding does not say; an index past the end is undefined
    outputs = tflm_outputs(interpreter, x, count)
    if request.get("outputs"):
        np.savez(request["outputs"], **{f"output_{index}": values for index, values in enumerate(outputs)})
    invokes = int(request.get("timing_invokes") or 0)
    if invokes:
        def tflm_one(window: np.ndarray) -> list[np.ndarray]:
            interpreter.reset()
            interpreter.set_input(window, 0)
            interpreter.invoke()
            return [interpreter.get_output(index) for index in range(count)]

        answer["tflm_us"] = median_microseconds(tflm_one, x, invokes)
        answer["litert_us"] = median_microseconds(litert_runner(request["model"]), x, invokes)
        answer["timing_invokes"] = invokes
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
