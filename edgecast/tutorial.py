"""The embedded default data: the tutorial's 25-value PM2.5 series and its settings."""
from __future__ import annotations

import hashlib
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgecast.trainer.data import Series
    from edgecast.trainer.settings import TrainConfig

SERIES_NAME = "pm25"
SERIES_FILE = "data/tutorial_series.txt"
DEMO_NAME = "demo"  # the bundle `edgecast demo` writes
DEMO_WINDOW = [70.0, 72.0, 75.0, 80.0]
TUTORIAL_FORECAST = 78.97  # what the original tutorial script printed for DEMO_WINDOW


def series_bytes() -> bytes:
    return resources.files("edgecast").joinpath(SERIES_FILE).read_bytes()


def series_values() -> list[float]:
    return [float(token) for token in series_bytes().split()]


def series_sha256() -> str:
    return hashlib.sha256(series_bytes()).hexdigest()


def series() -> Series:
    """The series as the trainer's Series (one feature, no timestamps)."""
    from edgecast.trainer.data import series_from_values

    return series_from_values(series_values(), SERIES_NAME, f"edgecast/{SERIES_FILE}", series_sha256())


def config(seed: int) -> TrainConfig:
    """The tutorial's own model and training, whatever the trainer's defaults are."""
    from edgecast.trainer.settings import TrainConfig

    return TrainConfig(
        look_back=4, horizon=1, units=4, epochs=200, batch_size=1, patience=50, learning_rate=0.01, seed=seed,
        max_gap=0, layers=1, dropout=0.0, formulation="level", linear_skip=False, standardise=False,
    )
