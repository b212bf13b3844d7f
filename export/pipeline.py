"""`edgecast export` and `edgecast verify`: convert, prove parity, build for a
microcontroller when asked, record the manifest (once, as the last step)."""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgecast.trainer.bundle import Bundle, read_bundle
from edgecast.trainer.errors import BundleError
from edgecast.trainer.intervals import read_calibration
from edgecast_runtime.contract import (
    BUILTIN_TFLITE_FILE,
    KERAS_FILE,
    MANIFEST_NAME,
    MICRO_DIR,
    ONNX_FILE,
    SPEC_FILE,
    TFLITE_FILE,
    WINDOWS_FILE,
)
from edgecast_runtime.durable import atomic_write, fsync_dir

from .backends import artifact_mismatch
from .errors import ExportError, ParityError
from .manifest import artifact_entry, integrity_problems, read_manifest, write_manifest
from .onnx_export import to_onnx
from .parity import check_parity
from .reports import ExportResult, Integrity, ParityReport, VerifyResult
from .settings import EXPORT_DEFAULTS, MCU, TARGETS
from .tflite_export import TFLITE_BATCH, to_tflite
from .unrolled import to_builtin_tflite

if TYPE_CHECKING:
    import keras

    from edgecast.trainer.intervals import Calibration
    from edgecast_runtime.spec import Spec

    from .micro.build import MicroResult

MICRO_MODE = "tflite-int8"  # the full-integer file a microcontroller build chooses from


def export_bundle(
    bundle_dir: Path, opset: int = EXPORT_DEFAULTS.opset, tflite: bool = EXPORT_DEFAULTS.tflite,
    progress: Callable[[str], object] = print, quantize: Sequence[str] = EXPORT_DEFAULTS.quantize,
    builtin_ops: bool = EXPORT_DEFAULTS.builtin_ops, target: str = EXPORT_DEFAULTS.target,
    max_rmse_change: float = EXPORT_DEFAULTS.max_rmse_change,
) -> ExportResult:
    """Write model.onnx (and model.tflite) only if they pass parity; then the quantized
    modes; then, for target "mcu", BUNDLE/micro/; last the manifest, written once.

    The conversions go to temporary files first: a failed parity check leaves the
    bundle exactly as it was. Quantized modes (export/quantize.py) follow the float
    artifacts; a refused mode is listed under manifest["quantization"]["refused"].
    Target "mcu" also makes the two files a microcontroller build chooses between
    (model.builtin.tflite and model.int8.tflite; a refused tflite-int8 it added itself is
    no error, so `refused` lists only the modes asked for) and the build (export/micro/),
    recorded in the manifest's "micro" section; a failed build raises MicroError after
    the manifest records the artifacts that were written. Optional files of an earlier
    export that this one did not write, micro/ among them, are removed and named in the
    result.
    """
    from .quantize import check_modes

    if target not in TARGETS:
        raise ExportError(f"target {target!r} is not one of {', '.join(TARGETS)}", settings=("target",))
    asked = check_modes(list(quantize), max_rmse_change)
    micro = target == MCU
    builtin_ops = builtin_ops or micro
    if micro:
        from .micro.tflm import tflm_release

        tflm_release()  # without the tflite-micro package, fail before minutes of work
    bundle = read_bundle(bundle_dir)
    # A schema-4 build runs the float32 file (export/micro/checks.py SCHEMA4_FLOAT): no int8 file for it.
    added = micro and MICRO_MODE not in asked and bundle.spec.probabilistic is None
    modes = asked + [MICRO_MODE] * added
    calibration = probabilistic_calibration(bundle)
    model = bundle.load_model()
    held_out = held_out_windows(bundle, model)  # before converting: a damaged bundle fails in a blink
    staged = {ONNX_FILE: to_onnx(model, bundle.spec, bundle.name, opset, calibration=calibration)}
    progress(f"converted to ONNX (opset {opset})")
    if tflite:
        staged[TFLITE_FILE] = to_tflite(model, bundle.spec, calibration)
        progress(f"converted to TFLite (float32, static batch {TFLITE_BATCH})")
    if builtin_ops:
        staged[BUILTIN_TFLITE_FILE] = to_builtin_tflite(model, bundle.spec, calibration)
        progress(f"converted to builtin-ops-only TFLite (unrolled, float32, static batch {TFLITE_BATCH})")
    temporary = _stage(bundle.path, staged)
    try:
        parity = check_parity(model, bundle.spec, held_out, temporary, calibration)
        if not parity.passed:
            raise ParityError(_failure_line(parity), parity)
        for name, path in temporary.items():
            os.replace(path, bundle.path / name)
        fsync_dir(bundle.path)
    finally:
        for path in temporary.values():
            Path(path).unlink(missing_ok=True)
    artifacts = _artifact_entries(bundle.path, list(staged), opset)
    extra = _add_quantized(bundle, model, modes, artifacts, progress, max_rmse_change)
    refused = extra.get("quantization", {}).get("refused", {})
    built = None
    try:
        if micro:
            from .micro.build import build_micro

            built = build_micro(bundle, model, artifacts, refused.get(MICRO_MODE), progress)
    finally:  # the manifest describes the artifacts on disk, with or without a micro build
        result = _record(bundle, artifacts, parity, extra, built, keep_micro=micro)
    return replace(result, refused={mode: why for mode, why in refused.items() if mode in asked})


def probabilistic_calibration(bundle: Bundle) -> Calibration | None:
    """A schema-4 bundle's calibration (its graph's quantile and exceedance constants);
    None for an older schema. (A microcontroller build of such a model runs the float32
    builtin-ops file, which carries them: the integer-activation TFLite modes refuse them
    in export/quantize.py.)"""
    if bundle.spec.probabilistic is None:
        return None
    calibration = read_calibration(bundle.path)
    if calibration is None:
        raise ExportError(f"{bundle.path} declares quantiles or alerts but has no intervals.json: train it again")
    return calibration


def _add_quantized(
    bundle: Bundle, model: keras.Model, modes: list[str], artifacts: dict, progress: Callable[[str], object],
    max_rmse_change: float = EXPORT_DEFAULTS.max_rmse_change,
) -> dict:
    """Writes the quantized modes and adds their entries to `artifacts`; gives the manifest's
    "quantization" section (nothing without modes)."""
    from .variants import export_quantized

    floats = {name: bundle.path / name for name, entry in artifacts.items() if entry.get("precision") == "float32"}
    quantized = export_quantized(bundle, model, modes, floats, progress, max_rmse_change) if modes else None
    if not quantized:
        return {}
    artifacts.update(quantized.entries)
    section = {"refused": quantized.refused, "accuracy": quantized.accuracy.to_dict()}
    if quantized.auto is not None:  # --quantize auto: what was chosen per backend, and why
        section["auto"] = quantized.auto
    return {"quantization": section}


def _record(bundle: Bundle, artifacts: dict, parity: ParityReport, extra: dict, micro: MicroResult | None,
            keep_micro: bool) -> ExportResult:
    """The manifest, then the removal of what it no longer lists: optional files of an
    earlier export, and micro/ when this export is not for a microcontroller."""
    from .variants import remove_stale

    if micro is not None:
        extra = {**extra, "micro": micro.manifest_entry()}
    manifest = write_manifest(bundle, artifacts, parity.to_dict(), extra)
    removed = remove_stale(bundle.path, set(artifacts))
    if not keep_micro and (bundle.path / MICRO_DIR).is_dir():
        shutil.rmtree(bundle.path / MICRO_DIR)
        removed.append(bundle.path / MICRO_DIR)
    result = ExportResult.from_manifest(bundle.path, bundle.path / MANIFEST_NAME, manifest, removed)
    return replace(result, micro=micro)


def verify_bundle(bundle_dir: Path) -> VerifyResult:
    """Parity of the float32 artifacts on disk, recomputed now, plus their integrity;
    for every model artifact (quantized ones too) its size and test-split accuracy; the
    microcontroller build, when the manifest records one, run again in TFLM."""
    from .accuracy import accuracy_report
    from .micro.build import verify_micro

    bundle = read_bundle(bundle_dir)
    manifest = read_manifest(bundle.path)
    exported = {
        name: bundle.path / name for name, entry in manifest.get("artifacts", {}).items()
        if entry.get("kind") in ("onnx", "tflite") and (bundle.path / name).is_file()
    }
    floats = {name: path for name, path in exported.items() if manifest["artifacts"][name].get("precision") == "float32"}
    model = bundle.load_model()
    held_out = held_out_windows(bundle, model)
    problems = integrity_problems(bundle, manifest)
    _require_runnable(exported, bundle.spec, problems)
    calibration = probabilistic_calibration(bundle)
    parity = check_parity(model, bundle.spec, held_out, floats, calibration)
    accuracy = accuracy_report(model, bundle.spec, bundle.windows(), exported, calibration)
    return VerifyResult(bundle.path, parity, accuracy, Integrity(not problems, problems), verify_micro(bundle.path))


def held_out_windows(bundle: Bundle, model: keras.Model) -> np.ndarray:
    """The test windows of windows.npz, checked against the spec and the Keras model's input."""
    spec = bundle.spec
    expected = (spec.look_back, spec.n_features)
    model_input = tuple(model.input_shape[1:]) if hasattr(model, "input_shape") else None
    encoded = len(spec.model_columns)
    if model_input is not None and model_input != (spec.look_back, encoded):
        raise BundleError(
            f"{bundle.path / KERAS_FILE}: the model takes windows [batch, {', '.join(map(str, model_input))}] "
            f"but {SPEC_FILE} describes [batch, {spec.look_back}, {encoded}]: the files are from different models"
        )
    model_output = tuple(model.output_shape[1:]) if hasattr(model, "output_shape") else None
    if model_output is not None and model_output != (spec.horizon,):
        raise BundleError(
            f"{bundle.path / KERAS_FILE}: the model forecasts [batch, {', '.join(map(str, model_output))}] "
            f"but {SPEC_FILE} says horizon {spec.horizon}: the files are from different models"
        )
    windows = bundle.windows()
    where = bundle.path / WINDOWS_FILE
    if "test_x" not in windows:
        raise BundleError(f"{where}: no 'test_x' array (held-out windows); it has {', '.join(windows) or 'nothing'}")
    test_x = windows["test_x"]
    if test_x.ndim != 3 or test_x.shape[1:] != expected or len(test_x) == 0:
        raise BundleError(
            f"{where}: 'test_x' has shape {list(test_x.shape)}, expected [n >= 1, {expected[0]}, {expected[1]}] "
            f"(look-back, features from {SPEC_FILE})"
        )
    return test_x


def _require_runnable(artifacts: dict[str, Path], spec: Spec, problems: list[str]) -> None:
    """A file no runtime can open (truncated, overwritten) or that takes other windows
    (another model's file copied in) is one clear error, not a crash in the parity run.
    The spec embedded in an ONNX file is the manifest's business (its sha256)."""
    for path in artifacts.values():
        mismatch = artifact_mismatch(path, spec, same_spec=False)
        if mismatch is not None:
            tampered = any(str(path) in problem for problem in problems)
            raise ExportError(mismatch + ("; its sha256 differs from the manifest" if tampered else ""))


def _stage(folder: Path, staged: dict[str, bytes]) -> dict[str, Path]:
    paths = {}
    for name, data in staged.items():
        path = folder / f".{name}.staged"
        atomic_write(path, data)
        paths[name] = path
    return paths


def _artifact_entries(folder: Path, names: list[str], opset: int) -> dict:
    entries = {
        KERAS_FILE: artifact_entry(folder / KERAS_FILE, kind="keras", role="source model (scaled space)"),
        SPEC_FILE: artifact_entry(folder / SPEC_FILE, kind="spec"),
    }
    for name in names:
        if name == ONNX_FILE:
            entries[name] = artifact_entry(folder / name, kind="onnx", precision="float32", batch="dynamic", opset=opset)
        elif name == BUILTIN_TFLITE_FILE:
            entries[name] = artifact_entry(
                folder / name, kind="tflite", precision="float32", batch=TFLITE_BATCH,
                description="builtin ops only: recurrence unrolled over the look-back, no control flow or variables",
            )
        else:
            entries[name] = artifact_entry(folder / name, kind="tflite", precision="float32", batch=TFLITE_BATCH)
    return entries


def _failure_line(parity: ParityReport) -> str:
    failed = [c for c in parity.checks if not c.passed]
    worst = max(failed, key=lambda c: c.max_abs)
    return (
        f"parity failed: {len(failed)} of {len(parity.checks)} checks exceed {parity.tolerance_abs:g} "
        f"(worst: {worst.artifact} on {worst.windows} windows at batch {worst.batch}, "
        f"max abs error {worst.max_abs:.3g}, max rel error {worst.max_rel:.3g})"
    )
