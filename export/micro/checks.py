"""The two files a microcontroller can run, checked in TFLM on the bundle's held-out test
windows (the LSTM state reset before each window), and the choice between them:
  float32 (model.builtin.tflite): within parity.TOLERANCE of the Keras pipeline;
  int8 (model.int8.tflite): TFLM's integer kernels against LiteRT's on the same file,
        passing when mean |TFLM - LiteRT| is at most LITERT_AGREEMENT of mean |LiteRT|.
The int8 file is chosen when its test RMSE in TFLM is at most ERROR_BUDGET_PCT above the
float model's (the package docstring says why, with the numbers).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgecast_runtime.contract import BUILTIN_TFLITE_FILE, QUANTIZED_FILES

from ..accuracy import errors
from ..parity import TOLERANCE, reference_forecast, tflite_forecast
from .tflm import tflm_forecasts

if TYPE_CHECKING:
    import keras

    from edgecast.trainer.bundle import Bundle

INT8_FILE = QUANTIZED_FILES["tflite-int8"]
ERROR_BUDGET_PCT = 3.0
LITERT_AGREEMENT = 0.005


def verify_candidates(bundle: Bundle, model: keras.Model, listed: dict,
                      progress: Callable[[str], object]) -> dict[str, dict]:
    """Both files in TFLM on the test windows: float32 against Keras, int8 against LiteRT."""
    windows = bundle.windows()
    test_x, test_y = windows["test_x"].astype(np.float32), windows["test_y"]
    reference = reference_forecast(model, bundle.spec, test_x)
    float_rmse = errors(reference, test_y)["rmse"]
    candidates = {BUILTIN_TFLITE_FILE: check_float(bundle.path / BUILTIN_TFLITE_FILE, test_x, test_y, reference,
                                                   float_rmse)}
    progress(f"TFLM ran {BUILTIN_TFLITE_FILE} on {len(test_x)} test windows: max |TFLM - Keras| "
             f"{candidates[BUILTIN_TFLITE_FILE]['max_abs_vs_keras']:.2e}")
    if INT8_FILE in listed:
        int8 = candidates[INT8_FILE] = check_int8(bundle.path / INT8_FILE, test_x, test_y, float_rmse)
        progress(f"TFLM ran {INT8_FILE} on {len(test_x)} test windows: RMSE change {int8['rmse_change_pct']:+.2f}%, "
                 f"{int8['identical_share']:.1%} identical to LiteRT's, mean |TFLM - LiteRT| "
                 f"{int8['litert_agreement']:.3%} of the mean |forecast|")
    return candidates


def choose(candidates: dict, refused: str | None) -> tuple[str, str]:
    """The file the microcontroller runs, and why (`refused`: why tflite-int8 was not made)."""
    int8 = candidates.get(INT8_FILE)
    if int8 is None:
        why = f"tflite-int8 was refused ({refused})" if refused else f"no {INT8_FILE} was exported"
        return BUILTIN_TFLITE_FILE, f"{why}: the float32 builtin-ops file"
    change = int8["rmse_change_pct"]
    if change <= ERROR_BUDGET_PCT:
        return INT8_FILE, (f"full-integer int8 (fused LSTM): its test RMSE in TFLM is {change:+.2f}% from the float "
                           f"model's, within the {ERROR_BUDGET_PCT:g}% budget")
    return BUILTIN_TFLITE_FILE, (f"float32 builtin-ops: int8's test RMSE in TFLM is {change:+.2f}% from the float "
                                 f"model's, over the {ERROR_BUDGET_PCT:g}% budget")


def check_int8(path: Path, test_x: np.ndarray, test_y: np.ndarray, float_rmse: float) -> dict:
    check = int8_agreement(path, tflm_forecasts(path, test_x), tflite_forecast(path, test_x), test_y, float_rmse)
    check["windows"] = len(test_x)
    check["failure"] = (
        f"{path.name}: TFLM's int8 forecasts differ from LiteRT's by {check['litert_agreement']:.3%} of the mean "
        f"|forecast| on average, over the {LITERT_AGREEMENT:.1%} allowed (largest difference "
        f"{check['max_abs_vs_litert']:.3g} raw units, {check['max_steps_vs_litert']:.1f} output steps)"
    )
    return check


def int8_agreement(path: Path, tflm: np.ndarray, litert: np.ndarray, test_y: np.ndarray, float_rmse: float) -> dict:
    """TFLM's int8 forecasts against LiteRT's on the same windows (the module docstring's measure)."""
    step = output_step(path)
    difference = np.abs(tflm - litert)
    agreement = float(np.mean(difference) / np.mean(np.abs(litert)))
    max_steps = float(difference.max() / step) if step else float("inf")
    rmse = errors(tflm, test_y)["rmse"]
    return {
        "rmse": rmse, "rmse_change_pct": 100 * (rmse / float_rmse - 1),
        "litert_rmse_change_pct": 100 * (errors(litert, test_y)["rmse"] / float_rmse - 1),
        "litert_agreement": agreement, "litert_tolerance": LITERT_AGREEMENT,
        "litert_measure": "mean |TFLM - LiteRT| / mean |LiteRT| over every test forecast",
        "output_step": step, "max_abs_vs_litert": float(difference.max()), "max_steps_vs_litert": max_steps,
        "identical_share": float(np.mean(difference == 0)),
        "rms_ratio_vs_litert": float(np.sqrt(np.mean((tflm - litert) ** 2)) / np.sqrt(np.mean(litert**2))),
        "passed": agreement <= LITERT_AGREEMENT,
        "first_forecast": tflm[0].tolist(),
    }


def output_step(path: Path) -> float:
    """Raw units per int8 step of the forecast: the scale of the DEQUANTIZE feeding the graph's output."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    graph = model.subgraphs[0]
    for operator in graph.operators:
        code = model.operatorCodes[operator.opcodeIndex]
        if max(code.builtinCode, code.deprecatedBuiltinCode) == schema.BuiltinOperator.DEQUANTIZE \
                and operator.outputs[0] in graph.outputs:
            return float(graph.tensors[operator.inputs[0]].quantization.scale[0])
    return 0.0


def check_float(path: Path, test_x: np.ndarray, test_y: np.ndarray, reference: np.ndarray, float_rmse: float) -> dict:
    tflm = tflm_forecasts(path, test_x)
    max_abs = float(np.max(np.abs(tflm - reference)))
    rmse = errors(tflm, test_y)["rmse"]
    return {
        "windows": len(test_x), "rmse": rmse, "rmse_change_pct": 100 * (rmse / float_rmse - 1),
        "max_abs_vs_keras": max_abs, "tolerance_abs": TOLERANCE, "passed": max_abs <= TOLERANCE,
        "first_forecast": tflm[0].tolist(),
        "failure": (f"{path.name}: TFLM's forecasts differ from the Keras pipeline's by up to {max_abs:.3g} raw units, "
                    f"over the {TOLERANCE:g} parity tolerance"),
    }


def float_now(tflm: np.ndarray, reference: np.ndarray, test_y: np.ndarray, float_rmse: float) -> dict:
    """The float32 file's forecasts, run again now, against the Keras pipeline (verify)."""
    max_abs = float(np.max(np.abs(tflm - reference)))
    rmse = errors(tflm, test_y)["rmse"]
    return {"rmse_change_pct": 100 * (rmse / float_rmse - 1), "max_abs_vs_keras": max_abs, "passed": max_abs <= TOLERANCE}


def public(check: dict) -> dict:
    """A check as recorded: without its failure text and the forecast main.cc prints."""
    return {key: value for key, value in check.items() if key not in ("failure", "first_forecast")}
