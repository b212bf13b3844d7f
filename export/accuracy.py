"""What each artifact costs and saves: size, test-split error in raw units next to the
float model's, deviation from the float model, and its op list.

The float model is the trainer's own pipeline (scaler, Keras, inverse), the same
reference parity uses. Errors pool every horizon step of every test window.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgecast_runtime.contract import EXCEEDANCE_NAME, ONNX_FILE, QUANTILES_NAME, TFLITE_FILE

from .backends import Runner, open_artifact
from .oplist import onnx_summary, tflite_summary
from .parity import LARGE_BATCH, reference_forecast
from .reports import AccuracyReport, ArtifactAccuracy

if TYPE_CHECKING:
    import keras

    from edgecast.trainer.intervals import Calibration
    from edgecast_runtime.spec import Spec


def errors(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    difference = np.asarray(predicted, np.float64) - np.asarray(actual, np.float64)
    return {"rmse": float(np.sqrt(np.mean(difference**2))), "mae": float(np.mean(np.abs(difference)))}


def batch_effect(runner: Runner, x: np.ndarray, batched: np.ndarray) -> float:
    """Max |forecast at batch 1 - forecast at batch LARGE_BATCH|. Dynamic quantization
    picks its activation scale from the whole input tensor, so a quantized ONNX
    forecast depends on the other windows in its batch; float32 models stay at ~1e-5."""
    return float(np.max(np.abs(runner.forecast(x, 1) - batched)))


def op_summary(path: Path) -> dict:
    return onnx_summary(path) if path.suffix == ".onnx" else tflite_summary(path)


def accuracy_report(
    model: keras.Model, spec: Spec, windows: dict[str, np.ndarray], artifacts: dict[str, Path],
    calibration: Calibration | None = None,
) -> AccuracyReport:
    """One row per artifact (file name -> path), next to the float model on the same windows;
    with a schema-4 model's `calibration`, how far its quantiles and probabilities moved too."""
    test_x, test_y = windows["test_x"], windows["test_y"]
    reference = reference_forecast(model, spec, test_x)
    float_errors = errors(reference, test_y)
    rows = {}
    for name, path in artifacts.items():
        path = Path(path)
        runner = open_artifact(path)
        onnx = path.suffix == ".onnx"
        predicted = runner.forecast(test_x, LARGE_BATCH if onnx else None)
        measured = errors(predicted, test_y)
        deviation = np.abs(predicted - reference)
        rows[name] = {
            "bytes": path.stat().st_size,
            **measured,
            "rmse_change_pct": 100 * (measured["rmse"] / float_errors["rmse"] - 1),
            "max_abs_deviation": float(np.max(deviation)),
            "p99_abs_deviation": float(np.percentile(deviation, 99)),
            **op_summary(path),
        }
        if onnx:
            rows[name]["batch_effect"] = batch_effect(runner, test_x, predicted)
        if calibration is not None:
            rows[name].update(distribution_deviation(path, spec, calibration, test_x, reference))
    _add_size_ratios(rows)
    return AccuracyReport(
        split="test",
        windows=int(len(test_x)),
        units=f"raw units of {spec.target}, all horizon steps pooled",
        float_model=float_errors,
        artifacts={name: ArtifactAccuracy.from_dict(row) for name, row in rows.items()},
    )


def distribution_deviation(path: Path, spec: Spec, calibration: Calibration, test_x: np.ndarray,
                           reference: np.ndarray) -> dict[str, float]:
    """Max |file - float model| of a schema-4 file's quantiles (raw units) and exceedance
    probabilities on the test windows: what a quantized file changed."""
    from edgecast.trainer.intervals import exceedance, quantiles

    from .distribution import output_runner

    found = output_runner(path, spec)(test_x, LARGE_BATCH if path.suffix == ".onnx" else 1)
    deviation = {}
    if spec.probabilistic.quantiles:
        expected = quantiles(calibration, reference, spec.target_min).astype(np.float64)
        deviation["quantiles_max_abs_deviation"] = float(np.max(np.abs(found[QUANTILES_NAME] - expected)))
    if spec.probabilistic.alerts:
        expected = exceedance(calibration, reference, spec.probabilistic.alerts).astype(np.float64)
        deviation["exceedance_max_abs_deviation"] = float(np.max(np.abs(found[EXCEEDANCE_NAME] - expected)))
    return deviation


def _add_size_ratios(rows: dict[str, dict]) -> None:
    """Each artifact's size as a fraction of the float32 file of its format, when measured too."""
    float_bytes = {name.rsplit(".", 1)[-1]: rows[name]["bytes"] for name in (ONNX_FILE, TFLITE_FILE) if name in rows}
    for name, row in rows.items():
        reference = float_bytes.get(name.rsplit(".", 1)[-1])
        row["size_vs_float32"] = row["bytes"] / reference if reference else None
