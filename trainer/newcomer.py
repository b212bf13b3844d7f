"""A new station started from a fleet's global model (`edgecast train NEW.csv --from FLEET`,
`edgecast train --from FLEET --station NEW`).

With no usable history the station gets the global model under the unknown identity, with
the network's scaling (FLEET/.global/unknown/). With some, the unknown identity's model is
fine-tuned on the station's own training windows (few epochs, early stopping on its
validation windows, its most recent days before the held-out test split), and kept only
if that beats the global weights there. Its own scaling (and with it its own ridge map,
fitted as a local model's is) needs at least OWN_SCALING_DAYS of training rows: a scaler fitted on two days of readings would put the first episode far
outside the range the network was trained on; below that it keeps the network's.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgecast_runtime.contract import TRAINING_FILE
from edgecast_runtime.durable import replace_folder

from .bundle import TRAINER_FILES, Bundle, read_bundle, read_json
from .data import Series
from .errors import DataError
from .global_model import GLOBAL_FOLDER, GLOBAL_RECORD, UNKNOWN, UNKNOWN_BUNDLE
from .intervals import INTERVALS_FILE, MIN_CALIBRATION_WINDOWS, read_calibration
from .pipeline import TrainConfig, TrainResult, finish_bundle, network_pair, station_spec
from .settings import CHANGE
from .windows import SplitData, split_windows

if TYPE_CHECKING:
    import keras

OWN_SCALING_DAYS = 30
FINE_TUNE_EPOCHS = 10
FINE_TUNE_PATIENCE = 2
FINE_TUNE_RATE = 0.3  # of the fleet's learning rate: adjust the shared weights, do not relearn them
MIN_FINE_TUNE_WINDOWS = 4  # training windows; fewer and the station starts as the unknown one


@dataclass
class Fleet:
    """What `--from FLEET` reads: the global model's record and the unknown station's bundle."""

    folder: Path
    record: dict
    unknown: Bundle

    @property
    def config(self) -> TrainConfig:
        given = {f.name: self.record["config"][f.name] for f in fields(TrainConfig) if f.name in self.record["config"]}
        for name in ("split", "quantiles", "alerts"):
            given[name] = tuple(given.get(name, ()))
        return TrainConfig(**given)

    def origin(self, station: str, how: str, **more: object) -> dict:
        """training.json's "global" record of a station started from this fleet."""
        found = {key: self.record[key] for key in ("fleet", "trained", "stations", "identity_width") if key in self.record}
        return {"global": {**found, "from": str(self.folder), "identity": UNKNOWN, "station": station,
                           "started_as": how, **more}}


@dataclass
class Started:
    result: TrainResult | None  # None: the unknown bundle as it is (no training here)
    bundle: Path
    how: str  # one line: what was done and why


def read_fleet(path: str | Path) -> Fleet:
    folder = Path(path)
    record_path = folder / GLOBAL_FOLDER / GLOBAL_RECORD
    if not record_path.is_file():
        raise DataError(f"{folder}: no global model here ({GLOBAL_FOLDER}/{GLOBAL_RECORD} is missing); "
                        "train the fleet as one global model first")
    return Fleet(folder, read_json(record_path), read_bundle(folder / GLOBAL_FOLDER / UNKNOWN_BUNDLE))


def own_scaling_rows(interval_seconds: float | None) -> int:
    return int(OWN_SCALING_DAYS * 86400 / (interval_seconds or 3600))


def check_inputs(fleet: Fleet, series: Series) -> None:
    spec = fleet.unknown.spec
    if series.target != spec.target or list(series.features) != list(spec.features):
        raise DataError(f"{series.source}: the global model of {fleet.folder} reads {', '.join(spec.features)} "
                        f"(target {spec.target}); this file was read as {', '.join(series.features)}",
                        settings=("features",))


def start_station(fleet: Fleet, series: Series | None, station: str, out_dir: Path,
                  on_epoch: Callable[[int, dict], object] | None = None) -> Started:
    """The new station's bundle at `out_dir`, from its history (`series`) or from none."""
    if series is None:
        return _as_unknown(fleet, station, out_dir, "no history: the global model under the unknown identity, "
                           "with the network's scaling", rows=0)
    check_inputs(fleet, series)
    config = fleet.config
    try:
        data = split_windows(series.values(), config.look_back, config.horizon, config.split, series.source,
                             series.encodings)
    except DataError:
        data = None
    if data is None or len(data.train) < MIN_FINE_TUNE_WINDOWS:
        span = config.look_back + config.horizon
        return _as_unknown(fleet, station, out_dir, f"{len(series.frame)} rows are too few to fine-tune on (a "
                           f"window spans {span} steps, split {'/'.join(f'{f:g}' for f in config.split)}): "
                           "the global model under the unknown identity, with the network's scaling",
                           rows=len(series.frame), data={"source": series.source, "sha256": series.sha256})
    tuned = fine_tune(fleet, series, data, on_epoch)
    how = (f"fine-tuned the global model on {len(data.train)} windows of its own ({tuned.epochs} epochs, early "
           f"stopping on its {len(data.val)} most recent before the test split), "
           + ("its own scaling and ridge map" if tuned.scaling == "own" else "the network's scaling")
           + ("; fine-tuning did not beat the global weights there, so they are kept" if tuned.kept_global else ""))
    calibration = None
    if tuned.spec.probabilistic is not None and len(data.val) < MIN_CALIBRATION_WINDOWS:
        calibration = read_calibration(fleet.unknown.path)  # too few of its own: the network's residuals
        how += f"; its interval is the network's ({len(data.val)} validation windows are too few to calibrate on)"
    origin = fleet.origin(station, how, rows=len(series.frame), scaling=tuned.scaling, kept_global=tuned.kept_global)
    result = finish_bundle(tuned.net, series, fleet.config, tuned.data, tuned.spec, tuned.history, tuned.seconds,
                           out_dir, origin, calibration)
    return Started(result, Path(out_dir), how)


@dataclass
class Tuned:
    net: keras.Model
    spec: object
    data: SplitData
    history: dict
    seconds: float
    scaling: str  # "own" or "the network's"
    kept_global: bool

    @property
    def epochs(self) -> int:
        return int(self.history["epochs_run"])


def fine_tune(fleet: Fleet, series: Series, data: SplitData,
              on_epoch: Callable[[int, dict], object] | None = None) -> Tuned:
    """The unknown identity's model fitted further on `data.train`, early-stopped on `data.val`."""
    from . import model as keras_model

    config = fleet.config
    if len(data.train) == 0 or len(data.val) == 0:
        raise DataError(f"{series.source}: fine-tuning needs training and validation windows, got "
                        f"{len(data.train)} and {len(data.val)}")
    started = time.perf_counter()
    own = data.boundaries[0] >= own_scaling_rows(series.interval_seconds)
    if not own:
        data = replace(data, scaler=fleet.unknown.scaler())
    spec = station_spec(series, config, data)
    if not own and config.formulation == CHANGE:
        spec = replace(spec, target_formulation=fleet.unknown.spec.target_formulation)
    keras_model.seed_everything(config.seed)
    net = fleet.unknown.load_model()
    if own and config.linear_skip:  # its own scaling, so its own ridge map, fitted as a local model's is
        splits = (data.train, data.val) if config.linear_fit_with_val else (data.train,)
        pairs = [network_pair(windows, data.scaler, spec) for windows in splits]
        keras_model.start_from_linear(net, np.concatenate([x for x, _ in pairs]), np.concatenate([y for _, y in pairs]))
    net.compile(optimizer=keras_model.keras.optimizers.Adam(config.learning_rate * FINE_TUNE_RATE), loss="mse")
    train_pair, val_pair = network_pair(data.train, data.scaler, spec), network_pair(data.val, data.scaler, spec)
    start_weights = net.get_weights()
    start_loss = float(net.evaluate(*val_pair, batch_size=config.batch_size, verbose=0))
    history = keras_model.fit(net, train_pair, val_pair, FINE_TUNE_EPOCHS, config.batch_size, FINE_TUNE_PATIENCE,
                              on_epoch)
    kept_global = history["best_val_loss"] >= start_loss
    if kept_global:
        net.set_weights(start_weights)
    history["global_val_loss"] = start_loss
    return Tuned(net, spec, data, history, time.perf_counter() - started, "own" if own else "the network's",
                 kept_global)


def _as_unknown(fleet: Fleet, station: str, out_dir: Path, how: str, rows: int, data: dict | None = None) -> Started:
    """The unknown station's bundle copied whole, its training.json saying whose it now is."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        for name in (*TRAINER_FILES, INTERVALS_FILE):  # not its exports: they are made for the new station
            if (fleet.unknown.path / name).is_file():
                shutil.copy2(fleet.unknown.path / name, staging / name)
        training = json.loads((staging / TRAINING_FILE).read_text())
        training.update(fleet.origin(station, how, rows=rows, scaling="the network's", kept_global=True))
        if data is not None:
            training["global"]["station_data"] = data
        (staging / TRAINING_FILE).write_text(json.dumps(training, indent=2, ensure_ascii=False) + "\n")
        replace_folder(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Started(None, out_dir, how)
