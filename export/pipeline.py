"""`edgecast export` and `edgecast verify`: convert, prove parity, record the manifest."""
from __future__ import annotations

import os
from pathlib import Path

from edgecast.trainer.bundle import MODEL_FILE, SPEC_FILE, read_bundle, write_bytes_atomic

from .errors import ParityError
from .manifest import artifact_entry, integrity_problems, read_manifest, write_manifest
from .onnx_export import DEFAULT_OPSET, to_onnx
from .parity import check_parity
from .tflite_export import TFLITE_BATCH, to_tflite

ONNX_FILE = "model.onnx"
TFLITE_FILE = "model.tflite"


def export_bundle(bundle_dir: Path, opset: int = DEFAULT_OPSET, tflite: bool = True, progress=print) -> dict:
    """Write model.onnx (and model.tflite) only if they pass parity; then the manifest.

    The conversions go to temporary files first: a failed parity check leaves the
    bundle exactly as it was.
    """
    bundle = read_bundle(bundle_dir)
    model = bundle.load_model()
    staged = {ONNX_FILE: to_onnx(model, bundle.spec, bundle.name, opset)}
    progress(f"converted to ONNX (opset {opset})")
    if tflite:
        staged[TFLITE_FILE] = to_tflite(model, bundle.spec)
        progress(f"converted to TFLite (float32, static batch {TFLITE_BATCH})")
    temporary = _stage(bundle.path, staged)
    try:
        parity = check_parity(model, bundle.spec, bundle.windows()["test_x"], temporary)
        if not parity["passed"]:
            raise ParityError(_failure_line(parity), parity)
        for name, path in temporary.items():
            os.replace(path, bundle.path / name)
    finally:
        for path in temporary.values():
            Path(path).unlink(missing_ok=True)
    artifacts = _artifact_entries(bundle.path, list(staged), opset)
    return write_manifest(bundle, artifacts, parity)


def verify_bundle(bundle_dir: Path) -> dict:
    """Parity of the artifacts on disk, recomputed now, plus their integrity."""
    bundle = read_bundle(bundle_dir)
    manifest = read_manifest(bundle.path)
    exported = {name: bundle.path / name for name in (ONNX_FILE, TFLITE_FILE) if (bundle.path / name).is_file()}
    parity = check_parity(bundle.load_model(), bundle.spec, bundle.windows()["test_x"], exported)
    problems = integrity_problems(bundle.path, manifest)
    parity["integrity"] = {"passed": not problems, "problems": problems}
    parity["passed"] = parity["passed"] and not problems
    return parity


def _stage(folder: Path, staged: dict[str, bytes]) -> dict[str, Path]:
    paths = {}
    for name, data in staged.items():
        path = folder / f".{name}.staged"
        write_bytes_atomic(path, data)
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
        else:
            entries[name] = artifact_entry(folder / name, kind="tflite", precision="float32", batch=TFLITE_BATCH)
    return entries


def _failure_line(parity: dict) -> str:
    failed = [c for c in parity["checks"] if not c["passed"]]
    worst = max(failed, key=lambda c: c["max_abs"])
    return (
        f"parity failed: {len(failed)} of {len(parity['checks'])} checks exceed {parity['tolerance_abs']:g} "
        f"(worst: {worst['artifact']} on {worst['windows']} windows at batch {worst['batch']}, "
        f"max abs error {worst['max_abs']:.3g}, max rel error {worst['max_rel']:.3g})"
    )
