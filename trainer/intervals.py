"""Quantiles and exceedance probabilities from the point forecaster, conformalized on the
validation split (issue 23; the graph contract's schema 4, docs/graph-contract.md).

The method. For a never-negative target (a concentration: the spec has a `target_min`
of 0 or more) the forecast's error is taken in shifted log space, r = g(y) - g(ŷ) with
g(v) = log(v + c), per lead, on every validation window: the predictive distribution of y
is ŷ's value moved by that lead's residual distribution, g(y) = g(ŷ) + R. So an interval
is narrow on a clean day and wide in an episode, where the errors are (the issue's quick
check: constant widths covered 0.78-0.83 above 75 µg/m³, log-space ones 0.84-0.98). A
target that may be negative uses additive residuals, y = ŷ + R.

The shift c sets how fast the width follows the level: c = 1 (log1p) makes it
proportional to 1 + ŷ, a large c makes it nearly constant. Per lead, c is the candidate
(SHIFT_STEPS times the validation truth's mean, and 1) whose conformal quantiles have the
lowest mean pinball loss on the validation windows over the model's levels (for the
central interval that is its interval score). Measured on Gucheng at +6 h: log1p's 90 %
interval scored 532 on the test split, the chosen c = 39 µg/m³ scored 226, and coverage
above 75 µg/m³ went from 0.99 to 0.89. One of a dozen values chosen on the windows that also
conformalize: a little optimism, which the hub's online adjustment takes up.

- Quantile τ at each lead: the split-conformal quantile of R (level ceil((n+1)τ)/n above
  the median, floor((n+1)τ)/n - 1/n below, as CQR's finite-sample rule), so a central
  interval covers at least its nominal share of exchangeable future windows. Offsets
  are made non-decreasing in τ and the back-transform is increasing, so the quantiles
  never cross on any window (monotone by construction in the graph too).
- P(y > t): 1 - F(g(t) - g(ŷ)), F the residuals' distribution smoothed by a uniform
  kernel over KNOTS of its quantiles (mean of clip((z - k) / width + 1/2, 0, 1): a proper
  CDF built from Sub, Mul, Add, Clip and Mean, ops every backend has). The same residuals
  give the quantiles, so the two agree: P(y > q_τ) is 1 - τ up to the smoothing.

The validation split is the calibration set: the network early-stops on it and the ridge
map may be fitted on it (`linear_fit_with_val`), so its residuals can be a little smaller
than the test split's; the hub's online adjustment (runtime skill/calibration.py) moves
the served interval from there. The test split stays unseen.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgecast.base import write_json_atomic
from edgecast_runtime.spec_outputs import Alert, Probabilistic

from .errors import DataError

if TYPE_CHECKING:
    from edgecast_runtime.spec import Spec

    from .windows import Windows

INTERVALS_FILE = "intervals.json"
# The probability at which metrics.json scores an alert as raised (precision and recall); the
# hub's own level is set where it runs (runtime/README.md).
ALERT_LEVEL = 0.5
RELIABILITY_BINS = np.linspace(0.0, 1.0, 11)  # the reliability diagram's ten probability bins
MIN_CALIBRATION_WINDOWS = 20  # fewer, and a 90 % interval rests on one or two residuals per lead
KNOTS = 50
CRPS_LEVELS = (np.arange(100) + 0.5) / 100  # midpoints: CRPS as the integral of the pinball loss over levels
LOG, ADDITIVE = "log", "additive"
OLD_LOG1P = "log1p"  # intervals.json before the shift: log(v + 1) at every lead
SHIFT_STEPS = tuple(2.0 ** k for k in range(-6, 5))  # times the validation truth's mean
SCORING_LEVELS = (0.05, 0.25, 0.5, 0.75, 0.95)  # what an alerts-only model's shift is chosen on
_ALERT = re.compile(r"^\s*(?P<column>[^<>]+?)\s*(?P<op>[<>])\s*(?P<threshold>[-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class Calibration:
    """Per lead: `offsets` [horizon, Q] of the quantile levels, `knots` [horizon, KNOTS] and
    `inverse_width` [horizon] of the smoothed residual CDF, in `space` (LOG: with `shift`
    [horizon], c of log(v + c); zeros and unused when ADDITIVE)."""

    space: str
    levels: tuple[float, ...]
    offsets: np.ndarray
    knots: np.ndarray
    inverse_width: np.ndarray
    calibration_windows: int
    shift: np.ndarray

    def to_dict(self) -> dict:
        return {"method": "split-conformal residual quantiles on the validation split", "space": self.space,
                "levels": list(self.levels), "offsets": self.offsets.tolist(), "knots": self.knots.tolist(),
                "inverse_width": self.inverse_width.tolist(), "calibration_windows": self.calibration_windows,
                "shift": self.shift.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        inverse_width = np.asarray(data["inverse_width"], np.float32)
        space = LOG if data["space"] == OLD_LOG1P else data["space"]
        shift = data.get("shift", np.ones_like(inverse_width) if space == LOG else np.zeros_like(inverse_width))
        return cls(space, tuple(float(v) for v in data["levels"]),
                   np.asarray(data["offsets"], np.float32), np.asarray(data["knots"], np.float32),
                   inverse_width, int(data["calibration_windows"]), np.asarray(shift, np.float32))


def requested_levels(interval: float | None, quantiles: tuple[float, ...]) -> tuple[float, ...]:
    """The quantile levels a model gives: those asked for, and the interval's bounds."""
    levels = {round(float(q), 9) for q in quantiles}
    if interval is not None:
        if not 0 < interval < 1:
            raise DataError(f"interval must be a coverage between 0 and 1, got {interval}", settings=("interval",))
        levels |= {round((1 - interval) / 2, 9), round((1 + interval) / 2, 9)}
    if any(not 0 < q < 1 for q in levels):
        raise DataError(f"quantiles must be levels between 0 and 1, got {sorted(levels)}", settings=("quantiles",))
    return tuple(sorted(levels))


def parse_alert(text: str, target: str) -> Alert:
    """'PM2.5>75' (or '<'): the probability that the target passes the threshold. The column
    matches in any case, as --target does; the alert is named with the file's spelling."""
    match = _ALERT.match(text)
    if match is None:
        raise DataError(f"alert {text!r}: expected TARGET>THRESHOLD or TARGET<THRESHOLD, e.g. '{target}>75'",
                        settings=("alerts",))
    column, op, threshold = match["column"], match["op"], match["threshold"]
    if column.casefold() != target.casefold():
        raise DataError(f"alert {text!r} is on {column!r}; an alert must be on the target {target!r}", settings=("alerts",))
    try:
        value = float(threshold)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DataError(f"alert {text!r}: {threshold!r} is not a finite number", settings=("alerts",))
    return Alert(f"{target}{op}{value:g}", target, op, value)


def probabilistic_part(interval: float | None, quantiles: tuple[float, ...], alerts: tuple[str, ...],
                       target: str) -> Probabilistic | None:
    """The spec's `probabilistic` part, None when nothing was asked for."""
    levels = requested_levels(interval, quantiles)
    parsed = tuple(parse_alert(text, target) for text in alerts)
    if len({alert.name for alert in parsed}) != len(parsed):
        raise DataError(f"the same alert is given twice: {', '.join(alerts)}", settings=("alerts",))
    if not levels and not parsed:
        return None
    return Probabilistic(levels, None if interval is None else float(interval), parsed)


def space_for(target_min: float | None) -> str:
    return LOG if target_min is not None and target_min >= 0 else ADDITIVE


def forward(values: np.ndarray, space: str, shift: np.ndarray) -> np.ndarray:
    """g(values), `shift` broadcast over values' last axes (a lead's c, or [horizon])."""
    return np.log(np.maximum(values, 0.0) + shift) if space == LOG else values


def backward(values: np.ndarray, space: str, shift: np.ndarray) -> np.ndarray:
    return np.exp(values) - shift if space == LOG else values


def calibrate(forecast: np.ndarray, truth: np.ndarray, levels: tuple[float, ...], target_min: float | None
              ) -> Calibration:
    """The calibration from validation forecasts and truths, raw units `[n, horizon]`."""
    forecast, truth = np.asarray(forecast, np.float64), np.asarray(truth, np.float64)
    space, n = space_for(target_min), len(truth)
    if n < MIN_CALIBRATION_WINDOWS:
        raise DataError(f"intervals need at least 20 validation windows to calibrate on, got {n}: "
                        f"give more rows or a larger validation split", settings=("split",))
    shift = _chosen_shift(forecast, truth, levels or SCORING_LEVELS) if space == LOG \
        else np.zeros(truth.shape[1])
    residuals = forward(truth, space, shift) - forward(forecast, space, shift)
    offsets = _offsets(residuals, levels)
    knots = np.quantile(residuals, (np.arange(KNOTS) + 0.5) / KNOTS, axis=0).T  # [horizon, KNOTS]
    spread = residuals.std(axis=0)
    width = np.maximum(1.06 * spread * n ** (-1 / 5) * 2, 1e-3)  # Silverman's bandwidth, both sides
    return Calibration(space, levels, offsets.astype(np.float32), knots.astype(np.float32),
                       (1.0 / width).astype(np.float32), n, shift.astype(np.float32))


def _offsets(residuals: np.ndarray, levels: tuple[float, ...]) -> np.ndarray:
    """[horizon, Q] conformal quantiles of the residuals, never crossing whatever the data."""
    if not levels:
        return np.zeros((residuals.shape[1], 0))
    return np.maximum.accumulate(np.stack([_conformal_quantile(residuals, level) for level in levels], axis=1), axis=1)


def _chosen_shift(forecast: np.ndarray, truth: np.ndarray, levels: tuple[float, ...]) -> np.ndarray:
    """Per lead, the shift c whose conformal quantiles score the lowest mean pinball loss
    on these windows: 1 (log1p) or SHIFT_STEPS times the truth's mean level."""
    level = float(np.mean(np.maximum(truth, 0.0)))
    candidates = sorted({1.0, *(round(level * step, 6) for step in SHIFT_STEPS if level * step > 0)})
    taus = np.asarray(levels, np.float64)
    losses = []
    for shift in candidates:
        offsets = _offsets(forward(truth, LOG, shift) - forward(forecast, LOG, shift), levels)
        values = backward(forward(forecast, LOG, shift)[..., None] + offsets[None], LOG, shift)
        error = truth[..., None] - np.maximum(values, 0.0)
        losses.append(np.maximum(taus * error, (taus - 1) * error).mean(axis=(0, 2)))  # [horizon]
    return np.asarray(candidates)[np.argmin(np.stack(losses), axis=0)]


def _conformal_quantile(residuals: np.ndarray, level: float) -> np.ndarray:
    n = residuals.shape[0]
    if level >= 0.5:
        return np.quantile(residuals, min(1.0, math.ceil((n + 1) * level) / n), axis=0, method="higher")
    return np.quantile(residuals, max(0.0, math.floor((n + 1) * level) / n - 1 / n), axis=0, method="lower")


def quantiles(calibration: Calibration, forecast: np.ndarray, floor: float | None) -> np.ndarray:
    """`[n, horizon, Q]` raw units, as the graph computes them (float32)."""
    shift = calibration.shift
    moved = forward(np.asarray(forecast, np.float32), calibration.space, shift)[..., None] + calibration.offsets[None]
    values = backward(moved, calibration.space, shift[:, None]).astype(np.float32)
    return np.maximum(values, np.float32(floor)) if floor is not None else values


def exceedance(calibration: Calibration, forecast: np.ndarray, alerts: tuple[Alert, ...]) -> np.ndarray:
    """`[n, horizon, K]` probabilities, as the graph computes them (float32)."""
    base = forward(np.asarray(forecast, np.float32), calibration.space, calibration.shift)
    columns = []
    for alert in alerts:
        gap = forward(np.float32(alert.threshold), calibration.space, calibration.shift) - base  # [n, horizon]
        scaled = (gap[..., None] - calibration.knots[None]) * calibration.inverse_width[None, :, None] + 0.5
        below = np.clip(scaled, 0.0, 1.0).mean(axis=-1)  # P(y < threshold)
        columns.append(1.0 - below if alert.op == ">" else below)
    return np.stack(columns, axis=-1).astype(np.float32)


def residual_quantiles(calibration: Calibration, levels: np.ndarray) -> np.ndarray:
    """`[horizon, L]`: the `levels` quantiles of each lead's smoothed residual CDF (the one
    the exceedance probabilities read), by inverting it on a fine grid."""
    rows = []
    for knots, inverse_width in zip(calibration.knots.astype(np.float64), calibration.inverse_width.astype(np.float64)):
        half = 0.5 / inverse_width
        grid = np.linspace(knots.min() - half, knots.max() + half, 4097)
        cdf = np.clip((grid[:, None] - knots[None]) * inverse_width + 0.5, 0.0, 1.0).mean(axis=1)
        rows.append(np.interp(levels, cdf, grid))
    return np.array(rows)


def crps(calibration: Calibration, forecast: np.ndarray, truth: np.ndarray, floor: float | None) -> np.ndarray:
    """`[n, horizon]` CRPS of the distribution the graph's quantiles and probabilities come
    from, as twice the mean pinball loss over CRPS_LEVELS of its quantiles (Gneiting and
    Raftery 2007). The model's own few levels would not do: 0.05 and 0.95 alone give a
    fraction of the CRPS, as tail quantiles' pinball losses are small."""
    shift = calibration.shift
    moved = forward(np.asarray(forecast, np.float64), calibration.space, shift)[..., None] \
        + residual_quantiles(calibration, CRPS_LEVELS)[None]
    values = backward(moved, calibration.space, shift[:, None])
    if floor is not None:
        values = np.maximum(values, floor)
    error = np.asarray(truth, np.float64)[..., None] - values
    return 2 * np.maximum(CRPS_LEVELS * error, (CRPS_LEVELS - 1) * error).mean(axis=-1)


def interval_metrics(calibration: Calibration, spec: Spec, forecast: np.ndarray, windows: Windows,
                     training_target: np.ndarray, given: dict[str, np.ndarray] | None = None) -> dict:
    """On the test split, per lead: the interval's coverage (also above each `>` alert's
    threshold), mean width and interval (Winkler) score, CRPS of the calibrated
    distribution; per alert, the Brier score and its skill against climatology (the
    training split's frequency of passing the threshold), and precision and recall of an
    alert raised at ALERT_LEVEL.
    `given`: an exported file's own `quantiles` and `exceedance` for these windows, scored
    instead of those the calibration gives from `forecast`."""
    probabilistic, floor, given = spec.probabilistic, spec.target_min, given or {}
    truth = np.asarray(windows.y, np.float64)
    found: dict = {"calibration_windows": calibration.calibration_windows, "test_windows": int(len(truth))}
    values = np.asarray(given["quantiles"], np.float64) if "quantiles" in given \
        else quantiles(calibration, forecast, floor).astype(np.float64)
    found["crps_by_lead"] = _rounded(crps(calibration, forecast, truth, floor), mean=True)
    bounds = probabilistic.interval_indices
    if bounds is not None:
        low, high = values[..., bounds[0]], values[..., bounds[1]]
        alpha = 1 - probabilistic.interval
        inside = (truth >= low) & (truth <= high)
        winkler = (high - low) + (2 / alpha) * (np.maximum(low - truth, 0) + np.maximum(truth - high, 0))
        found["interval"] = {"coverage": probabilistic.interval, "coverage_by_lead": _rounded(inside.mean(axis=0)),
                             "mean_width_by_lead": _rounded(high - low, mean=True),
                             "interval_score_by_lead": _rounded(winkler, mean=True)}
        for alert in probabilistic.alerts:
            if alert.op == ">" and (truth > alert.threshold).any():
                above = truth > alert.threshold
                found["interval"][f"coverage_above_{alert.threshold:g}_by_lead"] = _rounded(
                    np.array([inside[above[:, k], k].mean() if above[:, k].any() else np.nan
                              for k in range(truth.shape[1])]))
    if probabilistic.alerts:
        probability = np.asarray(given["exceedance"], np.float64) if "exceedance" in given \
            else exceedance(calibration, forecast, probabilistic.alerts).astype(np.float64)
        found["alerts"] = {}
        for index, alert in enumerate(probabilistic.alerts):
            outcome = np.vectorize(alert.exceeded)(truth).astype(np.float64)
            base = float(np.mean(np.vectorize(alert.exceeded)(training_target[np.isfinite(training_target)])))
            brier = ((probability[..., index] - outcome) ** 2).mean(axis=0)
            climatology = ((base - outcome) ** 2).mean(axis=0)
            raised, happened = probability[..., index] >= ALERT_LEVEL, outcome > 0
            found["alerts"][alert.name] = {
                "climatology": round(base, 4), "brier_by_lead": _rounded(brier), "alert_level": ALERT_LEVEL,
                "precision_by_lead": _rounded(_share(raised & happened, raised)),
                "recall_by_lead": _rounded(_share(raised & happened, happened)),
                "brier_skill_by_lead": _rounded(np.where(climatology > 0, 1 - brier / np.maximum(climatology, 1e-12),
                                                         np.nan)),
                "reliability": {str(lead): reliability_bins(probability[:, lead - 1, index], outcome[:, lead - 1])
                                for lead in reliability_leads(truth.shape[1])}}
    return found


def reliability_leads(horizon: int) -> list[int]:
    """The leads whose reliability is recorded and drawn: the first, the sixth, the last."""
    return sorted({1, min(6, horizon), horizon})


def reliability_bins(probability: np.ndarray, outcome: np.ndarray) -> dict[str, list]:
    """The reliability diagram's data: per tenth of [0, 1], the windows whose probability
    falls in it, the sum of those probabilities and of their outcomes (sums, not means, so
    several files or stations pool by adding)."""
    index = np.clip(np.digitize(probability, RELIABILITY_BINS[1:-1]), 0, len(RELIABILITY_BINS) - 2)
    size = len(RELIABILITY_BINS) - 1
    return {"count": np.bincount(index, minlength=size).tolist(),
            "predicted_sum": np.bincount(index, probability, minlength=size).round(4).tolist(),
            "observed_sum": np.bincount(index, outcome.astype(np.float64), minlength=size).tolist()}


def _share(part: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """Per lead, part's count over whole's (NaN where whole has none)."""
    counts = whole.sum(axis=0).astype(np.float64)
    return np.divide(part.sum(axis=0), counts, out=np.full(counts.shape, np.nan), where=counts > 0)


def _rounded(values: np.ndarray, mean: bool = False) -> list:
    values = np.asarray(values, np.float64)
    values = values.mean(axis=0) if mean else values
    return [None if not np.isfinite(v) else round(float(v), 4) for v in values]


def write_calibration(folder: Path, calibration: Calibration) -> None:
    write_json_atomic(Path(folder) / INTERVALS_FILE, calibration.to_dict())


def read_calibration(folder: Path) -> Calibration | None:
    path = Path(folder) / INTERVALS_FILE
    if not path.is_file():
        return None
    return Calibration.from_dict(json.loads(path.read_text(encoding="utf-8")))
