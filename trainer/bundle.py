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
from types import MappingProxyType
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
    TRAINING_FILE,
    WINDOWS_FILE,
)
from edgecast_runtime.durable import replace_folder
from edgecast_runtime.spec import (
    LEVEL,
    Encoding,
    Formulation,
    GapPolicy,
    Neighbour,
    Scaler,
    Spec,
    SpecError,
    SpecTimeFormat,
    TensorInfo,
    ValidRange,
)

from . import features as feature_encodings
from .errors import BundleError
from .intervals import Calibration, write_calibration

if TYPE_CHECKING:
    from collections.abc import Sequence

    import keras
    from sklearn.preprocessing import MinMaxScaler

    from edgecast_runtime.clock import TimeFormat

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
    encodings: Sequence[Encoding] | None = None,
    formulation: Formulation | None = None,
    target_units: str | None = None,
    clock: str | None = None,
    valid_ranges: dict | None = None,
    time_format: TimeFormat | None = None,
    target_min: float | None = None,
) -> Spec:
    """The preprocessing spec of the graph contract, from a MinMaxScaler fitted on the encoded columns."""
    encodings = tuple(encodings or [feature_encodings.numeric(name) for name in features])
    schema = SCHEMA_VERSION if feature_encodings.needs_hub_knowledge(encodings) else PLAIN_SCHEMA_VERSION
    neighbours: dict[str, list[str]] = {}
    for encoding in encodings:
        if encoding.kind == MASKED:
            neighbours.setdefault(encoding.station, []).append(encoding.reading)
    return Spec(
        schema_version=NEIGHBOUR_SCHEMA_VERSION if neighbours else schema,
        target=target,
        features=tuple(features),
        look_back=int(look_back),
        horizon=int(horizon),
        interval_seconds=interval_seconds,
        time_columns=tuple(time_columns),
        scaler=Scaler(
            "minmax", tuple(float(v) for v in scaler.feature_range), tuple(float(v) for v in scaler.data_min_),
            tuple(float(v) for v in scaler.data_max_),
        ),
        gap_policy=GapPolicy(int(max_gap), "linear", tuple(e.feature for e in encodings if e.kind == DIRECTION)),
        input=TensorInfo(INPUT_NAME, "float32", ("batch", int(look_back), len(features)), "raw"),
        output=TensorInfo(OUTPUT_NAME, "float32", ("batch", int(horizon)), "raw"),
        encodings=encodings,
        encoded_features=tuple(feature_encodings.encoded_columns(encodings)),
        target_formulation=formulation or Formulation(LEVEL),
        target_units=target_units,
        clock=clock,  # of the training timestamps; the runtime reads hub times in it
        # Optional keys, absent when they say nothing: the range of each feature's valid
        # readings ({name: [min or null, max or null]}; the hub treats others as missing)
        # and how the training file wrote its times (edgecast_runtime.clock.TimeFormat).
        valid_ranges=MappingProxyType({name: ValidRange(*bounds) for name, bounds in valid_ranges.items()})
        if valid_ranges else None,
        time_format=SpecTimeFormat.recording(time_format),
        # The lowest forecast the graph gives (a concentration is never negative), and the
        # neighbouring stations whose readings the model reads ({station: [readings]}).
        target_min=None if target_min is None else float(target_min),
        neighbours=tuple(Neighbour(station, tuple(readings)) for station, readings in neighbours.items()) or None,
    )


def write_bundle(out_dir: Path, model: keras.Model, spec: Spec, metrics: dict, training: dict, windows: dict,
                 calibration: Calibration | None = None) -> Path:
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
        write_json_atomic(staging / SPEC_FILE, spec.to_dict())
        write_json_atomic(staging / METRICS_FILE, metrics)
        write_json_atomic(staging / TRAINING_FILE, training)
        np.savez_compressed(staging / WINDOWS_FILE, **windows)
        if calibration is not None:  # schema 4: the graph's quantile and exceedance constants
            write_calibration(staging, calibration)
        replace_folder(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


@dataclass
class Bundle:
    path: Path
    spec: Spec
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


def scaler_from_spec(spec: Spec) -> MinMaxScaler:
    """Rebuild the fitted MinMaxScaler from the spec: fitting on [min, max] gives the same state."""
    from sklearn.preprocessing import MinMaxScaler

    bounds = np.array([spec.scaler.data_min, spec.scaler.data_max], dtype=np.float64)
    return MinMaxScaler(feature_range=tuple(spec.scaler.feature_range)).fit(bounds)


def read_bundle(path: str | Path) -> Bundle:
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: not a folder (expected a model bundle such as models/NAME)")
    missing = [name for name in TRAINER_FILES if not (path / name).is_file()]
    if missing:
        raise BundleError(f"{path}: not an edgecast bundle, missing {', '.join(missing)}")
    spec = read_spec_file(path / SPEC_FILE)
    metrics, training = _read_object(path / METRICS_FILE), _read_object(path / TRAINING_FILE)
    data = training.get("data")
    if not isinstance(data, dict) or not all(isinstance(data.get(key), str) for key in ("source", "sha256")):
        raise BundleError(f"{path / TRAINING_FILE}: missing the training data's 'source' and 'sha256' under 'data'")
    return Bundle(path, spec, metrics, training)


def read_spec_file(path: Path) -> Spec:
    """A bundle's preprocessing.json, checked as the runtime checks a model's spec and
    for what the toolkit needs besides (a schema version it reads, the scaler)."""
    try:
        return Spec.from_dict(_read_object(path))
    except SpecError as exc:
        raise BundleError(f"{path}: {exc}") from None


def _read_object(path: Path) -> dict:
    payload = read_json(path)
    if not isinstance(payload, dict):
        raise BundleError(f"{path}: expected a JSON object, got a JSON {type(payload).__name__}")
    return payload
