"""manifest.json: what was exported, its checksums, parity results and library versions."""
from __future__ import annotations

import hashlib
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from edgecast.trainer.bundle import read_json, write_json_atomic
from edgecast.trainer.errors import BundleError

MANIFEST_FILE = "manifest.json"
MANIFEST_SCHEMA = 1
TRACKED_PACKAGES = ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert", "numpy", "scikit-learn")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in TRACKED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def artifact_entry(path: Path, **details) -> dict:
    return {"sha256": sha256_of(path), "bytes": Path(path).stat().st_size, **details}


def write_manifest(bundle, artifacts: dict[str, dict], parity: dict, extra: dict | None = None) -> dict:
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
    write_json_atomic(bundle.path / MANIFEST_FILE, manifest)
    return manifest


def read_manifest(bundle_path: Path) -> dict:
    path = Path(bundle_path) / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(f"{bundle_path}: no {MANIFEST_FILE}; run `edgecast export {bundle_path}` first")
    manifest = read_json(path)
    artifacts = manifest.get("artifacts") if isinstance(manifest, dict) else None
    if not isinstance(artifacts, dict) or not all(isinstance(entry, dict) for entry in artifacts.values()):
        raise BundleError(
            f"{path}: not an edgecast manifest (expected an object whose 'artifacts' maps file names to entries); "
            f"run `edgecast export {bundle_path}` again"
        )
    return manifest


def integrity_problems(bundle_path: Path, manifest: dict) -> list[str]:
    """Files whose size or sha256 no longer match the manifest."""
    problems = []
    for name, entry in manifest.get("artifacts", {}).items():
        path = Path(bundle_path) / name
        if Path(name).name != name or name in (".", ".."):
            problems.append(f"{bundle_path}/manifest.json: artifact name {name!r} is not a file in the bundle")
        elif not path.is_file():
            problems.append(f"{path}: listed in the manifest but missing")
        elif sha256_of(path) != entry.get("sha256"):
            problems.append(f"{path}: sha256 differs from the manifest")
    return problems
