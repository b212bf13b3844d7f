"""Training settings and their defaults, importable without TensorFlow or scikit-learn
(the CLI builds its option defaults from DEFAULTS, so there is one source of truth)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import DataError

LEVEL, CHANGE = "level", "change_from_last"  # what the network's outputs mean (trainer/windows.py)
MODELS_DIR = Path("models")  # where bundles live, relative to the working folder
# The forecasts every evaluation scores, in table order (trainer/evaluation.py).
# model_neighbours_missing: the same model with every neighbour's reading missing;
# model_unclipped: the model without its lower clip (both only where they apply).
METHODS = ("model", "model_neighbours_missing", "model_unclipped", "persistence", "seasonal_persistence", "ridge")
# The tables and reports people read: the unclipped model stays in metrics.json only.
SHOWN_METHODS = tuple(method for method in METHODS if method != "model_unclipped")


@dataclass
class TrainConfig:
    """Defaults chosen on the Beijing stations (results/forecast_quality.md); the demo
    passes the tutorial's own small settings explicitly."""

    look_back: int = 24
    horizon: int = 1
    units: int = 64
    epochs: int = 40
    batch_size: int = 128
    patience: int = 6
    learning_rate: float = 1e-3
    seed: int = 0
    max_gap: int = 6
    split: tuple[float, float, float] = field(default=(0.7, 0.15, 0.15))
    layers: int = 1
    dropout: float = 0.5
    formulation: str = CHANGE
    linear_skip: bool = True  # LSTM correction on top of a ridge-initialised linear map (trainer/model.py)
    freeze_linear: bool = True  # the linear map keeps its ridge weights: the LSTM learns the ridge residual
    standardise: bool = True  # the LSTM reads its inputs standardised on the training split (a fixed layer)
    quadratic_skip: bool = True  # the linear map also reads pairwise products of a window summary (trainer/model.py)
    # The frozen map is ridge with a fixed alpha, so nothing about it is chosen on the
    # validation split: it is fitted on training and validation windows (the test split
    # stays unseen); the LSTM correction still early-stops on validation.
    linear_fit_with_val: bool = True
    target_units: str | None = None
    # Forecasts below this are clipped in the graph. None: 0 when the training split has no
    # negative target (a concentration), else no clip; clip_target False: never.
    target_min: float | None = None
    clip_target: bool = True
    neighbour_masking: bool = True  # silence neighbours at random in training (trainer/neighbours.py)
    # With neighbours, also train the same network on the station's own inputs, and let the
    # graph use it when no neighbour's reading is in the window (trainer/model.py with_fallback).
    neighbour_fallback: bool = True
    # Schema 4 (trainer/intervals.py): a central interval of this coverage, these quantile
    # levels and these exceedance probabilities ("PM2.5>75"), conformalized on validation.
    interval: float | None = None
    quantiles: tuple[float, ...] = ()
    alerts: tuple[str, ...] = ()

    def check(self) -> None:
        for name in ("look_back", "horizon", "units", "epochs", "batch_size", "layers"):
            if getattr(self, name) < 1:
                raise DataError(f"{name} must be at least 1, got {getattr(self, name)}", settings=(name,))
        for name in ("max_gap", "patience"):
            if getattr(self, name) < 0:
                raise DataError(f"{name} must be 0 or more, got {getattr(self, name)}", settings=(name,))
        if not 0 < self.learning_rate < float("inf"):  # 0 never moves, a negative rate climbs the loss
            raise DataError(f"learning_rate must be a positive number, got {self.learning_rate}",
                            settings=("learning_rate",))
        if not 0 <= self.dropout < 1:
            raise DataError(f"dropout must be in [0, 1), got {self.dropout}", settings=("dropout",))
        if self.formulation not in (LEVEL, CHANGE):
            raise DataError(f"formulation must be {LEVEL} or {CHANGE}, got {self.formulation!r}", settings=("formulation",))


DEFAULTS = TrainConfig()


def split_text(fractions: tuple[float, float, float]) -> str:
    """`(0.7, 0.15, 0.15)` as the command line writes it: `0.7,0.15,0.15`."""
    return ",".join(f"{fraction:g}" for fraction in fractions)
