"""manifest.json: what was exported, its checksums, parity results and library versions."""
from __future__ import annotations

import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from edgecast.base import write_json_atomic
from edgecast.trainer.bundle import Bundle, read_json
from edgecast.trainer.errors import BundleError
from edgecast_runtime.contract import KERAS_FILE, MANIFEST_NAME, SPEC_FILE
from edgecast_runtime.manifest import file_sha256

MANIFEST_SCHEMA = 1
TRACKED_PACKAGES = ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert", "numpy", "scikit-learn")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in TRACKED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def artifact_entry(path: Path, **details: object) -> dict:
    return {"sha256": file_sha256(path), "bytes": Path(path).stat().st_size, **details}


def write_manifest(bundle: Bundle, artifacts: dict[str, dict], parity: dict, extra: dict | None = None) -> dict:
    """`extra`: further top-level sections (e.g. "quantization"); readers ignore unknown keys."""
    manifest = {
        "schema_version": MANIFEST_SCHEMA,
        "model_name": bundle.name,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "artifacts": artifacts,
        "parity": parity,
        "versions": library_versions(),
        "training_data": {
            "source": bundle.training["data"]["source"],
            "sha256": bundle.training["data"]["sha256"],
        },
        **(extra or {}),
    }
    if "input_statistics" in bundle.training:  # the hub's input-drift reference (older bundles lack it)
        manifest["input_statistics"] = bundle.training["input_statistics"]
    write_json_atomic(bundle.path / MANIFEST_NAME, manifest)
    return manifest


def read_manifest(bundle_path: Path) -> dict:
    path = Path(bundle_path) / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"{bundle_path}: no {MANIFEST_NAME}; run `edgecast export {bundle_path}` first")
    manifest = read_json(path)
    artifacts = manifest.get("artifacts") if isinstance(manifest, dict) else None
    if not isinstance(artifacts, dict) or not all(isinstance(entry, dict) for entry in artifacts.values()):
        raise BundleError(
            f"{path}: not an edgecast manifest (expected an object whose 'artifacts' maps file names to entries); "
            f"run `edgecast export {bundle_path}` again"
        )
    for name in artifacts:
        _refuse_outside_the_bundle(Path(bundle_path), path, name)
    return manifest


def _refuse_outside_the_bundle(bundle_path: Path, manifest_path: Path, name: str) -> None:
    """A manifest names files in its own bundle: an absolute name, a '..' or a symlink
    out of the folder would have verify read (and hash, and load) a file elsewhere."""
    listed = Path(name)
    inside = bundle_path.resolve()
    if listed.is_absolute() or ".." in listed.parts or inside not in (inside / listed).resolve().parents:
        raise BundleError(
            f"{manifest_path}: artifact {name!r} is outside the bundle (an absolute name, '..' or a symlink "
            f"out of {bundle_path}); refusing to open it"
        )


def integrity_problems(bundle: Bundle, manifest: dict) -> list[str]:
    """Files whose size or sha256 no longer match the manifest; one line instead of a
    line per file when the manifest was written for another model altogether."""
    problems, differing = [], []
    for name, entry in manifest.get("artifacts", {}).items():
        path = bundle.path / name
        if Path(name).name != name or name in (".", ".."):
            problems.append(f"{bundle.path}/{MANIFEST_NAME}: artifact name {name!r} is not a file in the bundle")
        elif not path.is_file():
            problems.append(f"{path}: listed in the manifest but missing")
        elif file_sha256(path) != entry.get("sha256"):
            differing.append(name)
    other = _other_model(bundle, manifest, differing)
    if other:
        return [other, *problems]
    return problems + [f"{bundle.path / name}: sha256 differs from the manifest" for name in differing]


def _other_model(bundle: Bundle, manifest: dict, differing: list[str]) -> str | None:
    """Why the manifest describes another model, or None: the Keras model it lists is not
    this one, and the spec or the training data it names is not this bundle's either
    (a spec edited on its own is tampering, not another model)."""
    if KERAS_FILE not in differing:
        return None
    recorded = manifest.get("training_data", {}) if isinstance(manifest.get("training_data"), dict) else {}
    other_data = recorded.get("sha256") not in (None, bundle.training["data"]["sha256"])
    if SPEC_FILE not in differing and not other_data:
        return None
    name = manifest.get("model_name", "another bundle")
    trained_on = f", trained on {recorded['source']}" if other_data and recorded.get("source") else ""
    return (
        f"{bundle.path / MANIFEST_NAME} belongs to another model ('{name}'{trained_on}): "
        f"{', '.join(differing)} differ from it; run `edgecast export {bundle.path}` to export this model"
    )
