"""`edgecast export` and `edgecast verify`: convert, prove parity, record the manifest."""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgecast.trainer.bundle import MODEL_FILE, SPEC_FILE, WINDOWS_FILE, Bundle, read_bundle
from edgecast.trainer.errors import BundleError
from edgecast_runtime.contract import MANIFEST_NAME
from edgecast_runtime.durable import atomic_write, fsync_dir

from .errors import ExportError, ParityError
from .manifest import artifact_entry, integrity_problems, read_manifest, write_manifest
from .onnx_export import to_onnx
from .parity import check_parity
from .reports import ExportResult, Integrity, ParityReport, VerifyResult
from .settings import EXPORT_DEFAULTS
from .tflite_export import TFLITE_BATCH, to_tflite
from .unrolled import BUILTIN_FILE, to_builtin_tflite

if TYPE_CHECKING:
    import keras

ONNX_FILE = "model.onnx"
TFLITE_FILE = "model.tflite"


def export_bundle(
    bundle_dir: Path, opset: int = EXPORT_DEFAULTS.opset, tflite: bool = EXPORT_DEFAULTS.tflite,
    progress: Callable[[str], object] = print, quantize: Sequence[str] = EXPORT_DEFAULTS.quantize,
    builtin_ops: bool = EXPORT_DEFAULTS.builtin_ops, max_rmse_change: float = EXPORT_DEFAULTS.max_rmse_change,
) -> ExportResult:
    """Write model.onnx (and model.tflite) only if they pass parity; then the manifest.

    The conversions go to temporary files first: a failed parity check leaves the
    bundle exactly as it was. Quantized modes (export/quantize.py) follow the float
    artifacts; a refused mode is listed under manifest["quantization"]["refused"].
    Optional files of an earlier export that this one did not write are removed and
    named in the result.
    """
    from .quantize import check_modes

    modes = check_modes(list(quantize), max_rmse_change)
    bundle = read_bundle(bundle_dir)
    model = bundle.load_model()
    held_out = held_out_windows(bundle, model)  # before converting: a damaged bundle fails in a blink
    staged = {ONNX_FILE: to_onnx(model, bundle.spec, bundle.name, opset)}
    progress(f"converted to ONNX (opset {opset})")
    if tflite:
        staged[TFLITE_FILE] = to_tflite(model, bundle.spec)
        progress(f"converted to TFLite (float32, static batch {TFLITE_BATCH})")
    if builtin_ops:
        staged[BUILTIN_FILE] = to_builtin_tflite(model, bundle.spec)
        progress(f"converted to builtin-ops-only TFLite (unrolled, float32, static batch {TFLITE_BATCH})")
    temporary = _stage(bundle.path, staged)
    try:
        parity = check_parity(model, bundle.spec, held_out, temporary)
        if not parity.passed:
            raise ParityError(_failure_line(parity), parity)
        for name, path in temporary.items():
            os.replace(path, bundle.path / name)
        fsync_dir(bundle.path)
    finally:
        for path in temporary.values():
            Path(path).unlink(missing_ok=True)
    artifacts = _artifact_entries(bundle.path, list(staged), opset)
    return _add_quantized(bundle, model, modes, artifacts, parity, progress, max_rmse_change)


def _add_quantized(
    bundle: Bundle, model: keras.Model, modes: list[str], artifacts: dict, parity: ParityReport,
    progress: Callable[[str], object], max_rmse_change: float = EXPORT_DEFAULTS.max_rmse_change,
) -> ExportResult:
    from .variants import export_quantized, remove_stale

    floats = {name: bundle.path / name for name, entry in artifacts.items() if entry.get("precision") == "float32"}
    quantized = export_quantized(bundle, model, modes, floats, progress, max_rmse_change) if modes else None
    extra = {}
    if quantized:
        artifacts.update(quantized.entries)
        extra = {"quantization": {"refused": quantized.refused, "accuracy": quantized.accuracy.to_dict()}}
        if quantized.auto is not None:
            extra["quantization"]["auto"] = quantized.auto
    manifest = write_manifest(bundle, artifacts, parity.to_dict(), extra)
    removed = remove_stale(bundle.path, set(artifacts))  # after the manifest stops listing them
    return ExportResult.from_manifest(bundle.path, bundle.path / MANIFEST_NAME, manifest, removed)


def verify_bundle(bundle_dir: Path) -> VerifyResult:
    """Parity of the float32 artifacts on disk, recomputed now, plus their integrity;
    for every model artifact (quantized ones too) its size and test-split accuracy."""
    from .accuracy import accuracy_report

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
    _require_loadable_onnx(exported, problems)
    parity = check_parity(model, bundle.spec, held_out, floats)
    accuracy = accuracy_report(model, bundle.spec, bundle.windows(), exported)
    return VerifyResult(bundle.path, parity, accuracy, Integrity(not problems, problems))


def held_out_windows(bundle: Bundle, model: keras.Model) -> np.ndarray:
    """The test windows of windows.npz, checked against the spec and the Keras model's input."""
    spec = bundle.spec
    expected = (spec["look_back"], len(spec["features"]))
    model_input = tuple(model.input_shape[1:]) if hasattr(model, "input_shape") else None
    encoded = len(spec.get("encoded_features") or spec["features"])
    if model_input is not None and model_input != (spec["look_back"], encoded):
        raise BundleError(
            f"{bundle.path / MODEL_FILE}: the model takes windows [batch, {', '.join(map(str, model_input))}] "
            f"but {SPEC_FILE} describes [batch, {spec['look_back']}, {encoded}]: the files are from different models"
        )
    model_output = tuple(model.output_shape[1:]) if hasattr(model, "output_shape") else None
    if model_output is not None and model_output != (spec["horizon"],):
        raise BundleError(
            f"{bundle.path / MODEL_FILE}: the model forecasts [batch, {', '.join(map(str, model_output))}] "
            f"but {SPEC_FILE} says horizon {spec['horizon']}: the files are from different models"
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


def _require_loadable_onnx(artifacts: dict[str, Path], problems: list[str]) -> None:
    """An ONNX file onnxruntime cannot even open (truncated, overwritten) is one clear error, not a crash."""
    import onnxruntime as ort

    for name, path in artifacts.items():
        if not name.endswith(".onnx"):
            continue
        try:
            ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's errors derive from Exception only
            tampered = any(str(path) in problem for problem in problems)
            raise ExportError(
                f"{path}: onnxruntime cannot load it ({str(exc).splitlines()[0][:200]})"
                + ("; its sha256 differs from the manifest" if tampered else "")
            ) from None


def _stage(folder: Path, staged: dict[str, bytes]) -> dict[str, Path]:
    paths = {}
    for name, data in staged.items():
        path = folder / f".{name}.staged"
        atomic_write(path, data)
        paths[name] = path
    return paths


def _artifact_entries(folder: Path, names: list[str], opset: int) -> dict:
    entries = {
        MODEL_FILE: artifact_entry(folder / MODEL_FILE, kind="keras", role="source model (scaled space)"),
        SPEC_FILE: artifact_entry(folder / SPEC_FILE, kind="spec"),
    }
    for name in names:
        if name == ONNX_FILE:
            entries[name] = artifact_entry(folder / name, kind="onnx", precision="float32", batch="dynamic", opset=opset)
        elif name == BUILTIN_FILE:
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
