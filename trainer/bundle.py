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
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgecast.base import import_tensorflow, write_json_atomic
from edgecast_runtime.contract import (
    DIRECTION,
    INPUT_NAME,
    KERAS_FILE,
    MASKED,
    METRICS_FILE,
    NEIGHBOUR_SCHEMA_VERSION,
    OUTPUT_NAME,
    PLAIN_SCHEMA_VERSION,
    SCHEMA_VERSION,
    SPEC_FILE,
    SUPPORTED_SCHEMA_VERSIONS,
    TRAINING_FILE,
    WINDOWS_FILE,
)
from edgecast_runtime.durable import replace_folder

from . import features as feature_encodings
from .errors import BundleError

if TYPE_CHECKING:
    import keras
    from sklearn.preprocessing import MinMaxScaler

TRAINER_FILES = (KERAS_FILE, SPEC_FILE, METRICS_FILE, TRAINING_FILE, WINDOWS_FILE)
FOLDER_MODE = 0o755


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
    scaler: MinMaxScaler,
    max_gap: int,
    encodings: list[dict] | None = None,
    formulation: dict | None = None,
    target_units: str | None = None,
    clock: str | None = None,
    valid_ranges: dict | None = None,
    time_format: dict | None = None,
    target_min: float | None = None,
) -> dict:
    """The preprocessing spec of the graph contract, from a MinMaxScaler fitted on the encoded columns."""
    encodings = encodings or [feature_encodings.numeric(name) for name in features]
    schema = SCHEMA_VERSION if feature_encodings.needs_hub_knowledge(encodings) else PLAIN_SCHEMA_VERSION
    neighbours = [e for e in encodings if e["kind"] == MASKED]
    schema = NEIGHBOUR_SCHEMA_VERSION if neighbours else schema
    held = [e["feature"] for e in encodings if e["kind"] == DIRECTION]
    spec = {
        "schema_version": schema,
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
        "gap_policy": {"max_gap": int(max_gap), "method": "linear", "hold_last": held},
        "input": {"name": INPUT_NAME, "dtype": "float32", "shape": ["batch", look_back, len(features)], "units": "raw"},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": ["batch", horizon], "units": "raw"},
        "encodings": encodings,
        "encoded_features": feature_encodings.encoded_columns(encodings),
        "target_formulation": formulation or {"kind": "level"},
        "target_units": target_units,
        "clock": clock,  # of the training timestamps; the runtime reads hub times in it
    }
    # Optional keys, absent when they say nothing: the range of each feature's valid
    # readings ({name: [min or null, max or null]}; the hub treats others as missing)
    # and how the training file wrote its times (edgecast_runtime.clock.TimeFormat).
    if valid_ranges:
        spec["valid_ranges"] = {name: list(bounds) for name, bounds in valid_ranges.items()}
    if time_format:
        spec["time_format"] = dict(time_format)
    # The lowest forecast the graph gives (a concentration is never negative), and the
    # neighbouring stations whose readings the model reads ({station: [readings]}).
    if target_min is not None:
        spec["target_min"] = float(target_min)
    if neighbours:
        spec["neighbours"] = {}
        for encoding in neighbours:
            spec["neighbours"].setdefault(encoding["station"], []).append(encoding["reading"])
    return spec


def write_bundle(out_dir: Path, model: keras.Model, spec: dict, metrics: dict, training: dict, windows: dict) -> Path:
    """Write the whole bundle into a temporary sibling folder, then swap it in.

    A crash leaves either the old bundle or the new one, never a mix; export artifacts
    of an older model are dropped with it, since they no longer describe this model.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        staging.chmod(FOLDER_MODE)
        model.save(staging / KERAS_FILE)
        write_json_atomic(staging / SPEC_FILE, spec)
        write_json_atomic(staging / METRICS_FILE, metrics)
        write_json_atomic(staging / TRAINING_FILE, training)
        np.savez_compressed(staging / WINDOWS_FILE, **windows)
        replace_folder(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


@dataclass
class Bundle:
    path: Path
    spec: dict
    metrics: dict
    training: dict

    @property
    def name(self) -> str:
        return self.path.name

    def load_model(self) -> keras.Model:
        import_tensorflow()  # before keras, so TensorFlow's start-up chatter stays off the terminal
        import keras

        try:
            return keras.saving.load_model(self.path / KERAS_FILE, compile=False)
        except Exception as exc:  # Keras raises many types for a damaged file
            raise BundleError(f"{self.path / KERAS_FILE}: cannot load the Keras model ({exc})") from None

    def windows(self) -> dict[str, np.ndarray]:
        try:
            with np.load(self.path / WINDOWS_FILE) as data:
                return {key: data[key] for key in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # a truncated .npz is a BadZipFile
            raise BundleError(f"{self.path / WINDOWS_FILE}: cannot read the held-out windows ({exc})") from None

    def scaler(self) -> MinMaxScaler:
        return scaler_from_spec(self.spec)


def scaler_from_spec(spec: dict) -> MinMaxScaler:
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
    spec = _read_object(path / SPEC_FILE)
    if spec.get("schema_version") not in SUPPORTED_SCHEMA_VERSIONS:
        readable = ", ".join(str(v) for v in SUPPORTED_SCHEMA_VERSIONS)
        raise BundleError(
            f"{path / SPEC_FILE}: schema version {spec.get('schema_version')!r}, this edgecast reads {readable}"
        )
    for key in ("target", "features", "look_back", "horizon", "scaler"):
        if key not in spec:
            raise BundleError(f"{path / SPEC_FILE}: missing key '{key}'")
    _check_spec(path / SPEC_FILE, spec)
    metrics, training = _read_object(path / METRICS_FILE), _read_object(path / TRAINING_FILE)
    data = training.get("data")
    if not isinstance(data, dict) or not all(isinstance(data.get(key), str) for key in ("source", "sha256")):
        raise BundleError(f"{path / TRAINING_FILE}: missing the training data's 'source' and 'sha256' under 'data'")
    return Bundle(path, spec, metrics, training)


def _read_object(path: Path) -> dict:
    payload = read_json(path)
    if not isinstance(payload, dict):
        raise BundleError(f"{path}: expected a JSON object, got a JSON {type(payload).__name__}")
    return payload


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _is_numbers(value: object, length: int) -> bool:
    return (
        isinstance(value, list) and len(value) == length
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in value)
    )


def _check_spec(path: Path, spec: dict) -> None:
    """Types and lengths a reader relies on, so a damaged spec fails here and not deep in a converter."""
    features = spec["features"]
    if not isinstance(spec["target"], str) or not (
        isinstance(features, list) and features and all(isinstance(f, str) for f in features)
    ):
        raise BundleError(f"{path}: 'target' must be a column name and 'features' a non-empty list of names")
    for key in ("look_back", "horizon"):
        if not _is_count(spec[key]):
            raise BundleError(f"{path}: '{key}' must be a whole number of at least 1, got {spec[key]!r}")
    encoded = spec.get("encoded_features")
    columns = len(encoded) if isinstance(encoded, list) else len(features)
    scaler = spec["scaler"]
    if not isinstance(scaler, dict):
        raise BundleError(f"{path}: 'scaler' must be an object, got {scaler!r}")
    for key, length in (("data_min", columns), ("data_max", columns), ("feature_range", 2)):
        if not _is_numbers(scaler.get(key), length):
            raise BundleError(
                f"{path}: 'scaler.{key}' must be a list of {length} finite numbers, got {scaler.get(key)!r}"
            )
