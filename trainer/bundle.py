"""The model bundle `models/NAME/`: the contract between trainer and export.

Files written by the trainer:
  model.keras          the Keras model (it works in scaled space)
  preprocessing.json   the preprocessing spec (docs/graph-contract.md)
  metrics.json         test-split RMSE/MAE per horizon step: model, persistence, ridge
  training.json        settings, data source and sha256, split, training history
  windows.npz          raw-unit held-out windows (test split) and a training sample,
                       so export, parity and calibration need no CSV
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import BundleError

SCHEMA_VERSION = 1
MODEL_FILE = "model.keras"
SPEC_FILE = "preprocessing.json"
METRICS_FILE = "metrics.json"
TRAINING_FILE = "training.json"
WINDOWS_FILE = "windows.npz"
TRAINER_FILES = (MODEL_FILE, SPEC_FILE, METRICS_FILE, TRAINING_FILE, WINDOWS_FILE)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, payload: dict) -> None:
    write_bytes_atomic(path, (json.dumps(payload, indent=2, ensure_ascii=False) + "\n").encode())


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise BundleError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None


def make_spec(
    target: str,
    features: list[str],
    look_back: int,
    horizon: int,
    interval_seconds: float | None,
    time_columns: list[str],
    scaler,
    max_gap: int,
) -> dict:
    """The preprocessing spec of the graph contract, from a fitted MinMaxScaler."""
    return {
        "schema_version": SCHEMA_VERSION,
        "target": target,
        "features": list(features),
        "look_back": int(look_back),
        "horizon": int(horizon),
        "interval_seconds": interval_seconds,
        "time_columns": list(time_columns),
        "scaler": {
            "kind": "minmax",
            "feature_range": [float(v) for v in scaler.feature_range],
            "data_min": [float(v) for v in scaler.data_min_],
            "data_max": [float(v) for v in scaler.data_max_],
        },
        "gap_policy": {"max_gap": int(max_gap), "method": "linear"},
        "input": {"name": "window", "dtype": "float32", "shape": ["batch", look_back, len(features)], "units": "raw"},
        "output": {"name": "forecast", "dtype": "float32", "shape": ["batch", horizon], "units": "raw"},
    }


def write_bundle(out_dir: Path, model, spec: dict, metrics: dict, training: dict, windows: dict) -> Path:
    """Write the whole bundle into a temporary sibling folder, then swap it in.

    A crash leaves either the old bundle or the new one, never a mix; export artifacts
    of an older model are dropped with it, since they no longer describe this model.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        model.save(staging / MODEL_FILE)
        write_json_atomic(staging / SPEC_FILE, spec)
        write_json_atomic(staging / METRICS_FILE, metrics)
        write_json_atomic(staging / TRAINING_FILE, training)
        np.savez_compressed(staging / WINDOWS_FILE, **windows)
        _swap_in(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def _swap_in(staging: Path, out_dir: Path) -> None:
    retired = None
    if out_dir.exists():
        retired = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, retired)
    os.replace(staging, out_dir)
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)


@dataclass
class Bundle:
    path: Path
    spec: dict
    metrics: dict
    training: dict

    @property
    def name(self) -> str:
        return self.path.name

    def load_model(self):
        import keras

        try:
            return keras.saving.load_model(self.path / MODEL_FILE, compile=False)
        except Exception as exc:  # Keras raises many types for a damaged file
            raise BundleError(f"{self.path / MODEL_FILE}: cannot load the Keras model ({exc})") from None

    def windows(self) -> dict[str, np.ndarray]:
        try:
            with np.load(self.path / WINDOWS_FILE) as data:
                return {key: data[key] for key in data.files}
        except (OSError, ValueError) as exc:
            raise BundleError(f"{self.path / WINDOWS_FILE}: cannot read the held-out windows ({exc})") from None

    def scaler(self):
        return scaler_from_spec(self.spec)


def scaler_from_spec(spec: dict):
    """Rebuild the fitted MinMaxScaler from the spec: fitting on [min, max] gives the same state."""
    from sklearn.preprocessing import MinMaxScaler

    scaler_spec = spec["scaler"]
    bounds = np.array([scaler_spec["data_min"], scaler_spec["data_max"]], dtype=np.float64)
    return MinMaxScaler(feature_range=tuple(scaler_spec["feature_range"])).fit(bounds)


def read_bundle(path: str | Path) -> Bundle:
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: not a folder (expected a model bundle such as models/NAME)")
    missing = [name for name in TRAINER_FILES if not (path / name).is_file()]
    if missing:
        raise BundleError(f"{path}: not an edgecast bundle, missing {', '.join(missing)}")
    spec = read_json(path / SPEC_FILE)
    if spec.get("schema_version") != SCHEMA_VERSION:
        raise BundleError(
            f"{path / SPEC_FILE}: schema version {spec.get('schema_version')!r}, this edgecast reads {SCHEMA_VERSION}"
        )
    for key in ("target", "features", "look_back", "horizon", "scaler"):
        if key not in spec:
            raise BundleError(f"{path / SPEC_FILE}: missing key '{key}'")
    return Bundle(path, spec, read_json(path / METRICS_FILE), read_json(path / TRAINING_FILE))
