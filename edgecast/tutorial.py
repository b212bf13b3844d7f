"""The embedded default data: the tutorial's 25-value PM2.5 series and its settings."""
from __future__ import annotations

import hashlib
from importlib import resources

SERIES_NAME = "pm25"
DEMO_WINDOW = [70.0, 72.0, 75.0, 80.0]
TUTORIAL_FORECAST = 78.97  # what the original tutorial script printed for DEMO_WINDOW


def series_bytes() -> bytes:
    return resources.files("edgecast").joinpath("data/tutorial_series.txt").read_bytes()


def series_values() -> list[float]:
    return [float(token) for token in series_bytes().split()]


def series_sha256() -> str:
    return hashlib.sha256(series_bytes()).hexdigest()
