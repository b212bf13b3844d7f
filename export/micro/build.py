"""Writing BUNDLE/micro/ (whole or not at all) as a step of the export pipeline, and
checking it again for `edgecast verify`."""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgecast.base import write_json_atomic
from edgecast.trainer.bundle import Bundle, read_bundle
from edgecast.trainer.intervals import read_calibration
from edgecast_runtime.contract import BUILTIN_TFLITE_FILE, MICRO_DIR, MICRO_FILE, OUTPUT_NAME
from edgecast_runtime.durable import atomic_write, replace_folder

from ..distribution import output_names
from ..errors import MicroError
from ..manifest import file_sha256, read_manifest
from ..oplist import tflite_ops
from ..parity import reference_forecast, tflite_forecast
from .checks import (
    ERROR_BUDGET_PCT,
    INT8_FILE,
    choose,
    float_now,
    int8_agreement,
    named_outputs,
    public,
    verify_candidates,
)
from .cpp import (
    distribution_source,
    float_literal,
    main_source,
    model_header,
    model_source,
    resolver_calls,
    resolver_header,
)
from .flash import flash_estimate
from .tflm import PROBE_WINDOWS, arena_checks, last_line, output_order, run_tflm, smallest_arena, tflm_release, timing

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class MicroResult:
    """What `build_micro` wrote and measured (also micro.json and manifest["micro"])."""

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

    def manifest_entry(self) -> dict:
        """The manifest's "micro" section: as micro.json, with the folder relative to the bundle."""
        entry = {key: value for key, value in self.to_dict().items() if key != "folder"}
        entry["folder"] = MICRO_DIR
        return entry


def build_micro(bundle: Bundle, model: keras.Model, artifacts: dict[str, dict], int8_refused: str | None,
                progress: Callable[[str], object] = print) -> MicroResult:
    """Choose, verify in TFLM, measure and write BUNDLE/micro/.

    `artifacts`: the manifest entries of the files exported just now, which must include
    model.builtin.tflite (and model.int8.tflite, unless tflite-int8 was refused, for
    `int8_refused`). The caller records the result in the manifest (manifest_entry).
    """
    release = tflm_release()  # fails clearly without the tflite-micro package
    if BUILTIN_TFLITE_FILE not in artifacts:
        raise MicroError(f"{bundle.path}: no {BUILTIN_TFLITE_FILE} was exported; the microcontroller build needs it")
    candidates = verify_candidates(bundle, model, artifacts, progress)
    chosen, reason = choose(candidates, int8_refused, bundle.spec.probabilistic is not None)
    verification = candidates[chosen]
    if not verification["passed"]:
        raise MicroError(verification["failure"])
    test_x = bundle.windows()["test_x"].astype(np.float32)

    source = bundle.path / chosen
    arena = smallest_arena(source, test_x[:PROBE_WINDOWS])
    progress(f"smallest TFLM arena {arena['min_bytes']} bytes ({arena['search_probes']} child runs); using {arena['bytes']}")
    arena.update(arena_checks(source, arena, test_x[:PROBE_WINDOWS]))
    measured = timing(source, arena["bytes"], test_x)
    ops = tflite_ops(source)
    op_names = [op["op"] for op in ops]
    calls = resolver_calls(op_names)
    data = source.read_bytes()
    result = MicroResult(
        folder=bundle.path / MICRO_DIR, model_file=chosen, precision=artifacts[chosen].get("precision", "float32"),
        reason=reason, error_budget_pct=ERROR_BUDGET_PCT, tflm_release=release,
        ops={"counts": {op: op_names.count(op) for op in sorted(set(op_names))}, "resolver": calls},
        verification={name: public(check) for name, check in candidates.items()},
        arena=arena, flash=flash_estimate(len(data), sorted(set(op_names))), timing=measured, files={},
    )
    files = _render(bundle, result, data, calls, test_x[0], verification)
    return _write(bundle.path, files, result)


def _render(
    bundle: Bundle, result: MicroResult, data: bytes, calls: list[str], window: np.ndarray, verification: dict
) -> dict[str, bytes]:
    spec, expected = bundle.spec, verification["first_forecast"]
    order = output_order(bundle.path / result.model_file, output_names(spec))
    probabilistic = spec.probabilistic
    distribution = distribution_source(
        order, list(probabilistic.quantiles) if probabilistic else [],
        [alert.name for alert in probabilistic.alerts] if probabilistic else [],
        spec.target_units or f"raw units of {spec.target}", verification.get("first_outputs", {}))
    sha256 = file_sha256(bundle.path / result.model_file)
    rows = ",\n".join("    {" + ", ".join(float_literal(v) for v in step) + "}" for step in np.asarray(window, np.float64))
    main = main_source({
        "model_name": bundle.name, "model_file": result.model_file, "precision": result.precision,
        "tflm_release": result.tflm_release, "target": spec.target, "look_back": spec.look_back,
        "features": spec.n_features, "feature_list": ", ".join(spec.features), "horizon": spec.horizon,
        "arena_min_bytes": result.arena["min_bytes"], "margin_text": result.arena["margin"],
        "arena_bytes": result.arena["bytes"], "example_window": rows,
        "target_units": spec.target_units or f"raw units of {spec.target}",
        "expected_forecast": " ".join(f"{v:.4f}" for v in expected),
        "forecast_index": order.index(OUTPUT_NAME), "distribution": distribution,
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
        write_json_atomic(staging / MICRO_FILE, result.to_dict())
        os.chmod(staging, 0o755)
        replace_folder(staging, bundle_path / MICRO_DIR)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result


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
        report.update(passed=False, problems=[f"TFLM failed with the recorded arena ({last_line(run.stderr)})"])
        return report
    reference = reference_forecast(bundle.load_model(), bundle.spec, test_x)
    calibration = read_calibration(bundle.path) if bundle.spec.probabilistic else None
    if record["model_file"] == INT8_FILE:
        check = public(int8_agreement(folder / INT8_FILE, run.forecasts, tflite_forecast(folder / INT8_FILE, test_x),
                                      test_y, reference))
        passed = check["passed"] and not check["collapsed"] and max(check["rmse_change_pct_per_lead"]) <= ERROR_BUDGET_PCT
    else:
        check = float_now(named_outputs(folder / record["model_file"], run, bundle.spec), reference, test_y,
                          bundle.spec, calibration)
        passed = check["passed"]
    report.update(now=check, passed=passed)
    return report

