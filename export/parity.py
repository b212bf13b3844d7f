"""Parity: every export against the trainer's own pipeline (encoding, scaler, Keras, inverse).

Windows: held-out test windows and random windows that reach half a training range
beyond both ends of every feature (directions over several turns and calm codes,
calendar values beyond one period), at batch 1 and at a larger batch (TFLite: batch 1,
its only batch). A model that reads neighbours is also checked on held-out windows with
neighbours silenced at random (as in training) and with every neighbour missing (NaN). Float32 exports must agree within TOLERANCE in raw target units.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgecast.trainer.bundle import scaler_from_spec
from edgecast.trainer.features import masked_indices
from edgecast.trainer.neighbours import all_silent, mask_at_random
from edgecast_runtime.contract import CALM_DEGREES, DIRECTION, MASKED, NUMERIC

from .backends import Runner, keras_runner, open_onnx, open_tflite
from .reports import ParityCheck, ParityReport

if TYPE_CHECKING:
    import keras

    from edgecast.trainer.intervals import Calibration
    from edgecast_runtime.spec import Spec

TOLERANCE = 1e-3
WINDOWS_PER_SET = 256
LARGE_BATCH = 256
REFERENCE = "encode + MinMaxScaler.transform (float64) -> Keras predict -> back to raw units (float64)"


def parity_windows(held_out_x: np.ndarray, spec: Spec, seed: int = 0) -> dict[str, np.ndarray]:
    picks = np.linspace(0, len(held_out_x) - 1, num=min(WINDOWS_PER_SET, len(held_out_x))).round().astype(int)
    held_out = held_out_x[np.unique(picks)].astype(np.float32)
    sets = {"held-out": held_out, "random": random_windows(spec, seed)}
    neighbours = masked_indices(spec.feature_encodings)
    if neighbours:
        sets["held-out, neighbours masked"] = mask_at_random(held_out, neighbours, np.random.default_rng(seed))
        sets["held-out, neighbours missing"] = all_silent(held_out, neighbours)
    return sets


def random_windows(spec: Spec, seed: int = 0) -> np.ndarray:
    """Uniform windows over [min - range/2, max + range/2]; the first two sit wholly outside."""
    low, high = raw_ranges(spec)
    reach = np.where(high > low, (high - low) / 2, 1.0)
    shape = (WINDOWS_PER_SET, spec.look_back, len(low))
    windows = np.random.default_rng(seed).uniform(low - reach, high + reach, size=shape)
    windows[0] = high + reach * 0.9
    windows[1] = low - reach * 0.9
    return windows.astype(np.float32)


def raw_ranges(spec: Spec) -> tuple[np.ndarray, np.ndarray]:
    """Per raw feature: the training range of a reading; one turn (with calm just below)
    for a direction; one period for a calendar value."""
    scaler = scaler_from_spec(spec)
    low, high, column = [], [], 0
    for encoding in spec.feature_encodings:
        if encoding.kind in (NUMERIC, MASKED):
            low.append(scaler.data_min_[column])
            high.append(scaler.data_max_[column])
        elif encoding.kind == DIRECTION:
            low.append(CALM_DEGREES - 90.0)
            high.append(360.0)
        else:
            low.append(0.0)
            high.append(float(encoding.period))
        column += len(encoding.columns)
    return np.asarray(low, np.float64), np.asarray(high, np.float64)


def reference_forecast(model: keras.Model, spec: Spec, x: np.ndarray) -> np.ndarray:
    """The trainer's own pipeline (trainer/forecast.py), the one its metrics were measured with."""
    return keras_runner(model, spec).forecast(x)


def onnx_forecast(path: Path, x: np.ndarray, batch: int) -> np.ndarray:
    return open_onnx(path).forecast(x, batch)


def tflite_forecast(path: Path, x: np.ndarray) -> np.ndarray:
    """One window per invoke (static batch 1), variables reset first when the file keeps state."""
    return open_tflite(path).forecast(x)


def compare(predicted: np.ndarray, reference: np.ndarray) -> dict:
    error = np.abs(predicted - reference)
    relative = error / np.maximum(np.abs(reference), 1e-6)
    max_abs = float(error.max())
    return {"max_abs": max_abs, "max_rel": float(relative.max()), "passed": bool(max_abs <= TOLERANCE)}


def check_parity(model: keras.Model, spec: Spec, held_out_x: np.ndarray, artifacts: dict[str, Path],
                 calibration: Calibration | None = None) -> ParityReport:
    """`artifacts` maps file names to paths (possibly temporary); kinds by extension. A
    schema-4 file's quantiles and exceedance probabilities are checked too (distribution.py)."""
    window_sets = parity_windows(held_out_x, spec)
    references = {name: reference_forecast(model, spec, x) for name, x in window_sets.items()}
    checks = []
    for artifact, path in artifacts.items():
        runner = _runner(Path(path), artifact)
        for set_name, x in window_sets.items():
            for batch in _batches(artifact, len(x)):
                result = compare(runner.forecast(x, batch), references[set_name])
                checks.append(ParityCheck(artifact=artifact, windows=set_name, n=len(x), batch=batch, **result))
    if spec.probabilistic is not None:
        from .distribution import distribution_checks

        checks += distribution_checks(spec, calibration, window_sets, references, artifacts, TOLERANCE, _batches)
    return ParityReport(reference=REFERENCE, tolerance_abs=TOLERANCE, units=f"raw units of {spec.target}",
                        passed=all(check.passed for check in checks), checks=checks)


def _runner(path: Path, artifact: str) -> Runner:
    """By the artifact's name: a staged file's own path ends in `.staged`."""
    if artifact.endswith(".onnx"):
        return open_onnx(path)
    if artifact.endswith(".tflite"):
        return open_tflite(path)
    raise ValueError(f"no parity runner for {artifact}")


def _batches(artifact: str, n: int) -> list[int]:
    """ONNX at batch 1 and a larger batch; TFLite at 1, its only batch."""
    return [1, min(LARGE_BATCH, n)] if artifact.endswith(".onnx") else [1]
