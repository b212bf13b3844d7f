"""The work of scripts/global_results.py, one task per process call: a station's local
model, the global model over every station, or one leave-one-station-out round.

Each task returns plain numbers (RMSE per lead on the station's own test windows), so the
tasks run in spawned worker processes with one TensorFlow thread each. The stations are
read once per process and kept (`members`).
"""
from __future__ import annotations

import gc
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from edgecast.trainer.data import Series
    from edgecast.trainer.global_model import GlobalNetwork, Member
    from edgecast.trainer.newcomer import Fleet
    from edgecast.trainer.settings import TrainConfig
    from edgecast.trainer.windows import SplitData

THREAD_ENV = {"OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
              "ORT_DISABLE_TELEMETRY": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
TARGET = "PM2.5"
FEATURES = ("TEMP", "PRES", "DEWP", "RAIN", "WSPM", "wd", "hour_of_day", "day_of_week")
CLOCK = "+08:00"  # the UCI Beijing timestamps are local time
FILE_PATTERN = "PRSA_Data_*_20130301-20170228.csv*"
HISTORY_DAYS = (7, 30, 365)  # a held-out station's own history before its test split (0: none)
VALIDATION_SHARE = 0.2  # of that history, the most recent part: fine-tuning's early stopping

_MEMBERS: dict[tuple, dict] = {}


def single_threaded() -> None:
    """Worker initializer: one thread each, set before TensorFlow loads."""
    os.environ.update(THREAD_ENV)


def station_files(data_dir: Path) -> dict[str, Path]:
    """Station id (the file's station name, lower-cased) -> file, in name order."""
    found = {path.name.split("_")[2].lower(): path for path in sorted(Path(data_dir).glob(FILE_PATTERN))}
    return dict(sorted(found.items()))


def train_config(epochs: int | None) -> TrainConfig:
    from edgecast.trainer.settings import TrainConfig

    return TrainConfig(horizon=24) if epochs is None else TrainConfig(horizon=24, epochs=epochs)


def members(settings: dict) -> dict:
    """Station id -> Member (series, split, scaler, spec), read once per process."""
    key = (settings["data_dir"], tuple(settings["stations"]), settings["epochs"])
    if key not in _MEMBERS:
        from edgecast.trainer.data import ReadOptions, load_csv
        from edgecast.trainer.global_model import member

        config = train_config(settings["epochs"])
        files = station_files(Path(settings["data_dir"]))
        _MEMBERS.clear()
        _MEMBERS[key] = {
            station: member(station, load_csv([files[station]], TARGET, list(FEATURES), max_gap=config.max_gap,
                                              options=ReadOptions(clock=CLOCK)), config)
            for station in settings["stations"]}
    return _MEMBERS[key]


def rmse_by_lead(forecast: np.ndarray, truth: np.ndarray) -> list[float]:
    error = np.asarray(forecast, np.float64) - np.asarray(truth, np.float64)
    return [round(float(v), 4) for v in np.sqrt(np.mean(error ** 2, axis=0))]


def _done() -> None:
    import keras

    keras.backend.clear_session()
    gc.collect()


def run(task: tuple[str, str | None], settings: dict) -> dict:
    """("local", station), ("global", None) or ("loso", station)."""
    kind, station = task
    started = time.perf_counter()
    try:
        if kind == "local":
            result = local(station, settings)
        elif kind == "global":
            result = global_all(settings)
        else:
            result = leave_one_out(station, settings)
    finally:
        _done()
    return {"task": kind, "station": station, **result, "task_wall_seconds": round(time.perf_counter() - started, 1)}


def local(station: str, settings: dict) -> dict:
    """The station's own model, trained as `edgecast train` trains it, scored on its test windows."""
    from edgecast.trainer.baselines import persistence
    from edgecast.trainer.bundle import read_bundle
    from edgecast.trainer.forecast import predict_raw
    from edgecast.trainer.pipeline import train

    one = members(settings)[station]
    config = train_config(settings["epochs"])
    test = one.data.test
    with tempfile.TemporaryDirectory(prefix="global-results-") as folder:
        started = time.perf_counter()
        result = train(one.series, config, Path(folder) / station, data=one.data)
        wall = time.perf_counter() - started
        net = read_bundle(Path(folder) / station).load_model()
        forecast = predict_raw(net, one.spec, test.x, one.data.scaler)
    return {"rmse": rmse_by_lead(forecast, test.y), "persistence": rmse_by_lead(persistence(test.x, config.horizon), test.y),
            "test_windows": len(test), "train_windows": len(one.data.train), "wall_seconds": round(wall, 1),
            "train_seconds": result.training["train_seconds"], "epochs_run": result.training["history"]["epochs_run"]}


def _train_network(chosen: list[Member], config: TrainConfig, fleet_dir: Path,
                   fleet: str) -> tuple[GlobalNetwork, Fleet, dict]:
    """train_global on `chosen`, its FLEET/.global written and read back as `edgecast train --from` reads it."""
    from edgecast.trainer.global_model import GLOBAL_FOLDER, train_global, write_global
    from edgecast.trainer.newcomer import read_fleet

    started = time.perf_counter()
    network = train_global(chosen, config)
    wall = time.perf_counter() - started
    write_global(network, chosen, fleet_dir / GLOBAL_FOLDER, fleet, {"script": "scripts/global_results.py"})
    record = {"stations": [m.station for m in chosen], "wall_seconds": round(wall, 1),
              "train_seconds": round(network.seconds, 1), "epochs_run": network.history["epochs_run"],
              "best_epoch": network.history["best_epoch"],
              "train_windows": int(sum(len(m.data.train) for m in chosen))}
    return network, read_fleet(fleet_dir), record


def _unknown_forecast(fleet: Fleet, x: np.ndarray) -> np.ndarray:
    from edgecast.trainer.forecast import predict_raw

    return predict_raw(fleet.unknown.load_model(), fleet.unknown.spec, x, fleet.unknown.scaler())


def global_all(settings: dict) -> dict:
    """One network on every station; each station forecast under its own identity (and, for
    reference, under the unknown one, with the network's scaling)."""
    from edgecast.trainer.forecast import predict_raw

    everyone = members(settings)
    config = train_config(settings["epochs"])
    with tempfile.TemporaryDirectory(prefix="global-results-") as folder:
        network, fleet, record = _train_network(list(everyone.values()), config, Path(folder), "all stations")
        rmse, unknown = {}, {}
        for station, one in everyone.items():
            forecast = predict_raw(network.for_station(station), one.spec, one.data.test.x, one.data.scaler)
            rmse[station] = rmse_by_lead(forecast, one.data.test.y)
            unknown[station] = rmse_by_lead(_unknown_forecast(fleet, one.data.test.x), one.data.test.y)
    return {**record, "rmse": rmse, "unknown_identity_rmse": unknown}


def history_split(one: Member, days: int, config: TrainConfig) -> tuple[Series, SplitData]:
    """(series, SplitData) of `days` of the station's own rows just before its first test row:
    training windows on the first 80 %, validation windows on the last 20 % (by each window's
    last target row), every window wholly inside the history; test windows = the station's own."""
    from edgecast.trainer.features import encode, masked_indices
    from edgecast.trainer.windows import SplitData, fit_scaler, make_windows

    first_test = one.data.boundaries[1]
    rows = int(round(days * 86400 / (one.series.interval_seconds or 3600)))
    series = replace(one.series, frame=one.series.frame.iloc[first_test - rows:])
    values = series.values()
    first_val = int(round(rows * (1 - VALIDATION_SHARE)))
    windows = make_windows(values, config.look_back, config.horizon, masked_indices(series.encodings))
    train = windows.take(windows.end < first_val)
    val = windows.take((windows.end >= first_val) & (windows.end < rows))
    scaler = fit_scaler(encode(values[:first_val], series.encodings), f"{one.station}: {days} days")
    return series, SplitData(train, val, one.data.test, (first_val, rows), scaler)


def leave_one_out(station: str, settings: dict) -> dict:
    """A global model on every other station, then `station` forecast from 0, 7, 30 and 365
    days of its own history (the unknown identity; fine-tuned from it)."""
    from edgecast.trainer.forecast import predict_raw
    from edgecast.trainer.newcomer import MIN_FINE_TUNE_WINDOWS, fine_tune

    everyone = members(settings)
    config = train_config(settings["epochs"])
    one = everyone[station]
    others = [m for name, m in everyone.items() if name != station]
    test = one.data.test
    with tempfile.TemporaryDirectory(prefix="global-results-") as folder:
        _, fleet, record = _train_network(others, config, Path(folder), f"all but {station}")
        unknown = _unknown_forecast(fleet, test.x)
        runs = {"0": {"rmse": rmse_by_lead(unknown, test.y), "scaling": "the network's", "fine_tuned": False,
                      "kept_global": True, "history_rows": 0}}
        for days in HISTORY_DAYS:
            series, data = history_split(one, days, config)
            run = {"history_rows": data.boundaries[1], "train_windows": len(data.train), "val_windows": len(data.val)}
            if len(data.train) < MIN_FINE_TUNE_WINDOWS or len(data.val) == 0:
                runs[str(days)] = {**runs["0"], **run, "note": "too few windows: the unknown identity as it is"}
                continue
            started = time.perf_counter()
            tuned = fine_tune(fleet, series, data)
            wall = time.perf_counter() - started
            forecast = predict_raw(tuned.net, tuned.spec, test.x, tuned.data.scaler)
            runs[str(days)] = {**run, "rmse": rmse_by_lead(forecast, test.y), "scaling": tuned.scaling,
                               "fine_tuned": True, "kept_global": tuned.kept_global, "epochs_run": tuned.epochs,
                               "global_val_loss": round(tuned.history["global_val_loss"], 6),
                               "best_val_loss": round(tuned.history["best_val_loss"], 6),
                               "wall_seconds": round(wall, 1)}
            del tuned
            gc.collect()
    return {"global": record, "history": runs, "test_windows": len(test)}
