"""Forecast skill on the hub: the stream's forecasts scored against the readings that
arrive later (scoring.ForecastStore), rolling MAE and RMSE per lead for the model
and for persistence, and two alarms, each logged once when raised and once when
cleared:

- skill: over `skill_alarm_window` (7 days: over 72 h, hourly PM2.5's ratio is too
  noisy to judge a model on), the ratio of the model's RMSE pooled over all leads to
  persistence's is above `skill_raise_above` (a margin over 1), with at
  least `min_scored` forecasts scored per lead, on `skill_checks` consecutive checks
  (one check per scored forecast); cleared only once it is below `skill_clear_below`
  on as many consecutive checks. A check inside the band between counts for neither
  and breaks a run: a ratio wandering around 1 (a model about as good as persistence)
  leaves the alarm as it is instead of flapping.
- input_drift: the mean of a numeric feature over the last `drift_window` readings
  (at least `drift_min_readings`) is more than `drift_threshold` training standard
  deviations from the training mean (the manifest's `input_statistics`), on
  `checks` consecutive readings; cleared likewise."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple

import numpy as np

from edgecast_runtime.errors import OptionError, StateError
from edgecast_runtime.skill.calibration import Calibration, served_distribution
from edgecast_runtime.skill.intervals import calibration_summary, open_calibration
from edgecast_runtime.skill.pairs import PairScores, open_pairs, report
from edgecast_runtime.skill.store import (
    DEFAULT_GRACE_SECONDS,
    ForecastStore,
    Outcome,
    Step,
    exact_float,
    pending_cap,
    store_path_for,
)

if TYPE_CHECKING:
    from pathlib import Path

    from edgecast_runtime.model import Forecaster
    from edgecast_runtime.shadow import ShadowSlot
    from edgecast_runtime.state import StreamState

HOUR, DAY = 3600.0, 86400.0
DEFAULT_WINDOWS = (72 * HOUR, 30 * DAY)
SKILL, INPUT_DRIFT = "skill", "input_drift"
ALARMS = (SKILL, INPUT_DRIFT)


@dataclass(frozen=True)
class SkillSettings:
    windows: Tuple[float, ...] = DEFAULT_WINDOWS  # rolling windows shown, seconds
    grace_seconds: float = DEFAULT_GRACE_SECONDS
    checks: int = 3  # consecutive checks that raise or clear the input-drift alarm
    min_scored: int = 24  # scored forecasts per lead before the skill alarm may judge
    drift_window: float = 72 * HOUR
    drift_min_readings: int = 24
    drift_threshold: float = 3.0  # in training standard deviations
    enabled: bool = True  # False: forecasts are not kept or scored (no store file)
    skill_raise_above: float = 1.1  # skill alarm: raised above this pooled RMSE ratio ...
    skill_clear_below: float = 1.0  # ... and cleared only below this one
    skill_checks: int = 48  # consecutive checks that raise or clear the skill alarm
    skill_alarm_window: float = 7 * DAY  # the span the skill alarm judges
    max_pending: Optional[int] = None  # pending forecasts kept at most (None: from the horizon)
    # Schema-4 models (skill/calibration.py): the interval offset's step and bounds, in
    # half-widths of the model's interval, and the alerts' level, hysteresis and run.
    interval_step: float = 0.1
    interval_offset_bounds: Tuple[float, float] = (-0.5, 4.0)
    alert_level: float = 0.5
    alert_margin: float = 0.1
    alert_checks: int = 1

    def __post_init__(self) -> None:
        if not (0 < self.skill_clear_below <= self.skill_raise_above < math.inf):
            raise OptionError(f"skill_clear_below ({self.skill_clear_below}) must be positive and "
                             f"at most skill_raise_above ({self.skill_raise_above})")
        if not (0 < self.alert_level <= 1 and 0 <= self.alert_margin < self.alert_level):
            raise OptionError(f"alert_level ({self.alert_level}) must be in (0, 1] and alert_margin "
                              f"({self.alert_margin}) in [0, alert_level)", setting=("alert_level", "alert_margin"))
        low, high = self.interval_offset_bounds
        if not (0 < self.interval_step <= 1 and -1 < low <= 0 <= high < math.inf):
            raise OptionError(f"interval_step ({self.interval_step}) must be in (0, 1] and the offset bounds "
                              f"({low}, {high}) around 0, the lower above -1", setting="interval_step")


def window_name(seconds: float) -> str:
    """72h, 30d: hours under a week, days from a week on."""
    if seconds % DAY == 0 and seconds >= 7 * DAY:
        return f"{int(seconds // DAY)}d"
    if seconds % HOUR == 0:
        return f"{int(seconds // HOUR)}h"
    return f"{seconds:g}s"


def parse_window(text: str) -> float:
    """"72h", "30d", "90m" or seconds."""
    units = {"s": 1.0, "m": 60.0, "h": HOUR, "d": DAY}
    text = text.strip().lower()
    scale = units.get(text[-1:], None)
    number = float(text[:-1] if scale else text)
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"a window must be positive, got {text!r}")
    return number * (scale or 1.0)


def input_statistics(manifest: Optional[dict], features: List[str]) -> Dict[int, Tuple[float, float]]:
    """{feature index: (training mean, training std)} for the features the manifest's
    `input_statistics` describes with a positive spread."""
    described = ((manifest or {}).get("input_statistics") or {}).get("features") or {}
    found = {}
    for index, name in enumerate(features):
        entry = described.get(name)
        if isinstance(entry, dict) and isinstance(entry.get("mean"), (int, float)) \
                and isinstance(entry.get("std"), (int, float)) and entry["std"] > 0:
            found[index] = (float(entry["mean"]), float(entry["std"]))
    return found


class StreamScorer:
    """Scores a stream's forecasts; `after_reading(state, model)` is called by the
    streaming forecaster once a reading's state is on disk (and again, harmlessly,
    for a resend or at start). `listeners` get each Outcome; `latency_listeners`
    each predict time in seconds."""

    def __init__(self, store: ForecastStore, settings: SkillSettings,
                 statistics: Dict[int, Tuple[float, float]], log: Callable[[dict], None],
                 features: Tuple[str, ...] = ()):
        self.store = store
        self.features = features
        self.settings = settings
        self.statistics = statistics
        self.log = log
        self.listeners: List[Callable[[Outcome], None]] = []
        self.latency_listeners: List[Callable[[float], None]] = []
        self.alarms = {name: bool(store.meta("alarm_" + name, False)) for name in ALARMS}
        self._streaks = dict.fromkeys(ALARMS, 0)
        self.last_timestamp = store.last_applied()
        self.calibration: Optional[Calibration] = None  # schema-4 intervals and alerts (open_scorer)
        self.pairs: Optional[PairScores] = None  # champion and shadow pairs (open_scorer)
        self.shadow: Optional[ShadowSlot] = None  # the challenger run beside the model (shadow.py)

    def offsets(self, model: Forecaster) -> Optional[List[float]]:
        """The hub's interval offset per lead for `model` (calibration.py)."""
        return None if self.calibration is None else self.calibration.offsets(model.sha256, model.horizon)

    def predicted(self, seconds: float) -> None:
        for listener in self.latency_listeners:
            listener(seconds)

    def after_reading(self, state: StreamState, model: Forecaster) -> Optional[Outcome]:
        step = self._step(state, model)
        if step is None:
            return None
        try:
            outcome = self.store.apply(step)
        except StateError as exc:
            # Scoring must not stop forecasting (a full disk): the transaction is rolled
            # back, forecasts that needed this reading expire and are counted later.
            self.log({"event": "scoring_error", "timestamp": step.timestamp, "error": str(exc)})
            return None
        if not outcome.applied:
            return outcome
        self.last_timestamp = step.timestamp
        for event in outcome.extras.get("calibration", {}).get("alerts", ()):
            self.log(dict(event))
        for listener in self.listeners:
            listener(outcome)
        if outcome.scored:
            self._judge(SKILL, self._skill_worse(), step.timestamp, self.settings.skill_checks)
        if self.statistics:
            self._judge(INPUT_DRIFT, self._inputs_drifted(), step.timestamp, self.settings.checks)
        return outcome

    def rewind(self, limit: float) -> None:
        """Forget what the store holds beyond `limit` (a timeline the stream has left:
        readings stamped beyond the hub's clock), so that later readings are applied."""
        try:
            self.store.rewind(limit)
        except StateError as exc:
            self.log({"event": "scoring_error", "timestamp": limit, "error": str(exc)})
            return
        self.last_timestamp = self.store.last_applied()
        self.log({"event": "notice", "message": f"forecast store: readings after {limit:.0f} "
                  f"(beyond the hub's clock) forgotten", "store_rewound": True})

    def _step(self, state: StreamState, model: Forecaster) -> Optional[Step]:
        if state.last_timestamp is None or state.last_values is None:
            return None
        values = state.last_values
        truth = exact_float(values[0])
        ranges = getattr(model, "valid_ranges", None)
        if truth is not None and ranges and ranges.outside([truth] + [math.nan] * (len(values) - 1)):
            truth = None  # a glitch is no truth to score against
        answer = state.last_answer or {}
        forecast = persistence = distribution = None
        if answer.get("status") == "forecast" and len(state.buffer):
            forecast = [exact_float(v) for v in answer["forecast"]]
            persistence = float(state.buffer.last()[0])
            probabilistic = getattr(model, "spec", None) and model.spec.probabilistic
            if probabilistic is not None:
                distribution = served_distribution(answer, probabilistic.alerts)
        inputs = None
        if self.statistics:
            inputs = [None if v is None else float(v) for v in values]
        shadow = None  # the challenger forecasts after the answer, from the same window
        slot = self.shadow
        if forecast is not None and slot is not None and slot.current is not None and self.pairs is not None:
            shadow = slot.forecast(state.buffer.window())  # the window is copied only for a challenger
        return Step(float(state.last_timestamp), truth, forecast, persistence, inputs, model.sha256, distribution,
                    shadow)

    # --- rolling skill ------------------------------------------------------------------

    def table(self, now: Optional[float] = None, windows: Optional[Tuple[float, ...]] = None
              ) -> List[dict]:
        """One row per window (the rolling `windows` unless given) and lead: count, MAE
        and RMSE of the model and of persistence, and the skill ratio (model RMSE /
        persistence RMSE)."""
        now = self.last_timestamp if now is None else now
        rows = []
        if now is None:
            return rows
        for window in windows or self.settings.windows:
            for lead, sums in self.store.rolling(now - window).items():
                rows.append({"window": window_name(window), "window_seconds": window,
                             "lead": lead, **skill_row(sums)})
        return rows

    def summary(self) -> dict:
        counts = self.store.counts()
        summary = {"last_timestamp": self.last_timestamp, "forecasts": counts,
                   "skill": self.table(), "alarms": dict(self.alarms),
                   "windows": [window_name(w) for w in self.settings.windows]}
        if self.calibration is not None and self.last_timestamp is not None:
            summary.update(calibration_summary(self.calibration, self.last_timestamp, self.settings.windows))
        if self.shadow is not None:
            summary["shadow"] = self.shadow_report(with_losses=False)
        return summary

    def shadow_report(self, with_losses: bool) -> dict:
        """The shadow's state and its scored pairs against the model serving now."""
        slot, model = self.shadow, self.shadow.current if self.shadow else None
        body = {"state": slot.state if slot else "none", "reason": slot.reason if slot else None,
                "model_sha256": model.sha256 if model else None,
                "model_name": model.model_name if model else None,
                "horizon": model.horizon if model else None}
        champion = slot.champion_sha256() if slot else None
        if self.pairs is not None and champion is not None:
            windows = tuple((window_name(w), w) for w in (*self.settings.windows, self.pairs.retention))
            body.update(report(self.pairs, champion, body["model_sha256"], self.last_timestamp, windows,
                               with_losses))
        return body

    # --- alarms ------------------------------------------------------------------------

    def pooled_ratio(self) -> Optional[float]:
        """The skill alarm's figure: model RMSE / persistence RMSE over the alarm's window,
        pooled over the leads; None with fewer than `min_scored` forecasts per lead."""
        if self.last_timestamp is None:
            return None
        sums = self.store.rolling(self.last_timestamp - self.settings.skill_alarm_window)
        if not sums or min(s["count"] for s in sums.values()) < self.settings.min_scored:
            return None  # too few to judge
        model = sum(s["model_sq"] for s in sums.values())
        persistence = sum(s["persistence_sq"] for s in sums.values())
        if persistence <= 0:
            return math.inf if model > 0 else None
        return math.sqrt(model / persistence)

    def _skill_worse(self) -> Optional[bool]:
        """True above `skill_raise_above`, False below `skill_clear_below`, None in
        between (and with too few scored): see the module's docstring."""
        ratio = self.pooled_ratio()
        if ratio is None:
            return None
        if ratio > self.settings.skill_raise_above:
            return True
        if ratio < self.settings.skill_clear_below:
            return False
        self._streaks[SKILL] = 0  # in the band: a run of checks either way is broken
        return None

    def drift_scores(self) -> Dict[int, float]:
        """{feature index: |recent mean - training mean| / training std}."""
        rows = self.store.recent_inputs()
        scores = {}
        for index, (mean, std) in self.statistics.items():
            values = np.array([row[index] for row in rows if index < len(row)
                               and row[index] is not None], dtype=np.float64)
            if len(values) >= self.settings.drift_min_readings:
                scores[index] = abs(float(values.mean()) - mean) / std
        return scores

    def _inputs_drifted(self) -> Optional[bool]:
        scores = self.drift_scores()
        if not scores:
            return None
        return max(scores.values()) > self.settings.drift_threshold

    def _name(self, index: int) -> str:
        return self.features[index] if index < len(self.features) else str(index)

    def _judge(self, name: str, bad: Optional[bool], timestamp: float, checks: int) -> None:
        """Count consecutive checks against the alarm's current state; flip it (and
        log it, once) after `checks` of them in a row."""
        if bad is None:
            return
        active = self.alarms[name]
        self._streaks[name] = self._streaks[name] + 1 if bad != active else 0
        if self._streaks[name] < checks:
            return
        self._streaks[name] = 0
        self.alarms[name] = bad
        self.store.set_meta("alarm_" + name, bad)
        event = {"event": "alarm_raised" if bad else "alarm_cleared", "alarm": name,
                 "timestamp": timestamp}
        if name == SKILL:
            ratio = self.pooled_ratio()
            event["pooled_ratio"] = ratio if ratio is not None and math.isfinite(ratio) else None
            event["threshold"] = (self.settings.skill_raise_above if bad
                                  else self.settings.skill_clear_below)
            event["skill"] = self.table(windows=(self.settings.skill_alarm_window,))
        else:
            event["drift_scores"] = {self._name(index): round(score, 3)
                                     for index, score in self.drift_scores().items()}
        self.log(event)


def skill_row(sums: dict) -> dict:
    count = sums["count"]
    row = {"count": count}
    for source in ("model", "persistence"):
        row[f"{source}_mae"] = sums[f"{source}_abs"] / count
        row[f"{source}_rmse"] = math.sqrt(sums[f"{source}_sq"] / count)
    base = row["persistence_rmse"]
    row["skill_ratio"] = row["model_rmse"] / base if base > 0 else None
    return row


def open_scorer(model: Forecaster, state_path: Optional[Path], interval: Optional[float], settings: SkillSettings,
                log: Callable[[dict], None]) -> Optional[StreamScorer]:
    """The scorer of a stream: its store beside the state file (in memory without
    one). None when the sampling interval is unknown: a truth cannot be placed."""
    if not settings.enabled:
        return None
    if not interval:
        log({"event": "notice", "message": "no sampling interval (model or --interval): "
                                           "forecasts are not scored"})
        return None
    store = ForecastStore(store_path_for(state_path) if state_path else None, interval,
                          grace_seconds=settings.grace_seconds,
                          retention_seconds=max(*settings.windows, settings.skill_alarm_window),
                          input_window_seconds=settings.drift_window,
                          max_pending=settings.max_pending, log=log)
    statistics = input_statistics(read_manifest(model), list(model.features))
    scorer = StreamScorer(store, settings, statistics, log, tuple(model.features))
    scorer.calibration = open_calibration(store, settings, interval, log)
    scorer.pairs = open_pairs(store, interval, settings.grace_seconds, store.max_pending or
                              pending_cap(model.horizon, interval, settings.grace_seconds), log)
    return scorer


def read_manifest(model: Forecaster) -> Optional[dict]:
    """The manifest checked at load (None without one)."""
    path = getattr(model, "manifest_path", None)
    if path is None:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
