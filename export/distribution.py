"""A schema-4 graph's `quantiles` and `exceedance` outputs, computed in the graph from
its raw `forecast` and the bundle's calibration (trainer/intervals.py says the method;
its numpy functions `quantiles` and `exceedance` are the reference parity compares with).

Only elementwise ops, Clip and a Mean over the calibration's knots: Log, Exp, Add, Sub,
Mul, Maximum, Minimum and Mean exist as builtin ops in ONNX and TFLite alike, so every
backend carries the outputs without custom ops."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgecast.base import import_tensorflow
from edgecast.trainer.intervals import LOG
from edgecast_runtime.contract import EXCEEDANCE_NAME, INPUT_NAME, OUTPUT_NAME, QUANTILES_NAME

from .errors import ExportError

if TYPE_CHECKING:
    import tensorflow

    from edgecast.trainer.intervals import Calibration
    from edgecast_runtime.spec import Spec

    from .reports import ParityCheck


tf = import_tensorflow()


def distribution_outputs(raw: tensorflow.Tensor, spec: Spec, calibration: Calibration) -> dict:
    """{quantiles [batch, horizon, Q], exceedance [batch, horizon, K]}, those the spec declares."""
    probabilistic, logged, floor = spec.probabilistic, calibration.space == LOG, spec.target_min
    shift = calibration.shift.astype(np.float32)  # [horizon], c of log(v + c) per lead
    base = tf.math.log(tf.maximum(raw, 0.0) + tf.constant(shift[np.newaxis])) if logged else raw  # [batch, horizon]
    outputs = {}
    if probabilistic.quantiles:
        moved = tf.expand_dims(base, -1) + tf.constant(calibration.offsets[np.newaxis])
        values = tf.exp(moved) - tf.constant(shift[np.newaxis, :, np.newaxis]) if logged else moved
        if floor is not None:
            values = tf.maximum(values, tf.constant(np.float32(floor)))
        outputs[QUANTILES_NAME] = values
    if probabilistic.alerts:
        columns = []
        knots = tf.constant(calibration.knots[np.newaxis])  # [1, horizon, KNOTS]
        inverse_width = tf.constant(calibration.inverse_width[np.newaxis, :, np.newaxis])
        for alert in probabilistic.alerts:
            level = np.float32(max(alert.threshold, 0.0) if logged else alert.threshold)
            threshold = np.log(level + shift) if logged else np.full_like(shift, level)  # [horizon], float32
            gap = tf.expand_dims(tf.constant(threshold[np.newaxis]) - base, -1)
            below = tf.reduce_mean(tf.clip_by_value((gap - knots) * inverse_width + 0.5, 0.0, 1.0), axis=-1)
            columns.append(1.0 - below if alert.op == ">" else below)
        outputs[EXCEEDANCE_NAME] = tf.stack(columns, axis=-1)
    return outputs


def output_names(spec: Spec) -> list[str]:
    """A schema-4 graph's outputs in the order tf.nest flattens the function's dict (sorted
    keys): how a TFLite file made from a concrete function lists them (output_0, ...)."""
    probabilistic = spec.probabilistic
    if probabilistic is None:
        return [OUTPUT_NAME]
    return sorted([OUTPUT_NAME] + [QUANTILES_NAME] * bool(probabilistic.quantiles)
                  + [EXCEEDANCE_NAME] * bool(probabilistic.alerts))


def output_runner(path: Path, spec: Spec) -> Callable[[np.ndarray, int], dict[str, np.ndarray]]:
    """(windows, batch) -> {output name: values} for every output of an exported file."""
    if path.suffix == ".onnx" or str(path).endswith(".onnx.staged"):
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [output.name for output in session.get_outputs()]

        def run_onnx(x: np.ndarray, batch: int) -> dict[str, np.ndarray]:
            parts = [session.run(names, {INPUT_NAME: x[start:start + batch]}) for start in range(0, len(x), batch)]
            return {name: np.concatenate([part[index] for part in parts]) for index, name in enumerate(names)}

        return run_onnx
    from .backends import tflite_interpreter
    from .oplist import has_variable_state

    interpreter = tflite_interpreter(path)
    runner, stateful = interpreter.get_signature_runner(), has_variable_state(path)
    names = dict(zip((f"output_{index}" for index in range(len(output_names(spec)))), output_names(spec)))

    def run_one(window: np.ndarray) -> dict[str, np.ndarray]:
        if stateful:  # the fused LSTM's h and c persist between invokes (export/fused_lstm.py)
            interpreter.reset_all_variables()
        return runner(**{INPUT_NAME: window[np.newaxis]})

    def run_tflite(x: np.ndarray, batch: int) -> dict[str, np.ndarray]:
        parts = [run_one(window) for window in x]
        found = {names.get(key, key): np.concatenate([part[key] for part in parts]) for key in parts[0]}
        if found[OUTPUT_NAME].ndim != 2:
            raise ExportError(f"{path.name}: its outputs are not in the order {', '.join(output_names(spec))}")
        return found

    return run_tflite


def distribution_checks(spec: Spec, calibration: Calibration, window_sets: dict[str, np.ndarray],
                        references: dict[str, np.ndarray], artifacts: dict[str, Path], tolerance: float,
                        batches: Callable[[str, int], list[int]]) -> list[ParityCheck]:
    """Each file's `quantiles` and `exceedance` against trainer/intervals.py's numpy
    functions on the reference forecasts, within the parity tolerance (`distribution_errors`)."""
    from .reports import ParityCheck

    checks = []
    for artifact, path in artifacts.items():
        run = output_runner(Path(path), spec)
        for set_name, x in window_sets.items():
            for batch in batches(artifact, len(x)):
                found = distribution_errors(run(x, batch), references[set_name], spec, calibration, tolerance)
                checks += [ParityCheck(artifact=f"{artifact} {output}", windows=set_name, n=len(x), batch=batch,
                                       max_abs=error["max_abs"], max_rel=error["max_rel"], passed=error["passed"])
                           for output, error in found.items()]
    return checks


def distribution_errors(outputs: dict[str, np.ndarray], reference: np.ndarray, spec: Spec,
                        calibration: Calibration, tolerance: float) -> dict[str, dict]:
    """{output: {max_abs, max_rel, passed}} of a file's `quantiles` and `exceedance` (those
    the spec declares) against the numpy functions on the `reference` forecasts:
    probabilities within `tolerance` exactly, quantiles within it carried through the
    transform (`_carried`)."""
    from edgecast.trainer.intervals import exceedance, quantiles

    probabilistic, expected = spec.probabilistic, {}
    if probabilistic.quantiles:
        expected[QUANTILES_NAME] = quantiles(calibration, reference, spec.target_min)
    if probabilistic.alerts:
        expected[EXCEEDANCE_NAME] = exceedance(calibration, reference, probabilistic.alerts)
    found = {}
    for output, want in expected.items():
        error = np.abs(np.asarray(outputs[output], np.float64) - want)
        allowed = tolerance * (_carried(want, reference, calibration) if output == QUANTILES_NAME else 1.0)
        found[output] = {"max_abs": float(error.max()), "max_rel": float((error / np.maximum(np.abs(want), 1e-6)).max()),
                         "passed": bool(np.all(error <= allowed))}
    return found


def _carried(quantile: np.ndarray, forecast: np.ndarray, calibration: Calibration) -> np.ndarray:
    """How much of the forecast's own deviation a quantile carries: in log space a
    quantile is (c + forecast) e^offset - c, so a deviation of the forecast reaches it
    times (c + q) / (c + f), above 1 for the upper quantiles. Quantiles are held to the
    forecast's tolerance carried through that factor (and at least the tolerance itself),
    plus float32's rounding through the transform: the graph computes e^z - c with
    z = log(forecast + c) + offset, and a rounding of z by a few ulp (4 eps |z|) comes out
    multiplied by c + q. An upper bound of 2,000 µg/m³ on a random window far beyond the
    training range cannot be exact to 1e-3 in float32 (Nongzhanguan's TFLite missed by 11
    ulp of the quantile, 2.7e-3, with seven quantile levels and c = 1)."""
    if calibration.space != LOG:
        return np.ones_like(quantile)
    shift = calibration.shift.astype(np.float64)[:, None]  # [horizon, 1]
    factor = (shift + np.abs(quantile)) / (shift + np.abs(forecast)[..., None])
    log_value = np.abs(np.log(shift + np.abs(quantile)))
    return np.maximum(factor, 1.0) + 4 * np.finfo(np.float32).eps * (shift + np.abs(quantile)) * (1 + log_value) / 1e-3
