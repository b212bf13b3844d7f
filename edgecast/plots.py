"""Pictures of a model's test-split forecasts: forecast against actual, error by horizon
step, and for a schema-4 model its interval fan and the reliability of each alert probability.

Drawn with matplotlib's object API (no pyplot, no display), saved at an exact pixel size
in the format the file's suffix names (PNG, SVG, PDF) and written atomically.
"""
from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgecast.base import EdgecastError
from edgecast.trainer.reports import Metrics
from edgecast_runtime.durable import atomic_write

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

DPI = 100
DEFAULT_SIZE = (1200, 800)
STRETCH_STEPS = 168  # forecast-vs-actual stretch: a week of hourly steps
FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}  # suffix -> matplotlib format
LABELS = {
    "model": "LSTM model",
    "model_neighbours_missing": "LSTM model, every neighbour missing",
    "persistence": "persistence",
    "seasonal_persistence": "seasonal persistence (a day earlier)",
    "ridge": "ridge on the same lags",
}


@dataclass
class Stretch:
    """Consecutive target times of the test split, the actual values, and the model's
    forecast of each time made `lead` steps earlier, per lead."""

    times: list
    actual: np.ndarray
    forecasts: dict[int, np.ndarray]  # lead (steps) -> values aligned with `times`


def forecast_stretch(ends: np.ndarray, y: np.ndarray, predicted: np.ndarray, start: int, length: int,
                     time_of_row: Callable[[int], pd.Timestamp | int]) -> Stretch:
    """Target rows [r0, r0 + length) from the test window `start` on (cut at the split's end);
    NaN where a gap left no window."""
    if not 0 <= start < len(ends):
        raise ValueError(f"stretch start {start} is outside the test split's {len(ends)} windows")
    horizon = y.shape[1]
    origins = np.asarray(ends) - horizon  # row of each window's last input
    first_row = int(origins[start]) + 1
    length = min(length, int(np.max(ends)) - first_row + 1)  # no further than the last target
    rows = np.arange(first_row, first_row + length)
    actual = np.full(length, np.nan)
    leads = sorted({1, min(6, horizon), horizon})
    forecasts = {lead: np.full(length, np.nan) for lead in leads}
    for step in range(1, horizon + 1):
        position = origins + step - first_row
        inside = (position >= 0) & (position < length)
        actual[position[inside]] = y[inside, step - 1]
        if step in forecasts:
            forecasts[step][position[inside]] = predicted[inside, step - 1]
    return Stretch([time_of_row(int(r)) for r in rows], actual, forecasts)


@dataclass
class Fan:
    """One test window's forecast with its quantile bands, the target's readings before it
    and the truth after it."""

    history: np.ndarray  # the target's last readings in the window, oldest first
    truth: np.ndarray  # [horizon]
    forecast: np.ndarray  # [horizon]
    quantiles: np.ndarray  # [horizon, levels]
    levels: tuple[float, ...]
    origin: object  # the time (or row) of the window's last reading


@dataclass
class DistributionPanels:
    """A schema-4 model's pictures: the fan of its highest test episode and, per alert,
    the reliability bins per lead (trainer/intervals.py reliability_bins)."""

    fan: Fan | None
    reliability: dict[str, dict[str, dict]]  # alert -> lead ("1") -> bins


FAN_HISTORY = 12  # readings drawn before the fan's origin


def fan_at_peak(ends: np.ndarray, truth: np.ndarray, forecast: np.ndarray, quantiles: np.ndarray,
                history: np.ndarray, levels: tuple[float, ...],
                time_of_row: Callable[[int], pd.Timestamp | int]) -> Fan:
    """The test window whose truth peaks highest, the peak nearest mid-horizon (windows
    sharing the peak differ in where it falls): the worst episode the split holds, where
    an interval earns its width."""
    peaks = np.nanmax(truth, axis=1)
    candidates = np.flatnonzero(peaks == np.nanmax(peaks))
    where = np.nanargmax(truth[candidates], axis=1)
    index = int(candidates[np.argmin(np.abs(where - truth.shape[1] // 2))])
    origin_row = int(ends[index]) - truth.shape[1]
    return Fan(np.asarray(history[index, -FAN_HISTORY:], np.float64), np.asarray(truth[index], np.float64),
               np.asarray(forecast[index], np.float64), np.asarray(quantiles[index], np.float64), tuple(levels),
               time_of_row(origin_row))


def distribution_panels(model_scores: dict | None, fan: Fan | None) -> DistributionPanels | None:
    """The panels of a schema-4 model's scores (interval_metrics: its alerts' reliability)
    and fan; None for a model without them."""
    if model_scores is None:
        return None
    reliability = {name: found["reliability"] for name, found in model_scores.get("alerts", {}).items()
                   if "reliability" in found}  # metrics.json from before the bins were kept has none
    return DistributionPanels(fan, reliability) if fan is not None or reliability else None


def first_unbroken_start(ends: np.ndarray, length: int) -> int:
    """The first test window from which `length` consecutive windows exist (no gap), else 0."""
    ends = np.asarray(ends)
    if len(ends) < length:
        return 0
    unbroken = np.flatnonzero(ends[length - 1 :] - ends[: len(ends) - length + 1] == length - 1)
    return int(unbroken[0]) if len(unbroken) else 0


class PlotError(EdgecastError):
    """A plot cannot be written as asked (unknown file format, size out of range)."""


def plot_format(path: Path) -> str:
    """The image format the file name asks for; anything else is refused before any work."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise PlotError(f"{path}: cannot tell the image format from '{suffix or 'no suffix'}'; "
                        f"name the file .png, .svg or .pdf")
    return FORMATS[suffix]


def size_text(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"plot size '{text}' is not WIDTHxHEIGHT in pixels, e.g. 1200x800") from None
    if not (200 <= width <= 6000 and 200 <= height <= 6000):
        raise ValueError(f"plot size {width}x{height} is outside 200..6000 pixels per side")
    return width, height


def draw_evaluation(
    path: Path,
    metrics: Metrics,
    stretch: Stretch | None,
    target: str,
    title: str,
    size: tuple[int, int] = DEFAULT_SIZE,
    distribution: DistributionPanels | None = None,
) -> Path:
    """An image of exactly `size` pixels (at 100 dpi for SVG and PDF), in the format of the
    file's suffix: forecast vs actual (when a stretch is given) above RMSE by horizon step
    for the model and every baseline; with `distribution`, a row below them with the
    interval fan of the highest test episode and each alert's reliability diagram."""
    from matplotlib.figure import Figure

    image_format = plot_format(path)
    units = metrics.units or "raw units"
    figure = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout="constrained")
    bottom = _distribution_row(distribution)
    rows = (["stretch"] if stretch is not None else []) + ["error"]
    axes = figure.subplot_mosaic([[row] * max(len(bottom), 1) for row in rows] + ([bottom] if bottom else []))
    if stretch is not None:
        _draw_stretch(axes["stretch"], stretch, target, units, metrics.step_hours)
    _draw_error_by_step(axes["error"], metrics, target, units)
    if distribution is not None and distribution.fan is not None:
        _draw_fan(axes["fan"], distribution.fan, target, units, metrics.step_hours)
    for name, bins in (distribution.reliability if distribution is not None else {}).items():
        _draw_reliability(axes[f"reliability {name}"], name, bins, metrics.step_hours)
    figure.suptitle(title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format=image_format, dpi=DPI)
    atomic_write(Path(path), buffer.getvalue())
    return Path(path)


def _lead_label(lead: int, step_hours: list[float] | None) -> str:
    return f"{step_hours[lead - 1]:g} h ahead" if step_hours else f"{lead} step{'s' if lead > 1 else ''} ahead"


def _draw_stretch(ax: Axes, stretch: Stretch, target: str, units: str, step_hours: list[float] | None) -> None:
    ax.plot(stretch.times, stretch.actual, color="black", linewidth=1.6, label="actual")
    for lead, values in stretch.forecasts.items():
        ax.plot(stretch.times, values, linewidth=1.1, label=f"model, {_lead_label(lead, step_hours)}")
    ax.set_ylabel(f"{target} ({units})")
    ax.set_xlabel("time of the forecast value" if not isinstance(stretch.times[0], (int, np.integer)) else "row")
    ax.set_title("forecast against actual, test split")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    for label in ax.get_xticklabels():
        label.set_rotation(20)


def _distribution_row(distribution: DistributionPanels | None) -> list[str]:
    if distribution is None:
        return []
    return ["fan"] * (distribution.fan is not None) + [f"reliability {name}" for name in distribution.reliability]


def _draw_fan(ax: Axes, fan: Fan, target: str, units: str, step_hours: list[float] | None) -> None:
    """Nested central bands (widest palest), an odd level's middle quantile, the forecast, the
    truth, and the readings before."""
    leads = np.asarray(step_hours, np.float64) if step_hours else np.arange(1, len(fan.truth) + 1, dtype=np.float64)
    step = leads[0] if len(leads) else 1.0
    before = -step * np.arange(len(fan.history) - 1, -1, -1)
    levels = fan.levels
    for low in range(len(levels) // 2):
        high = len(levels) - 1 - low
        ax.fill_between(leads, fan.quantiles[:, low], fan.quantiles[:, high], color="tab:blue",
                        alpha=0.15 + 0.15 * low, linewidth=0, label=f"{levels[low]:g}–{levels[high]:g}")
    if len(levels) % 2:  # the middle level (a median, say) has no partner to make a band with
        middle = len(levels) // 2
        ax.plot(leads, fan.quantiles[:, middle], color="tab:blue", linestyle=":", linewidth=1.4,
                label=f"{levels[middle]:g} quantile")
    ax.plot(before, fan.history, color="black", linewidth=1.2, label="readings")
    ax.plot(leads, fan.truth, color="black", linestyle="--", linewidth=1.2, label="actual")
    ax.plot(leads, fan.forecast, color="tab:red", linewidth=1.2, label="forecast")
    ax.set_xlabel("hours from the forecast" if step_hours else "steps from the forecast")
    ax.set_ylabel(f"{target} ({units})")
    kind = "interval fan" if len(levels) > 1 else "quantile"
    # Two lines: beside two reliability diagrams the panel is a third of the figure wide.
    ax.set_title(f"{kind} at the highest test episode\nfrom {fan.origin}", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize="x-small")


def _draw_reliability(ax: Axes, name: str, bins_by_lead: dict[str, dict], step_hours: list[float] | None) -> None:
    """Mean forecast probability against observed frequency per bin, one line per lead."""
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfectly reliable")
    for lead, bins in bins_by_lead.items():
        counts = np.asarray(bins["count"], np.float64)
        used = counts > 0
        predicted = np.asarray(bins["predicted_sum"], np.float64)[used] / counts[used]
        observed = np.asarray(bins["observed_sum"], np.float64)[used] / counts[used]
        ax.plot(predicted, observed, marker="o", markersize=3, linewidth=1,
                label=f"{_lead_label(int(lead), step_hours)} ({int(counts.sum())} windows)")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="forecast probability", ylabel="observed frequency")
    ax.set_title(f"reliability of P({name})", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize="x-small")


def _draw_error_by_step(ax: Axes, metrics: Metrics, target: str, units: str) -> None:
    hours = metrics.step_hours
    x = hours if hours else metrics.horizon_steps
    for method, label in LABELS.items():
        if method in metrics.methods:
            ax.plot(x, metrics.methods[method].rmse, marker="o", markersize=3, label=label)
    ax.set_xlabel("forecast lead (hours)" if hours else "forecast lead (steps)")
    ax.set_ylabel(f"RMSE of {target} ({units})")
    ax.set_title(f"test-split error by horizon step ({metrics.windows} windows)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
