"""The calibration extension (calibration.py) opened beside a stream's store, and what
it reports: rolling coverage, mean width and Brier score in the status JSON and on
`/metrics`, and the lines `edgecast-runtime score` prints."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Callable, Iterator, List, Optional, Tuple

from prometheus_client.core import GaugeMetricFamily

from edgecast_runtime.skill.calibration import Calibration

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from edgecast_runtime.model import Forecaster
    from edgecast_runtime.skill.rolling import SkillSettings, StreamScorer
    from edgecast_runtime.skill.store import ForecastStore

PREFIX = "edgecast"


def open_calibration(store: ForecastStore, settings: SkillSettings, interval: float,
                     log: Callable[[dict], None]) -> Optional[Calibration]:
    """The extension, its tables created in the store; None (logged) when they cannot be
    (a full disk): forecasts go on, with the model's own interval and no alerts."""
    calibration = Calibration(settings, interval, max(*settings.windows, settings.skill_alarm_window))
    try:
        store.extend(calibration)
    except sqlite3.Error as exc:
        log({"event": "scoring_error", "error": f"cannot write the forecast store {store.path} (its calibration "
             f"tables): {exc}; intervals are served uncalibrated and alerts are off"})
        return None
    calibration.store = store
    return calibration


def calibration_summary(calibration: Calibration, now: float, windows: Tuple[float, ...]) -> dict:
    """The status JSON's `intervals`, `brier`, `alert_skill` and `alerts`, only those with
    something in them (a model without quantiles or alerts adds nothing)."""
    from edgecast_runtime.skill.rolling import window_name

    intervals, brier, skill = [], [], []
    for window in windows:
        name = window_name(window)
        intervals += [{"window": name, "lead": lead, **row}
                      for lead, row in calibration.interval_rows(now - window).items()]
        brier += [{"window": name, "alert": alert, "lead": lead, **row}
                  for (alert, lead), row in calibration.brier_rows(now - window).items()]
        skill += [{"window": name, "alert": alert, **row}
                  for alert, row in calibration.alert_skill(now - window).items()]
    alerts = calibration.alerts()
    found = {"intervals": intervals, "brier": brier, "alert_skill": skill,
             "alerts": alerts if alerts["alerts"] else None}
    return {key: value for key, value in found.items() if value}


def interval_families(scorer: Optional[StreamScorer], model: Forecaster) -> Iterator[Metric]:
    """Gauges of a schema-4 model's calibration (none for older models)."""
    calibration = scorer.calibration if scorer else None
    if calibration is None or model.spec.probabilistic is None or scorer.last_timestamp is None:
        return
    coverage = GaugeMetricFamily(f"{PREFIX}_interval_coverage", "Rolling share of truths inside the "
                                 "served interval", labels=["lead", "window"])
    width = GaugeMetricFamily(f"{PREFIX}_interval_width", "Rolling mean width of the served interval, "
                              "target units", labels=["lead", "window"])
    offset = GaugeMetricFamily(f"{PREFIX}_interval_offset", "The hub's interval offset, in half-widths "
                               "of the model's interval", labels=["lead"])
    brier = GaugeMetricFamily(f"{PREFIX}_brier_score", "Rolling Brier score of the exceedance "
                              "probability", labels=["alert", "lead", "window"])
    raised = GaugeMetricFamily(f"{PREFIX}_alert", "1 while the alert is raised", labels=["alert"])
    now = scorer.last_timestamp
    from edgecast_runtime.skill.rolling import window_name

    for window in scorer.settings.windows:
        name = window_name(window)
        for lead, row in calibration.interval_rows(now - window).items():
            coverage.add_metric([str(lead), name], row["coverage"])
            width.add_metric([str(lead), name], row["mean_width"])
        for (alert, lead), row in calibration.brier_rows(now - window).items():
            brier.add_metric([alert, str(lead), name], row["brier"])
    for lead, value in enumerate(calibration.offsets(model.sha256, model.horizon), start=1):
        offset.add_metric([str(lead)], value)
    states = {entry["alert"]: entry["raised"] for entry in calibration.alerts()["alerts"]}
    for alert in model.spec.probabilistic.alerts:
        raised.add_metric([alert.name], 1.0 if states.get(alert.name) else 0.0)
    yield from (coverage, width, offset, brier, raised)


# Why these tables' counts differ from the skill table's above them (a station file with
# a missing hour loses 24 forecasts there, none here).
COUNTED_PER_LEAD = ("note: coverage and Brier count each lead once its own truth arrives; the skill table "
                    "counts a forecast only once every lead has its truth")


def calibration_text(report: dict) -> List[str]:
    """`score`'s lines for a schema-4 model: coverage and mean width per lead, Brier
    score per alert and lead, alert precision and recall (longest window)."""
    lines = []
    intervals = report.get("intervals") or []
    if intervals:
        longest = intervals[-1]["window"]
        lines.append(f"interval ({longest}): lead  scored  coverage  mean width")
        lines += [f"  {row['lead']:>4}  {row['count']:>6}  {row['coverage']:.3f}  {row['mean_width']:.3f}"
                  for row in intervals if row["window"] == longest]
    brier = report.get("brier") or []
    if brier:
        longest = brier[-1]["window"]
        lines.append(f"exceedance ({longest}): alert  lead  scored  Brier  observed frequency")
        lines += [f"  {row['alert']}  {row['lead']:>4}  {row['count']:>6}  {row['brier']:.4f}  "
                  f"{row['frequency']:.3f}" for row in brier if row["window"] == longest]
    if intervals or brier:
        lines.append(COUNTED_PER_LEAD)
    skill = report.get("alert_skill") or []
    if skill:
        longest = skill[-1]["window"]
        for row in (row for row in skill if row["window"] == longest):
            lines.append(f"alert {row['alert']} ({longest}, {row['forecasts']} forecasts): precision "
                         f"{_maybe(row['precision'])}, recall {_maybe(row['recall'])} "
                         f"({row['true_positive']} hits, {row['false_positive']} false alarms, "
                         f"{row['false_negative']} missed)")
    alerts = report.get("alerts")
    if alerts:
        raised = [entry["alert"] for entry in alerts["alerts"] if entry["raised"]]
        lines.append(f"alerts raised at the end: {', '.join(raised) or 'none'}; raised "
                     f"{alerts['raised_total']} times, cleared {alerts['cleared_total']} times")
    return lines


def _maybe(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.3f}"
