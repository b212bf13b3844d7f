"""Shared fixtures for the toolkit tests: tiny synthetic data, one trained bundle, the CLI."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
CHANGPING = SHARED_DATA / "PRSA_Data_Changping_20130301-20170228.csv"
EDGECAST = Path(sys.executable).parent / "edgecast"


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the installed `edgecast` console script the way a user does (`env`: more variables)."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **(env or {})}
    return subprocess.run(
        [str(EDGECAST), *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env
    )


def hourly_frame(hours: int = 240, seed: int = 0) -> pd.DataFrame:
    """A daily-cycle PM2.5-like series with temperature, in the UCI year/month/day/hour layout."""
    rng = np.random.default_rng(seed)
    time = pd.date_range("2024-01-01", periods=hours, freq="h")
    daily = np.sin(2 * np.pi * np.arange(hours) / 24)
    pm = 60 + 25 * daily + rng.normal(0, 3, hours)
    temp = 5 + 8 * np.sin(2 * np.pi * (np.arange(hours) - 6) / 24) + rng.normal(0, 0.5, hours)
    return pd.DataFrame(
        {"year": time.year, "month": time.month, "day": time.day, "hour": time.hour, "PM2.5": pm.round(1), "TEMP": temp.round(2)}
    )


def hourly_pm25(hours: int, seed: int, level: float = 60.0, daily: float = 25.0, weekly: float = 15.0,
                noise: float = 6.0, memory: float = 0.8) -> np.ndarray:
    """Hourly PM2.5: a daily and a weekly cycle and AR(1) noise, kept positive (at least 1)."""
    rng = np.random.default_rng(seed)
    steps = np.arange(hours)
    wander, shocks = np.zeros(hours), rng.normal(0, noise, hours)
    for index in range(1, hours):
        wander[index] = memory * wander[index - 1] + shocks[index]
    cycles = level + daily * np.sin(2 * np.pi * steps / 24) + weekly * np.sin(2 * np.pi * steps / 168)
    return np.maximum(cycles + wander, 1.0).round(1)


@pytest.fixture
def tiny_csv(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.csv"
    hourly_frame().to_csv(path, index=False)
    return path


def train_and_export(folder: Path, hours: int, seed: int, epochs: int, **export_options: object) -> Path:
    """A small two-feature, two-step model trained on `hours` of hourly_frame and exported
    (`export_options`: quantize, builtin_ops, ...). Shared by the session and module fixtures."""
    from edgecast.exporter.pipeline import export_bundle
    from edgecast.trainer.data import load_csv
    from edgecast.trainer.pipeline import TrainConfig, train

    csv = folder / "hourly.csv"
    hourly_frame(hours=hours).to_csv(csv, index=False)
    series = load_csv(csv, "PM2.5", ["TEMP"])
    config = TrainConfig(look_back=6, horizon=2, units=8, epochs=epochs, batch_size=16, seed=seed)
    result = train(series, config, folder / "hourly")
    export_bundle(result.path, progress=lambda _: None, **export_options)
    return result.path


@pytest.fixture(scope="session")
def trained_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Trained and exported once for the session."""
    return train_and_export(tmp_path_factory.mktemp("bundles"), hours=300, seed=1, epochs=3)


def train_global_and_export(folder: Path, hours: int, epochs: int, **export_options: object) -> Path:
    """The first station's bundle of a global model over three hourly_frame stations at
    different levels, with train_and_export's settings, exported the same way."""
    from edgecast.exporter.pipeline import export_bundle
    from edgecast.trainer.data import load_csv
    from edgecast.trainer.global_model import GLOBAL_FOLDER, member, train_global, write_global, write_station
    from edgecast.trainer.pipeline import TrainConfig

    config = TrainConfig(look_back=6, horizon=2, units=8, epochs=epochs, batch_size=16, seed=1)
    members = []
    for seed, (name, gain) in enumerate({"hourly": 1.0, "busy": 1.8, "clean": 0.5}.items()):
        frame = hourly_frame(hours=hours, seed=seed)
        frame["PM2.5"] = (frame["PM2.5"] * gain).round(1)
        frame.to_csv(folder / f"{name}.csv", index=False)
        members.append(member(name, load_csv(folder / f"{name}.csv", "PM2.5", ["TEMP"]), config))
    network = train_global(members, config)
    write_global(network, members, folder / "fleet" / GLOBAL_FOLDER, "fleet")
    bundle = write_station(network, members[0], folder / "fleet" / "hourly", "fleet").path
    export_bundle(bundle, progress=lambda _: None, **export_options)
    return bundle


@pytest.fixture(scope="session")
def global_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A station's bundle of a global model, trained and exported once for the session."""
    return train_global_and_export(tmp_path_factory.mktemp("global_bundles"), hours=300, epochs=3)


@pytest.fixture
def shared_changping() -> Path:
    if not CHANGPING.is_file():
        pytest.skip(f"real data not available: {CHANGPING} is absent (it lives in ../shared/data beside the repo)")
    return CHANGPING
