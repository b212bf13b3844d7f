"""The two files a microcontroller can run, checked in TFLM on the bundle's held-out test
windows (the LSTM state reset before each window), and the choice between them:
  float32 (model.builtin.tflite): within parity.TOLERANCE of the Keras pipeline;
  int8 (model.int8.tflite): TFLM's integer kernels against LiteRT's on the same file, per
        lead, in steps of the int8 output (its dequantization scale): the largest
        |TFLM - LiteRT| at each lead at most LITERT_MAX_STEPS, the mean at most
        LITERT_MEAN_STEPS (mean |TFLM - LiteRT| / mean |LiteRT| is recorded too; it was the
        gate once, 0.5%, but it grows with the horizon where forecasts are smaller: 0.77% on
        a horizon-6 Changping model whose leads were at most 2 steps and on average 0.25
        steps apart).
The int8 file is chosen only when, from TFLM's own forecasts, (1) its test RMSE is at most
ERROR_BUDGET_PCT above the float model's at EVERY lead (a pooled RMSE hides a bad lead: a
flat int8 forecast once passed at +2.2% pooled), (2) it does not collapse (below) and
(3) TFLM agrees with LiteRT as above; otherwise the float32 builtin-ops file, with the
failed condition as the recorded reason.

Collapse: a forecast of `horizon` values that are all one value, or fewer distinct values
than the model's. The int8 output has a step (2.15 µg/m³ on a Changping model), so two leads
closer than a step share a value in any int8 file; the fair reference is the float model's
forecast rounded to that step. The file collapses when its share of windows with one value
repeated `horizon` times exceeds the reference's by more than FLAT_MARGIN, its mean number
of distinct values per window is below DISTINCT_RATIO of the reference's, or its share of
windows with fewer than `horizon` distinct values exceeds the reference's by more than
FEWER_MARGIN. (On a horizon-6 Changping model the flat file had 88.5% one-value windows,
1.41 distinct values and 94.9% with fewer than six; the reference 2.7%, 4.22 and 78.5%;
the fixed file 1.5%, 4.19 and 82.5%.)
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgecast.trainer.intervals import read_calibration
from edgecast_runtime.contract import BUILTIN_TFLITE_FILE, OUTPUT_NAME, QUANTIZED_FILES

from ..accuracy import errors
from ..distribution import distribution_errors, output_names
from ..parity import TOLERANCE, reference_forecast, tflite_forecast
from .tflm import ChildRun, output_order, tflm_run

if TYPE_CHECKING:
    import keras

    from edgecast.trainer.bundle import Bundle
    from edgecast.trainer.intervals import Calibration
    from edgecast_runtime.spec import Spec

INT8_FILE = QUANTIZED_FILES["tflite-int8"]
ERROR_BUDGET_PCT = 3.0  # per lead
LITERT_MAX_STEPS = 3.0  # per lead, in steps of the int8 output
LITERT_MEAN_STEPS = 0.5  # per lead
FLAT_MARGIN = 0.02
DISTINCT_RATIO = 0.9
FEWER_MARGIN = 0.10
DISTRIBUTION_OUTPUTS = ("quantiles", "exceedance")
# A schema-4 model's int8 file keeps its scaling, quantiles and probabilities in float
# beside the integer LSTM (export/quantize.py); the int8 checks above measure an output
# that an int8 DEQUANTIZE gives, in its steps, so a microcontroller runs the float32 file.
SCHEMA4_FLOAT = ("the float32 builtin-ops file, which carries the quantiles and alert probabilities (a schema-4 "
                 "model's int8 file computes them in float beside its integer LSTM, which the int8 checks do not cover)")


def verify_candidates(bundle: Bundle, model: keras.Model, listed: dict,
                      progress: Callable[[str], object]) -> dict[str, dict]:
    """Both files in TFLM on the test windows: float32 against Keras, int8 against LiteRT."""
    windows = bundle.windows()
    test_x, test_y = windows["test_x"].astype(np.float32), windows["test_y"]
    reference = reference_forecast(model, bundle.spec, test_x)
    calibration = read_calibration(bundle.path) if bundle.spec.probabilistic else None
    float_check = check_float(bundle.path / BUILTIN_TFLITE_FILE, test_x, test_y, reference, bundle.spec, calibration)
    candidates = {BUILTIN_TFLITE_FILE: float_check}
    progress(f"TFLM ran {BUILTIN_TFLITE_FILE} on {len(test_x)} test windows: max |TFLM - Keras| "
             f"{float_check['max_abs_vs_keras']:.2e}" + "".join(
                 f", {output} {float_check[f'{output}_max_abs_vs_keras']:.2e}" for output in DISTRIBUTION_OUTPUTS
                 if f"{output}_max_abs_vs_keras" in float_check))
    if INT8_FILE in listed and bundle.spec.probabilistic is None:
        int8 = candidates[INT8_FILE] = check_int8(bundle.path / INT8_FILE, test_x, test_y, reference)
        progress(f"TFLM ran {INT8_FILE} on {len(test_x)} test windows: RMSE change per lead "
                 f"{_leads(int8['rmse_change_pct_per_lead'], '{:+.2f}%')}, distinct values per window "
                 f"{int8['mean_distinct']:.2f} (float on the int8 step {int8['reference_mean_distinct']:.2f}), "
                 f"max |TFLM - LiteRT| per lead {_leads(int8['max_abs_vs_litert_per_lead'], '{:.3g}')}")
    return candidates


def choose(candidates: dict, refused: str | None, probabilistic: bool = False) -> tuple[str, str]:
    """The file the microcontroller runs, and why (`refused`: why tflite-int8 was not made;
    `probabilistic`: a schema-4 model, SCHEMA4_FLOAT)."""
    int8 = candidates.get(INT8_FILE)
    if probabilistic:
        return BUILTIN_TFLITE_FILE, SCHEMA4_FLOAT
    if int8 is None:
        why = f"tflite-int8 was refused ({refused})" if refused else f"no {INT8_FILE} was exported"
        return BUILTIN_TFLITE_FILE, f"{why}: the float32 builtin-ops file"
    changes = int8.get("rmse_change_pct_per_lead", [int8["rmse_change_pct"]])
    worst = int(np.argmax(changes))
    if changes[worst] > ERROR_BUDGET_PCT:
        return BUILTIN_TFLITE_FILE, (
            f"float32 builtin-ops: int8's test RMSE in TFLM is {changes[worst]:+.2f}% from the float model's at lead "
            f"{worst + 1}, over the {ERROR_BUDGET_PCT:g}% budget per lead (pooled {int8['rmse_change_pct']:+.2f}%)")
    if int8.get("collapsed"):
        return BUILTIN_TFLITE_FILE, f"float32 builtin-ops: int8's forecasts collapse: {int8['collapse']}"
    if not int8.get("passed", True):
        return BUILTIN_TFLITE_FILE, f"float32 builtin-ops: {int8['failure']}"
    return INT8_FILE, (f"full-integer int8 (fused LSTM): its test RMSE in TFLM is at most {changes[worst]:+.2f}% from "
                       f"the float model's at every lead (pooled {int8['rmse_change_pct']:+.2f}%), within the "
                       f"{ERROR_BUDGET_PCT:g}% budget per lead; no collapse; TFLM agrees with LiteRT")


def check_int8(path: Path, test_x: np.ndarray, test_y: np.ndarray, reference: np.ndarray) -> dict:
    check = int8_agreement(path, tflm_run(path, test_x).forecasts, tflite_forecast(path, test_x), test_y, reference)
    check["windows"] = len(test_x)
    return check


def int8_agreement(path: Path, tflm: np.ndarray, litert: np.ndarray, test_y: np.ndarray,
                   reference: np.ndarray) -> dict:
    """TFLM's int8 forecasts against LiteRT's on the same windows, and against the float
    model's forecasts `reference` (the module docstring's measures)."""
    step = output_step(path)
    difference = np.abs(tflm - litert)
    agreement = float(np.mean(difference) / np.mean(np.abs(litert)))
    per_lead, mean_per_lead = difference.max(axis=0), difference.mean(axis=0)
    limit, mean_limit = LITERT_MAX_STEPS * step, LITERT_MEAN_STEPS * step
    float_rmse = lead_rmse(reference, test_y)
    check = {
        **rmse_changes(tflm, test_y, reference),
        "litert_rmse_change_pct_per_lead": (100 * (lead_rmse(litert, test_y) / float_rmse - 1)).tolist(),
        "litert_agreement": agreement,
        "litert_measure": "max and mean |TFLM - LiteRT| at each lead, at most litert_max_abs and litert_mean_abs "
                          "(litert_max_steps and litert_mean_steps steps of the int8 output)",
        "output_step": step, "max_abs_vs_litert": float(difference.max()), "max_steps_vs_litert": _steps(per_lead.max(), step),
        "max_abs_vs_litert_per_lead": per_lead.tolist(), "litert_max_steps": LITERT_MAX_STEPS,
        "litert_max_abs": limit, "mean_abs_vs_litert_per_lead": mean_per_lead.tolist(),
        "litert_mean_steps": LITERT_MEAN_STEPS, "litert_mean_abs": mean_limit, "identical_share": float(np.mean(difference == 0)),
        "rms_ratio_vs_litert": float(np.sqrt(np.mean((tflm - litert) ** 2)) / np.sqrt(np.mean(litert**2))),
        "max_abs_vs_float_per_lead": np.abs(tflm - reference).max(axis=0).tolist(),
        "mean_abs_vs_float_per_lead": np.abs(tflm - reference).mean(axis=0).tolist(),
        **collapse(tflm, reference, step),
        "first_forecast": tflm[0].tolist(),
    }
    over = [lead + 1 for lead in range(len(per_lead)) if per_lead[lead] > limit or mean_per_lead[lead] > mean_limit]
    check["passed"] = not over
    check["failure"] = (
        f"{path.name}: TFLM's int8 forecasts differ from LiteRT's by up to {_leads(per_lead.tolist(), '{:.3g}')} "
        f"per lead (allowed {limit:.3g}, {LITERT_MAX_STEPS:g} output steps), on average by "
        f"{_leads(mean_per_lead.tolist(), '{:.3g}')} (allowed {mean_limit:.3g}, {LITERT_MEAN_STEPS:g} steps): "
        f"over at lead {', '.join(map(str, over))}"
    )
    return check


def collapse(forecasts: np.ndarray, reference: np.ndarray, step: float) -> dict:
    """Distinct values per window, of `forecasts` and of the float `reference` rounded to
    the int8 output `step`; collapsed per the module docstring."""
    horizon = forecasts.shape[1]
    grid = np.round(reference / step) * step if step else reference
    distinct, reference_distinct = _distinct(forecasts), _distinct(grid)
    fewer, reference_fewer = float(np.mean(distinct < horizon)), float(np.mean(reference_distinct < horizon))
    mean, reference_mean = float(distinct.mean()), float(reference_distinct.mean())
    flat, reference_flat = float(np.mean(distinct == 1)), float(np.mean(reference_distinct == 1))
    collapsed = horizon > 1 and (flat > reference_flat + FLAT_MARGIN or mean < DISTINCT_RATIO * reference_mean
                                 or fewer > reference_fewer + FEWER_MARGIN)
    return {
        "mean_distinct": mean, "reference_mean_distinct": reference_mean, "fewer_distinct_share": fewer,
        "reference_fewer_distinct_share": reference_fewer,
        "float_fewer_distinct_share": float(np.mean(_distinct(reference) < horizon)),
        "flat_share": flat, "reference_flat_share": reference_flat,
        "collapsed": bool(collapsed),
        "collapse": (f"{fewer:.1%} of test windows have fewer than {horizon} distinct values "
                     f"({flat:.1%} one value repeated), mean {mean:.2f} distinct values per window; the float "
                     f"model's forecasts on the int8 output step: {reference_fewer:.1%} ({reference_flat:.1%}), mean "
                     f"{reference_mean:.2f} (allowed: at most {FLAT_MARGIN:.0%} more one-value windows, "
                     f"{FEWER_MARGIN:.0%} more windows with fewer values, and {DISTINCT_RATIO:g} times the mean)"),
    }


def lead_rmse(forecasts: np.ndarray, test_y: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean((np.asarray(forecasts, np.float64) - test_y) ** 2, axis=0))


def rmse_changes(forecasts: np.ndarray, test_y: np.ndarray, reference: np.ndarray) -> dict:
    """Test RMSE against the float model's, pooled over leads and at each lead."""
    rmse = errors(forecasts, test_y)["rmse"]
    return {
        "rmse": rmse, "rmse_change_pct": 100 * (rmse / errors(reference, test_y)["rmse"] - 1),
        "rmse_per_lead": lead_rmse(forecasts, test_y).tolist(), "float_rmse_per_lead": lead_rmse(reference, test_y).tolist(),
        "rmse_change_pct_per_lead": (100 * (lead_rmse(forecasts, test_y) / lead_rmse(reference, test_y) - 1)).tolist(),
    }


def _distinct(forecasts: np.ndarray) -> np.ndarray:
    ordered = np.sort(forecasts, axis=1)
    return 1 + np.count_nonzero(np.diff(ordered, axis=1), axis=1)


def _steps(value: float, step: float) -> float:
    return float(value / step) if step else float("inf")


def _leads(values: list[float], form: str) -> str:
    return " ".join(form.format(value) for value in values)


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


def check_float(path: Path, test_x: np.ndarray, test_y: np.ndarray, reference: np.ndarray, spec: Spec,
                calibration: Calibration | None) -> dict:
    outputs = named_outputs(path, tflm_run(path, test_x), spec)
    check = float_now(outputs, reference, test_y, spec, calibration)
    worst = ", ".join(f"{name} up to {check[f'{name}_max_abs_vs_keras']:.3g}" for name in DISTRIBUTION_OUTPUTS
                      if f"{name}_max_abs_vs_keras" in check)
    check.update(windows=len(test_x), tolerance_abs=TOLERANCE,
                 first_outputs={name: values[0].tolist() for name, values in outputs.items()}, failure=(
                     f"{path.name}: TFLM's outputs differ from the Keras pipeline's (forecast up to "
                     f"{check['max_abs_vs_keras']:.3g} raw units{', ' + worst if worst else ''}), over the "
                     f"{TOLERANCE:g} parity tolerance"))
    check["first_forecast"] = check["first_outputs"][OUTPUT_NAME]
    return check


def named_outputs(path: Path, run: ChildRun, spec: Spec) -> dict[str, np.ndarray]:
    """A TFLM run's outputs by name (forecast, and a schema-4 file's quantiles and exceedance)."""
    return dict(zip(output_order(path, output_names(spec)), run.outputs))


def float_now(outputs: dict[str, np.ndarray], reference: np.ndarray, test_y: np.ndarray, spec: Spec,
              calibration: Calibration | None) -> dict:
    """The float32 file's outputs in TFLM against the Keras pipeline's: the forecast within
    the parity tolerance, a schema-4 file's quantiles and probabilities as parity holds them
    (export/distribution.py distribution_errors)."""
    tflm = outputs[OUTPUT_NAME]
    max_abs = float(np.max(np.abs(tflm - reference)))
    check = {**rmse_changes(tflm, test_y, reference), "max_abs_vs_keras": max_abs, "passed": max_abs <= TOLERANCE}
    if calibration is not None:
        for output, error in distribution_errors(outputs, reference, spec, calibration, TOLERANCE).items():
            check[f"{output}_max_abs_vs_keras"], check[f"{output}_within_tolerance"] = error["max_abs"], error["passed"]
            check["passed"] = check["passed"] and error["passed"]
    return check


def public(check: dict) -> dict:
    """A check as recorded: without its failure text and the outputs main.cc prints."""
    return {key: value for key, value in check.items() if key not in ("failure", "first_forecast", "first_outputs")}
