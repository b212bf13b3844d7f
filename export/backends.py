"""One way to run a model on raw windows, shared by parity, the accuracy report,
`edgecast bench` and scripts/quantize_results.py, so every figure they give comes
from the same calls.

A `Runner` takes float32 raw-unit windows `[n, look_back, n_features]` and gives raw
forecasts `[n, horizon]`:
  onnxruntime  model.onnx and its quantized variants, one `run` per call (dynamic batch);
  LiteRT       a .tflite file, static batch 1, so a batch is a loop of single invokes;
               a file that keeps the fused LSTM's state in variable tensors has them
               reset before every window (export/fused_lstm.py);
  Keras        the trainer's own pipeline (encode, MinMaxScaler, Keras, back to raw
               units), by `model.predict` or by a direct `model(x, training=False)` call.

Module-level imports stay at numpy and the standard library: `edgecast bench` starts
fresh processes with these loaders and times their start-up.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras
    from ai_edge_litert.interpreter import Interpreter

    from edgecast_runtime.spec import Spec

KERAS_PREDICT = "keras-predict"
KERAS_CALL = "keras-call"


@dataclass(frozen=True)
class Runner:
    """`predict_one`: window `[look_back, n_features]` -> `[horizon]`;
    `predict_many`: windows `[n, look_back, n_features]` -> `[n, horizon]`."""

    backend: str
    predict_one: Callable[[np.ndarray], np.ndarray]
    predict_many: Callable[[np.ndarray], np.ndarray]

    def forecast(self, x: np.ndarray, batch: int | None = None) -> np.ndarray:
        """Forecasts of all windows in float64, `batch` windows per call (None: one call)."""
        if batch is None:
            return np.asarray(self.predict_many(x), np.float64)
        chunks = [self.predict_many(x[start : start + batch]) for start in range(0, len(x), batch)]
        return np.concatenate(chunks).astype(np.float64)


def open_artifact(path: Path, threads: int = 1, reset_variables: bool | None = None) -> Runner:
    """A runner for an exported file, chosen by its suffix."""
    path = Path(path)
    if path.suffix == ".onnx":
        return open_onnx(path, threads)
    if path.suffix == ".tflite":
        return open_tflite(path, threads, reset_variables)
    raise ValueError(f"no runner for {path.name}: expected a .onnx or .tflite file")


def open_onnx(path: Path, threads: int = 1) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    run = session.run

    def predict_one(window: np.ndarray) -> np.ndarray:
        return run(["forecast"], {"window": window[np.newaxis]})[0][0]

    def predict_many(windows: np.ndarray) -> np.ndarray:
        return run(["forecast"], {"window": windows})[0]

    return Runner("onnxruntime", predict_one, predict_many)


def tflite_interpreter(path: Path, threads: int = 1) -> Interpreter:
    """LiteRT's interpreter (tf.lite.Interpreter is deprecated), tensors allocated."""
    from ai_edge_litert.interpreter import Interpreter

    from edgecast.base import silenced_stderr

    from .errors import ExportError

    try:
        with silenced_stderr():  # "Created TensorFlow Lite XNNPACK delegate" on every load
            interpreter = Interpreter(model_path=str(path), num_threads=threads)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ExportError(f"{path}: LiteRT cannot load it ({exc})") from None
    return interpreter


def open_tflite(path: Path, threads: int = 1, reset_variables: bool | None = None) -> Runner:
    """`reset_variables`: what the manifest entry says (`reset_variables_before_invoke`);
    None reads it from the file itself, for files not yet listed in a manifest."""
    interpreter = tflite_interpreter(path, threads)  # first: a damaged file is refused in one line
    if reset_variables is None:
        from .oplist import has_variable_state

        reset_variables = has_variable_state(path)
    (source,) = interpreter.get_input_details()
    # `forecast` is the one 2-D output ([1, horizon]); a schema-4 file's quantiles and
    # exceedance are 3-D (export/distribution.py reads them by name).
    (sink,) = [detail for detail in interpreter.get_output_details() if len(detail["shape"]) == 2]
    set_tensor, invoke, get_tensor = interpreter.set_tensor, interpreter.invoke, interpreter.get_tensor
    reset = interpreter.reset_all_variables
    source_index, sink_index = source["index"], sink["index"]

    def predict_one(window: np.ndarray) -> np.ndarray:
        if reset_variables:  # the fused LSTM's h and c persist between invokes
            reset()
        set_tensor(source_index, window[np.newaxis])
        invoke()
        return get_tensor(sink_index)[0]

    def predict_many(windows: np.ndarray) -> np.ndarray:
        return np.stack([predict_one(window) for window in windows])

    return Runner("litert", predict_one, predict_many)


def keras_runner(model: keras.Model, spec: Spec, direct_call: bool = False) -> Runner:
    """The trainer's pipeline (trainer/forecast.py `predict_raw`) around a loaded model."""
    from edgecast.trainer.bundle import scaler_from_spec
    from edgecast.trainer.forecast import predict_raw

    scaler = scaler_from_spec(spec)

    def predict_many(windows: np.ndarray) -> np.ndarray:
        return predict_raw(model, spec, windows, scaler, direct_call=direct_call)

    def predict_one(window: np.ndarray) -> np.ndarray:
        return predict_many(window[np.newaxis])[0]

    return Runner(KERAS_CALL if direct_call else KERAS_PREDICT, predict_one, predict_many)


def load_keras(bundle_dir: Path, threads: int | None = None, direct_call: bool = False) -> Runner:
    """A fresh process's Keras runner from model.keras and preprocessing.json alone.
    `threads` sizes TensorFlow's pools, which is only possible before its first op."""
    from edgecast.base import import_tensorflow
    from edgecast.trainer.bundle import SPEC_FILE, Bundle, read_spec_file

    bundle_dir = Path(bundle_dir)
    spec = read_spec_file(bundle_dir / SPEC_FILE)
    if threads:
        tf = import_tensorflow()
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    model = Bundle(path=bundle_dir, spec=spec, metrics={}, training={}).load_model()
    return keras_runner(model, spec, direct_call)


def latency_us(predict_one: Callable[[np.ndarray], np.ndarray], windows: np.ndarray, calls: int,
               warmup: int) -> np.ndarray:
    """Microseconds of each of `calls` single-window calls after `warmup` untimed ones,
    cycling over `windows`."""
    for index in range(warmup):
        predict_one(windows[index % len(windows)])
    clock = time.perf_counter_ns
    elapsed = np.empty(calls, np.float64)
    for index in range(calls):
        window = windows[index % len(windows)]
        start = clock()
        predict_one(window)
        elapsed[index] = clock() - start
    return elapsed / 1000.0


@dataclass(frozen=True)
class Timing:
    """Wall and CPU seconds of each repeat, and the last call's forecasts."""

    wall_s: list[float]
    cpu_s: list[float]
    forecasts: np.ndarray

    @property
    def median_s(self) -> float:
        return float(np.median(self.wall_s))

    @property
    def cpu_per_wall(self) -> float:
        return float(np.sum(self.cpu_s) / np.sum(self.wall_s))


def timed(predict_many: Callable[[np.ndarray], np.ndarray], windows: np.ndarray, repeats: int) -> Timing:
    """`repeats` calls on the same windows, each timed (call once before to warm up)."""
    wall, cpu, forecasts = [], [], None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        forecasts = predict_many(windows)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return Timing(wall, cpu, np.asarray(forecasts))


def check_artifact(path: Path, spec: Spec) -> None:
    """`evaluate --artifact`: a missing, unreadable or foreign file is refused before the
    CSV is read, in one line (ExportError)."""
    from .errors import ExportError

    if not path.is_file():
        raise ExportError(f"{path}: no such file (artifact)")
    if path.suffix not in (".onnx", ".tflite"):
        raise ExportError(f"{path}: an artifact is a .onnx or .tflite file")
    mismatch = artifact_mismatch(path, spec)
    if mismatch is not None:
        raise ExportError(mismatch)


def artifact_mismatch(path: Path, spec: Spec, same_spec: bool = True) -> str | None:
    """Why an exported file cannot be this spec's model, or None: it cannot be opened, it
    takes other windows than [batch, look_back, n_features], or (ONNX, which carries its
    spec; with `same_spec`) it was exported from another spec. Checked before running it,
    so a swapped or foreign file is one line rather than a runtime's shape error mid-run."""
    from edgecast_runtime.contract import SCHEMA_KEY, SPEC_KEY

    from .errors import ExportError

    expected = [spec.look_back, spec.n_features]
    try:
        if path.suffix == ".onnx" or path.name.endswith(".onnx.staged"):
            import onnxruntime as ort

            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            taken = list(session.get_inputs()[0].shape[1:])
            metadata = session.get_modelmeta().custom_metadata_map
            embedded = (metadata.get(SPEC_KEY), metadata.get(SCHEMA_KEY))
        else:
            taken = [int(size) for size in tflite_interpreter(path).get_input_details()[0]["shape"][1:]]
            embedded = None
    except ExportError as exc:
        return str(exc)
    except Exception as exc:  # onnxruntime's errors derive from Exception only
        return f"{path}: onnxruntime cannot load it ({str(exc).splitlines()[0][:200]})"
    if taken != expected:
        return (f"{path}: takes windows [batch, {', '.join(map(str, taken))}], but the model's spec describes "
                f"[batch, {', '.join(map(str, expected))}]: it is another model's file")
    if same_spec and embedded is not None and _parsed(*embedded) != spec.to_dict():
        return f"{path}: exported from another spec (target, scaler or features differ): it is another model's file"
    return None


def _parsed(text: str | None, version: str | None) -> dict | None:
    """An ONNX file's embedded spec as the runtime reads it (older schemas filled in), so
    a file exported by an older edgecast compares equal to its own bundle's spec."""
    import json

    from edgecast_runtime.spec import Spec as RuntimeSpec

    try:
        return RuntimeSpec.from_dict(json.loads(text), version).to_dict()
    except Exception:  # absent, not JSON or not a spec: not this model's
        return None
