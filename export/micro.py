"""`edgecast export --target mcu`: the bundle's microcontroller build, verified in TFLM.

Writes BUNDLE/micro/ (whole or not at all):
  model.int8.tflite or model.builtin.tflite   the file the microcontroller runs
  model_data.cc, model_data.h                 that file as an aligned constant byte array
  op_resolver.h                               MicroMutableOpResolver<N> with exactly its ops
  main.cc                                     one forecast, from templates/micro_main.cc.in
  micro.json                                  the choice, its reason and every figure below
and a "micro" section in manifest.json.

The choice: the full-integer file (fused LSTM, int8) when its test RMSE, computed from
TFLM's own outputs, is at most ERROR_BUDGET_PCT above the float model's; otherwise the
float32 builtin-ops file. Both are checked in TensorFlow Lite Micro's interpreter (the
tflite-micro package, always in a child process: export/micro_child.py) on the
bundle's held-out test windows, the LSTM state reset before each window:
  float32: within parity.TOLERANCE of the Keras pipeline (the parity reference);
  int8: TFLM's integer kernels against LiteRT's on the same file. Their LSTM kernels
        round some intermediate steps differently, so single forecasts differ by a few
        steps of the int8 output (one step is its dequantization scale: 2.19 ug/m3 on a
        Changping model, where 88% of forecasts were identical and the rest one step
        apart). Passes when mean |TFLM - LiteRT| over every test forecast is at most
        LITERT_AGREEMENT (0.5%) of mean |LiteRT forecast|; the largest difference (in
        raw units and in output steps), the share of identical forecasts and
        RMS(TFLM - LiteRT) / RMS(LiteRT) are recorded beside it.
RAM: the smallest arena TFLM accepts (bisection to ARENA_STEP bytes, each probe a child
process) plus ARENA_MARGIN, rounded up to ARENA_ROUND. Flash: the model array plus an
estimate of the interpreter and the kernels of its ops (export/micro_flash.py).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from edgecast.common import write_json_atomic
from edgecast.trainer.bundle import Bundle, read_bundle
from edgecast_runtime.durable import atomic_write, replace_folder

from .accuracy import errors
from .errors import ExportError
from .manifest import file_sha256, read_manifest
from .micro_cpp import main_source, model_header, model_source, resolver_calls, resolver_header
from .micro_flash import flash_estimate
from .oplist import tflite_ops
from .parity import TOLERANCE, reference_forecast, tflite_forecast
from .quantize import MODES
from .unrolled import BUILTIN_FILE

MICRO_DIR = "micro"
MICRO_JSON = "micro.json"
INT8_FILE = MODES["tflite-int8"].file
ERROR_BUDGET_PCT = 3.0
LITERT_AGREEMENT = 0.005
ARENA_STEP = 16  # TFLM aligns its allocations to 16 bytes
ARENA_MARGIN = 0.10
ARENA_ROUND = 1024
ARENA_CEILING = 16 * 1024 * 1024
PROBE_WINDOWS = 8  # windows each arena probe runs (and must reproduce bit for bit)
TIMING_INVOKES = 500
CHILD_TIMEOUT = 600


class MicroError(ExportError):
    """The microcontroller build cannot be made or does not verify; says why, with the numbers."""


@dataclass(frozen=True)
class ChildRun:
    returncode: int
    answer: dict
    forecasts: np.ndarray | None
    stderr: str

    @property
    def ran(self) -> bool:
        return self.returncode == 0 and self.answer.get("ok", False)


@dataclass(frozen=True)
class MicroResult:
    """What `export_micro` wrote and measured (also micro.json and manifest["micro"])."""

    folder: Path
    model_file: str
    precision: str
    reason: str
    error_budget_pct: float
    tflm_release: str
    ops: dict
    verification: dict
    arena: dict
    flash: dict
    timing: dict
    files: dict

    def to_dict(self) -> dict:
        payload = asdict(self)
        payload["folder"] = str(self.folder)
        return payload


def tflm_release() -> str:
    try:
        from tflite_micro.python.tflite_micro._version import __version__
    except ImportError:
        raise MicroError("the tflite-micro package is not installed; `pip install tflite-micro` (a toolkit dependency)") from None

    commit = __version__.rsplit("-g", 1)[-1] if "-g" in __version__ else None
    return f"tflite-micro {__version__}" + (f" (TFLM main at commit {commit})" if commit else "")


def run_tflm(model: Path, arena_bytes: int, x: np.ndarray, timing_invokes: int = 0) -> ChildRun:
    """One TFLM run in a child process; a crash there is a return code here."""
    with tempfile.TemporaryDirectory(prefix="edgecast-tflm-") as folder:
        inputs, outputs = Path(folder) / "x.npy", Path(folder) / "y.npy"
        np.save(inputs, np.asarray(x, np.float32))
        request = {"model": str(model), "arena_bytes": int(arena_bytes), "inputs": str(inputs),
                   "outputs": str(outputs), "timing_invokes": timing_invokes}
        try:
            process = subprocess.run(
                [sys.executable, "-m", "edgecast.export.micro_child"], input=json.dumps(request),
                capture_output=True, text=True, timeout=CHILD_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            raise MicroError(f"{model}: TFLM did not finish {len(x)} windows in {CHILD_TIMEOUT} s") from None
        lines = process.stdout.strip().splitlines()
        answer = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
        forecasts = np.load(outputs) if process.returncode == 0 and outputs.is_file() else None
    return ChildRun(process.returncode, answer, forecasts, process.stderr[-2000:])


def _generous_run(model: Path, x: np.ndarray) -> tuple[int, ChildRun]:
    """A first arena that works: ten times the file, doubled until TFLM accepts it."""
    arena = max(16 * 1024, 10 * model.stat().st_size)
    while arena <= ARENA_CEILING:
        run = run_tflm(model, arena, x)
        if run.ran:
            return arena, run
        arena *= 2
    raise MicroError(f"{model}: TFLM did not run it even with a {ARENA_CEILING}-byte arena ({_last_line(run.stderr)})")


def smallest_arena(model: Path, probe_x: np.ndarray) -> dict:
    """Bisection for the smallest arena whose run reproduces a generous run's forecasts exactly."""
    upper, reference = _generous_run(model, probe_x)
    # An empty arena holds nothing. Bisection assumes that more arena never breaks a run
    # a smaller one completed; the result is checked again afterwards (_arena_checks).
    lower = 0
    probes = 1
    while upper - lower > ARENA_STEP:
        middle = (lower + upper) // 2 // ARENA_STEP * ARENA_STEP
        run = run_tflm(model, middle, probe_x)
        probes += 1
        if run.ran and np.array_equal(run.forecasts, reference.forecasts):
            upper = middle
        else:
            lower = middle
    padded = math.ceil(upper * (1 + ARENA_MARGIN) / ARENA_ROUND) * ARENA_ROUND
    return {
        "min_bytes": upper, "bytes": padded, "search_probes": probes, "step_bytes": ARENA_STEP,
        "margin": f"{ARENA_MARGIN:.0%} more, rounded up to a multiple of {ARENA_ROUND} bytes",
    }


def export_micro(bundle_dir: Path, progress: Callable[[str], object] = print) -> MicroResult:
    """Choose, verify in TFLM, measure and write BUNDLE/micro/; record it in the manifest.

    Needs model.builtin.tflite (and model.int8.tflite, unless tflite-int8 was refused)
    exported already: `edgecast export --target mcu` does both steps.
    """
    release = tflm_release()  # fails first, and clearly, without the tflite-micro package
    bundle = read_bundle(bundle_dir)
    manifest = read_manifest(bundle.path)
    listed = manifest.get("artifacts", {})
    if BUILTIN_FILE not in listed:
        raise MicroError(f"{bundle.path}: no {BUILTIN_FILE} in the manifest; run `edgecast export {bundle.path} --target mcu`")
    candidates = _verify_candidates(bundle, listed, progress)
    refused = manifest.get("quantization", {}).get("refused", {}).get("tflite-int8")
    chosen, reason = _choose(candidates, refused)
    verification = candidates[chosen]
    if not verification["passed"]:
        raise MicroError(verification["failure"])
    test_x = bundle.windows()["test_x"].astype(np.float32)

    source = bundle.path / chosen
    arena = smallest_arena(source, test_x[:PROBE_WINDOWS])
    progress(f"smallest TFLM arena {arena['min_bytes']} bytes ({arena['search_probes']} child runs); using {arena['bytes']}")
    arena.update(_arena_checks(source, arena, test_x[:PROBE_WINDOWS]))
    timing = _timing(source, arena["bytes"], test_x)
    ops = tflite_ops(source)
    op_names = [op["op"] for op in ops]
    calls = resolver_calls(op_names)
    data = source.read_bytes()
    result = MicroResult(
        folder=bundle.path / MICRO_DIR, model_file=chosen, precision=listed[chosen].get("precision", "float32"),
        reason=reason, error_budget_pct=ERROR_BUDGET_PCT, tflm_release=release,
        ops={"counts": {op: op_names.count(op) for op in sorted(set(op_names))}, "resolver": calls},
        verification={name: _public(check) for name, check in candidates.items()},
        arena=arena, flash=flash_estimate(len(data), sorted(set(op_names))), timing=timing, files={},
    )
    files = _render(bundle, result, data, calls, test_x[0], verification["first_forecast"])
    result = _write(bundle.path, files, result)
    _record_in_manifest(bundle.path, result)
    return result


def _verify_candidates(bundle: Bundle, listed: dict, progress: Callable[[str], object]) -> dict[str, dict]:
    """Both files in TFLM on the test windows: float32 against Keras, int8 against LiteRT."""
    windows = bundle.windows()
    test_x, test_y = windows["test_x"].astype(np.float32), windows["test_y"]
    reference = reference_forecast(bundle.load_model(), bundle.spec, test_x)
    float_rmse = errors(reference, test_y)["rmse"]
    candidates = {BUILTIN_FILE: _check_float(bundle.path / BUILTIN_FILE, test_x, test_y, reference, float_rmse)}
    progress(f"TFLM ran {BUILTIN_FILE} on {len(test_x)} test windows: max |TFLM - Keras| "
             f"{candidates[BUILTIN_FILE]['max_abs_vs_keras']:.2e}")
    if INT8_FILE in listed:
        int8 = candidates[INT8_FILE] = _check_int8(bundle.path / INT8_FILE, test_x, test_y, float_rmse)
        progress(f"TFLM ran {INT8_FILE} on {len(test_x)} test windows: RMSE change {int8['rmse_change_pct']:+.2f}%, "
                 f"{int8['identical_share']:.1%} identical to LiteRT's, mean |TFLM - LiteRT| "
                 f"{int8['litert_agreement']:.3%} of the mean |forecast|")
    return candidates


def _choose(candidates: dict, refused: str | None) -> tuple[str, str]:
    int8 = candidates.get(INT8_FILE)
    if int8 is None:
        why = f"tflite-int8 was refused ({refused})" if refused else f"no {INT8_FILE} was exported"
        return BUILTIN_FILE, f"{why}: the float32 builtin-ops file"
    change = int8["rmse_change_pct"]
    if change <= ERROR_BUDGET_PCT:
        return INT8_FILE, (f"full-integer int8 (fused LSTM): its test RMSE in TFLM is {change:+.2f}% from the float "
                           f"model's, within the {ERROR_BUDGET_PCT:g}% budget")
    return BUILTIN_FILE, (f"float32 builtin-ops: int8's test RMSE in TFLM is {change:+.2f}% from the float model's, "
                          f"over the {ERROR_BUDGET_PCT:g}% budget")


def _check_int8(path: Path, test_x: np.ndarray, test_y: np.ndarray, float_rmse: float) -> dict:
    check = int8_agreement(path, _forecasts(path, test_x), tflite_forecast(path, test_x), test_y, float_rmse)
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


def _check_float(path: Path, test_x: np.ndarray, test_y: np.ndarray, reference: np.ndarray, float_rmse: float) -> dict:
    tflm = _forecasts(path, test_x)
    max_abs = float(np.max(np.abs(tflm - reference)))
    rmse = errors(tflm, test_y)["rmse"]
    return {
        "windows": len(test_x), "rmse": rmse, "rmse_change_pct": 100 * (rmse / float_rmse - 1),
        "max_abs_vs_keras": max_abs, "tolerance_abs": TOLERANCE, "passed": max_abs <= TOLERANCE,
        "first_forecast": tflm[0].tolist(),
        "failure": (f"{path.name}: TFLM's forecasts differ from the Keras pipeline's by up to {max_abs:.3g} raw units, "
                    f"over the {TOLERANCE:g} parity tolerance"),
    }


def _forecasts(path: Path, x: np.ndarray) -> np.ndarray:
    return _generous_run(path, x)[1].forecasts


def _arena_checks(source: Path, arena: dict, probe_x: np.ndarray) -> dict:
    """The padded arena runs; 90% of the smallest one does not."""
    padded = run_tflm(source, arena["bytes"], probe_x)
    if not padded.ran:
        raise MicroError(f"{source.name}: TFLM failed with the padded {arena['bytes']}-byte arena ({_last_line(padded.stderr)})")
    short = int(arena["min_bytes"] * 0.9)
    too_small = run_tflm(source, short, probe_x)
    return {"padded_runs": True, "ninety_percent_bytes": short, "ninety_percent_fails": not too_small.ran,
            "ninety_percent_exit": too_small.returncode}


def _timing(source: Path, arena_bytes: int, test_x: np.ndarray) -> dict:
    run = run_tflm(source, arena_bytes, test_x[: min(len(test_x), 64)], timing_invokes=TIMING_INVOKES)
    if not run.ran:
        raise MicroError(f"{source.name}: the timing run failed ({_last_line(run.stderr)})")
    return {
        "tflm_us": run.answer["tflm_us"], "litert_us": run.answer["litert_us"], "invokes": TIMING_INVOKES,
        "measure": "median wall time of one forecast (reset state, set input, invoke, read output) through each "
                   "interpreter's Python binding, one thread, both in the same child process on this machine",
    }


def _public(check: dict) -> dict:
    return {key: value for key, value in check.items() if key not in ("failure", "first_forecast")}


def _render(
    bundle: Bundle, result: MicroResult, data: bytes, calls: list[str], window: np.ndarray, expected: list[float]
) -> dict[str, bytes]:
    spec = bundle.spec
    sha256 = file_sha256(bundle.path / result.model_file)
    rows = ",\n".join("    {" + ", ".join(_float_literal(v) for v in step) + "}" for step in np.asarray(window, np.float64))
    main = main_source({
        "model_name": bundle.name, "model_file": result.model_file, "precision": result.precision,
        "tflm_release": result.tflm_release, "target": spec.target, "look_back": spec.look_back,
        "features": spec.n_features, "feature_list": ", ".join(spec.features), "horizon": spec.horizon,
        "arena_min_bytes": result.arena["min_bytes"], "margin_text": result.arena["margin"],
        "arena_bytes": result.arena["bytes"], "example_window": rows,
        "target_units": spec.target_units or f"raw units of {spec.target}",
        "expected_forecast": " ".join(f"{v:.4f}" for v in expected),
    })
    return {
        result.model_file: data,
        "model_data.h": model_header(len(data)).encode(),
        "model_data.cc": model_source(data, result.model_file, sha256).encode(),
        "op_resolver.h": resolver_header(calls).encode(),
        "main.cc": main.encode(),
    }


def _write(bundle_path: Path, files: dict[str, bytes], result: MicroResult) -> MicroResult:
    """Fill a staging folder, then swap it in for micro/: the folder appears whole."""
    staging = Path(tempfile.mkdtemp(prefix=f".{MICRO_DIR}.", suffix=".tmp", dir=bundle_path))
    try:
        entries = {}
        for name, data in files.items():
            atomic_write(staging / name, data)
            entries[name] = {"bytes": len(data), "sha256": file_sha256(staging / name)}
        result = replace(result, files=entries)
        write_json_atomic(staging / MICRO_JSON, result.to_dict())
        os.chmod(staging, 0o755)
        replace_folder(staging, bundle_path / MICRO_DIR)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result


def _record_in_manifest(bundle_path: Path, result: MicroResult) -> None:
    manifest = read_manifest(bundle_path)
    manifest["micro"] = {key: value for key, value in result.to_dict().items() if key != "folder"}
    manifest["micro"]["folder"] = MICRO_DIR
    write_json_atomic(bundle_path / "manifest.json", manifest)


def verify_micro(bundle_dir: Path) -> dict | None:
    """micro/ as the manifest records it, checked now: sha256s, and the chosen file run in
    TFLM with the recorded arena on the test windows. None when there is no micro build."""
    bundle = read_bundle(bundle_dir)
    record = read_manifest(bundle.path).get("micro")
    if not record:
        return None
    folder = bundle.path / MICRO_DIR
    problems = [
        f"{folder / name}: {'missing' if not (folder / name).is_file() else 'sha256 differs from the manifest'}"
        for name, entry in record["files"].items()
        if not (folder / name).is_file() or file_sha256(folder / name) != entry["sha256"]
    ]
    report = {**record, "problems": problems}
    if problems:
        report["passed"] = False
        return report
    windows = bundle.windows()
    test_x, test_y = windows["test_x"].astype(np.float32), windows["test_y"]
    run = run_tflm(folder / record["model_file"], record["arena"]["bytes"], test_x)
    if not run.ran:
        report.update(passed=False, problems=[f"TFLM failed with the recorded arena ({_last_line(run.stderr)})"])
        return report
    model = bundle.load_model()
    float_rmse = errors(reference_forecast(model, bundle.spec, test_x), test_y)["rmse"]
    if record["model_file"] == INT8_FILE:
        check = _public(int8_agreement(folder / INT8_FILE, run.forecasts, tflite_forecast(folder / INT8_FILE, test_x),
                                       test_y, float_rmse))
    else:
        check = _float_now(run.forecasts, reference_forecast(model, bundle.spec, test_x), test_y, float_rmse)
    report.update(now=check, passed=check["passed"])
    return report


def _float_now(tflm: np.ndarray, reference: np.ndarray, test_y: np.ndarray, float_rmse: float) -> dict:
    max_abs = float(np.max(np.abs(tflm - reference)))
    rmse = errors(tflm, test_y)["rmse"]
    return {"rmse_change_pct": 100 * (rmse / float_rmse - 1), "max_abs_vs_keras": max_abs, "passed": max_abs <= TOLERANCE}


def _float_literal(value: float) -> str:
    text = f"{value:.7g}"
    return text + ("f" if any(c in text for c in ".eE") else ".0f")


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no message"
