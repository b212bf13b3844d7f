"""Typed test-split metrics and backtests, as evaluation hands them to the API and the CLI.

`to_dict()` gives the JSON form of metrics.json and `edgecast evaluate --json` (the
same keys as always); `from_dict()` reads it back.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .settings import METHODS


@dataclass(frozen=True)
class Scores:
    """RMSE and MAE per horizon step, in raw target units."""

    rmse: list[float]
    mae: list[float]


@dataclass(frozen=True)
class Metrics:
    """Every method's scores on the same windows of one split; `methods` in METHODS order
    (seasonal persistence only where the sampling interval divides a day)."""

    split: str
    windows: int
    windows_dropped: int
    horizon_steps: list[int]
    step_hours: list[float] | None
    units: str
    methods: dict[str, Scores]

    def to_dict(self) -> dict[str, Any]:
        head = {"split": self.split, "windows": self.windows, "windows_dropped": self.windows_dropped,
                "horizon_steps": self.horizon_steps, "step_hours": self.step_hours, "units": self.units}
        return {**head, **{method: {"rmse": s.rmse, "mae": s.mae} for method, s in self.methods.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Metrics:
        methods = {m: Scores(list(data[m]["rmse"]), list(data[m]["mae"])) for m in METHODS if m in data}
        return cls(data.get("split", "test"), data["windows"], data.get("windows_dropped", 0), list(data["horizon_steps"]),
                   data.get("step_hours"), data["units"], methods)


@dataclass(frozen=True)
class BacktestFold:
    first_target_row: int  # the fold's forecast origin: its first target row
    metrics: Metrics


@dataclass(frozen=True)
class Backtest:
    """Consecutive blocks of the test split, each a forecast origin, and the mean over them."""

    folds: int
    ridge: str  # how the ridge baseline was fitted for each origin
    results: list[BacktestFold]
    mean: dict[str, Scores]

    def to_dict(self) -> dict[str, Any]:
        return {
            "folds": self.folds,
            "ridge": self.ridge,
            "results": [{"first_target_row": fold.first_target_row, **fold.metrics.to_dict()} for fold in self.results],
            "mean": {method: {"rmse": s.rmse, "mae": s.mae} for method, s in self.mean.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Backtest:
        results = [BacktestFold(fold["first_target_row"], Metrics.from_dict(fold)) for fold in data["results"]]
        mean = {method: Scores(s["rmse"], s["mae"]) for method, s in data["mean"].items()}
        return cls(data["folds"], data["ridge"], results, mean)


@dataclass(frozen=True)
class DataRecord:
    """The CSV an evaluation read, and whether it is the one the model was trained on."""

    source: str
    sha256: str
    same_as_training: bool


@dataclass(frozen=True)
class Evaluation:
    """A bundle scored on a CSV's test split: metrics, optional backtest, and what a plot
    needs (the test windows' target rows and values, the model's forecasts, row times)."""

    data: DataRecord
    metrics: Metrics
    backtest: Backtest | None
    test_end: np.ndarray  # row of each test window's last target, [n]
    test_y: np.ndarray  # actual values, [n, horizon]
    model_forecast: np.ndarray  # [n, horizon], raw units
    times: list | None  # the timestamp of every row; None without timestamps
    intervals: dict | None = None  # a schema-4 model's: {method: interval_metrics}, persistence and ridge beside it
    model_quantiles: np.ndarray | None = None  # a schema-4 model's, [n, horizon, levels], raw units
    test_history: np.ndarray | None = None  # the target's readings in each test window, [n, look_back]

    def to_dict(self, plot: Path | None = None) -> dict[str, Any]:
        """The `edgecast evaluate --json` form."""
        report: dict[str, Any] = {"data": {"source": self.data.source, "sha256": self.data.sha256,
                                           "same_as_training": self.data.same_as_training},
                                  "metrics": self.metrics.to_dict()}
        if self.backtest is not None:
            report["backtest"] = self.backtest.to_dict()
        if self.intervals is not None:
            report["intervals"] = self.intervals
        if plot is not None:
            report["plot"] = str(plot)
        return report
