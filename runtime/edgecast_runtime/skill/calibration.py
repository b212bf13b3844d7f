"""Keeping a schema-4 model's interval calibrated on the hub, and its alerts.

**The rule.** Per model and lead, the hub widens (or narrows) the model's central
interval [lo, hi] by an offset `q` in units of its half-width h = (hi - lo) / 2:
served = [lo - q·h, hi + q·h]. Each time the truth y of a served interval arrives,

    q ← clip(q + η · (miss - α), q_min, q_max),   miss = 1 if y is outside the served interval,

with α = 1 - coverage. This is the quantile tracker of Angelopoulos, Candès and
Tibshirani (2023, "Conformal PID control", the P term) applied to the normalized CQR
score max(lo - y, y - hi) / h, chosen over Gibbs and Candès' ACI (2021) because:

- ACI moves the miscoverage level α_t and needs a set of calibration scores to turn a
  level into a width; a hub has the model's fixed quantile levels and no such set, and
  α_t outside [0, 1] gives empty or infinite intervals. Tracking the offset needs
  nothing but the last miss, and its long-run miscoverage is within (q_max - q_min + η)
  / (η·T) of α for any sequence of truths (their Proposition 1), delays included.
- The step is η·(1 - α) at most whatever the truth: one absurd reading (a sensor
  glitch of 10⁶ that passed the valid range) moves q no more than an ordinary miss, and
  q stays within [q_min, q_max] (the served width between (1 + q_min) and (1 + q_max)
  times the model's), so one bad sensor cannot blow the interval up.
- The unit h keeps the interval following the level: a model that is narrow on clean
  days stays proportionally narrow after the adjustment.

**Durability.** The served bounds (in the answer, which is in the state file before the
store sees it) are kept per lead until their truth arrives, and the offset is updated
in the same SQLite transaction that scores the reading (ForecastStore.extend): a SIGKILL
anywhere leaves either both or neither, and the reconciliation at start applies the
missing reading once, so the offsets end exactly as in an uninterrupted run. (A rewind
of the store, readings forgotten beyond the hub's clock, forgets their scores but not
what they did to the offsets: those stay as they were, bounded.)

**Alerts.** For each alert, the probability judged is the largest over the leads of
the forecast just issued. Raised when it is >= `alert_level` on `alert_checks`
consecutive forecasts, cleared when it is < `alert_level - alert_margin` on as many:
one event each way per episode, none while it hovers between. The state and the last
events are stored in the same transaction too. Each scored lead also records the
probability and the outcome (Brier score) and whether the alert was raised when that
forecast was issued (precision and recall)."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

if TYPE_CHECKING:
    from edgecast_runtime.skill.rolling import SkillSettings
    from edgecast_runtime.skill.store import Step

SCHEMA = """
CREATE TABLE IF NOT EXISTS interval_pending (
    issued REAL NOT NULL, lead INTEGER NOT NULL, model_sha256 TEXT NOT NULL,
    lower REAL NOT NULL, upper REAL NOT NULL,        -- as served (after the offset)
    model_lower REAL NOT NULL, model_upper REAL NOT NULL, coverage REAL NOT NULL,
    PRIMARY KEY (issued, lead));
CREATE TABLE IF NOT EXISTS interval_scored (
    issued REAL NOT NULL, lead INTEGER NOT NULL, completed REAL NOT NULL,
    covered INTEGER NOT NULL, width REAL NOT NULL, PRIMARY KEY (issued, lead));
CREATE INDEX IF NOT EXISTS interval_scored_completed ON interval_scored (completed);
CREATE TABLE IF NOT EXISTS interval_offset (
    model_sha256 TEXT NOT NULL, lead INTEGER NOT NULL, amount REAL NOT NULL, updates INTEGER NOT NULL,
    PRIMARY KEY (model_sha256, lead));
CREATE TABLE IF NOT EXISTS alert_pending (
    issued REAL NOT NULL, lead INTEGER NOT NULL, name TEXT NOT NULL, op TEXT NOT NULL,
    threshold REAL NOT NULL, probability REAL NOT NULL, raised INTEGER NOT NULL,
    PRIMARY KEY (issued, lead, name));
CREATE TABLE IF NOT EXISTS alert_scored (
    issued REAL NOT NULL, lead INTEGER NOT NULL, name TEXT NOT NULL, completed REAL NOT NULL,
    probability REAL NOT NULL, outcome INTEGER NOT NULL, raised INTEGER NOT NULL,
    PRIMARY KEY (issued, lead, name));
CREATE INDEX IF NOT EXISTS alert_scored_completed ON alert_scored (completed);
CREATE TABLE IF NOT EXISTS alert_state (
    name TEXT PRIMARY KEY, raised INTEGER NOT NULL, streak INTEGER NOT NULL,
    probability REAL NOT NULL, changed REAL);
CREATE TABLE IF NOT EXISTS alert_events (
    ts REAL NOT NULL, name TEXT NOT NULL, event TEXT NOT NULL, probability REAL NOT NULL,
    PRIMARY KEY (ts, name));
"""
KEPT_EVENTS = 100  # alert events kept for GET /v1/alerts
RAISED, CLEARED = "alert_raised", "alert_cleared"


def tracked_offset(offset: float, missed: bool, miscoverage: float, step: float,
                   bounds: Sequence[float]) -> float:
    """One quantile-tracking update of an interval offset (the module's rule)."""
    moved = offset + step * ((1.0 if missed else 0.0) - miscoverage)
    return min(max(moved, bounds[0]), bounds[1])


def judge_alert(raised: bool, streak: int, probability: float, level: float, margin: float,
                checks: int) -> tuple:
    """(raised, streak, event or None) after one forecast: a run of `checks` forecasts
    past the level (raising) or below level - margin (clearing) flips the state."""
    crossing = probability < level - margin if raised else probability >= level
    streak = streak + 1 if crossing else 0
    if streak >= checks:
        return not raised, 0, CLEARED if raised else RAISED
    return raised, streak, None


class Calibration:
    """The store extension (ForecastStore.extend) that scores served intervals and
    exceedance probabilities, tracks the offsets and judges the alerts."""

    name = "calibration"

    def __init__(self, settings: SkillSettings, interval_seconds: float, retention_seconds: float) -> None:
        self.settings = settings
        self.interval = float(interval_seconds)
        self.retention = float(retention_seconds)
        self.store = None  # set by open_calibration

    def create(self, db: sqlite3.Connection) -> None:
        db.executescript(SCHEMA)

    # --- inside the store's transaction ---------------------------------------------------

    def apply(self, db: sqlite3.Connection, step: Step) -> dict:
        now = step.timestamp
        if step.truth is not None:
            self._score_intervals(db, now, step.truth)
            self._score_alerts(db, now, step.truth)
        events = []
        if step.distribution is not None:
            self._keep(db, step)
            events = self._judge(db, step)
        grace = self.settings.grace_seconds
        for table in ("interval_pending", "alert_pending"):
            db.execute(f"DELETE FROM {table} WHERE issued + lead * ? + ? < ?", (self.interval, grace, now))
            # Bounded as the store's pending forecasts are (its cap on their number): a lead
            # of a forecast the store no longer waits for is never scored either.
            db.execute(f"DELETE FROM {table} WHERE issued NOT IN (SELECT issued FROM pending)")
        for table in ("interval_scored", "alert_scored"):
            db.execute(f"DELETE FROM {table} WHERE completed <= ?", (now - self.retention,))
        db.execute("DELETE FROM alert_events WHERE ts NOT IN "
                   "(SELECT ts FROM alert_events ORDER BY ts DESC LIMIT ?)", (KEPT_EVENTS,))
        return {"alerts": events}

    def rewind(self, db: sqlite3.Connection, limit: float) -> None:
        for table in ("interval_pending", "alert_pending"):
            db.execute(f"DELETE FROM {table} WHERE issued > ?", (limit,))
        for table in ("interval_scored", "alert_scored"):
            db.execute(f"DELETE FROM {table} WHERE issued > ? OR completed > ?", (limit, limit))
        db.execute("DELETE FROM alert_events WHERE ts > ?", (limit,))

    # The pending rows whose lead lands on `now` (within half an interval, as the store):
    # chosen by SQLite, so the hundreds of rows still waiting never reach Python.
    DUE = "issued < ? AND abs((? - issued) / ? - lead) < 0.5"

    def _score_intervals(self, db: sqlite3.Connection, now: float, truth: float) -> None:
        rows = db.execute("SELECT issued, lead, model_sha256, lower, upper, coverage FROM interval_pending "
                          f"WHERE {self.DUE} ORDER BY issued, lead", (now, now, self.interval)).fetchall()
        if not rows:
            return
        settings = self.settings
        offsets = {(sha, lead): (amount, updates) for sha, lead, amount, updates in
                   db.execute("SELECT model_sha256, lead, amount, updates FROM interval_offset")}
        scored = []
        for issued, lead, sha, lower, upper, coverage in rows:  # in order: a lead's updates compose
            missed = not lower <= truth <= upper
            offset, updates = offsets.get((sha, lead), (0.0, 0))
            offsets[(sha, lead)] = (tracked_offset(offset, missed, 1.0 - coverage, settings.interval_step,
                                                   settings.interval_offset_bounds), updates + 1)
            scored.append((issued, lead, now, int(not missed), upper - lower))
        touched = {(sha, lead) for _, lead, sha, *_ in rows}
        db.executemany("INSERT OR REPLACE INTO interval_offset VALUES (?, ?, ?, ?)",
                       [(sha, lead, *offsets[(sha, lead)]) for sha, lead in sorted(touched)])
        db.executemany("INSERT OR IGNORE INTO interval_scored VALUES (?, ?, ?, ?, ?)", scored)
        db.executemany("DELETE FROM interval_pending WHERE issued = ? AND lead = ?", [row[:2] for row in rows])

    def _score_alerts(self, db: sqlite3.Connection, now: float, truth: float) -> None:
        rows = db.execute("SELECT issued, lead, name, op, threshold, probability, raised FROM alert_pending "
                          f"WHERE {self.DUE} ORDER BY issued, lead, name", (now, now, self.interval)).fetchall()
        db.executemany("INSERT OR IGNORE INTO alert_scored VALUES (?, ?, ?, ?, ?, ?, ?)",
                       [(issued, lead, name, now, probability,
                         int(truth > threshold if op == ">" else truth < threshold), raised)
                        for issued, lead, name, op, threshold, probability, raised in rows])
        db.executemany("DELETE FROM alert_pending WHERE issued = ? AND lead = ? AND name = ?",
                       [row[:3] for row in rows])

    def _keep(self, db: sqlite3.Connection, step: Step) -> None:
        served = step.distribution
        interval = served.get("interval")
        if interval is not None:
            rows = zip(range(1, len(interval["lower"]) + 1), interval["lower"], interval["upper"],
                       interval["model_lower"], interval["model_upper"])
            db.executemany("INSERT OR IGNORE INTO interval_pending VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           [(step.timestamp, lead, step.model_sha256, lo, hi, mlo, mhi, interval["coverage"])
                            for lead, lo, hi, mlo, mhi in rows])

    def _judge(self, db: sqlite3.Connection, step: Step) -> List[dict]:
        """Update each alert's state from this forecast; its per-lead probabilities wait
        for their truths with the state they were issued under."""
        settings, events = self.settings, []
        for alert in step.distribution.get("alerts", ()):
            name, probabilities = alert["name"], alert["probabilities"]
            found = db.execute("SELECT raised, streak FROM alert_state WHERE name = ?", (name,)).fetchone()
            raised, streak = (bool(found[0]), found[1]) if found else (False, 0)
            peak = max(probabilities)
            raised, streak, event = judge_alert(raised, streak, peak, settings.alert_level,
                                                settings.alert_margin, settings.alert_checks)
            changed = step.timestamp if event else None
            db.execute("INSERT INTO alert_state VALUES (?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                       "raised = excluded.raised, streak = excluded.streak, probability = excluded.probability, "
                       "changed = COALESCE(excluded.changed, alert_state.changed)",
                       (name, int(raised), streak, peak, changed))
            if event:
                db.execute("INSERT OR REPLACE INTO alert_events VALUES (?, ?, ?, ?)", (step.timestamp, name, event, peak))
                db.execute("INSERT INTO meta VALUES (?, '1') ON CONFLICT(key) DO UPDATE SET "
                           "value = CAST(value AS INTEGER) + 1", ("count_" + event,))
                events.append({"event": event, "alert": name, "timestamp": step.timestamp, "probability": peak,
                               "level": settings.alert_level if event == RAISED
                               else settings.alert_level - settings.alert_margin})
            db.executemany("INSERT OR IGNORE INTO alert_pending VALUES (?, ?, ?, ?, ?, ?, ?)",
                           [(step.timestamp, lead, name, alert["op"], alert["threshold"], p, int(raised))
                            for lead, p in enumerate(probabilities, start=1)])
        return events

    # --- reading ---------------------------------------------------------------------------

    def offsets(self, model_sha256: str, horizon: int) -> List[float]:
        """The offset per lead 1..horizon for this model (0 before any truth)."""
        rows = self.store.read(lambda db: db.execute(
            "SELECT lead, amount FROM interval_offset WHERE model_sha256 = ?", (model_sha256,)).fetchall())
        found = dict(rows)
        return [float(found.get(lead, 0.0)) for lead in range(1, horizon + 1)]

    def interval_rows(self, since: float) -> Dict[int, dict]:
        """Per lead, over intervals scored after `since`: count, coverage, mean width."""
        rows = self.store.read(lambda db: db.execute(
            "SELECT lead, COUNT(*), AVG(covered), AVG(width) FROM interval_scored WHERE completed > ? "
            "GROUP BY lead ORDER BY lead", (since,)).fetchall())
        return {lead: {"count": n, "coverage": coverage, "mean_width": width} for lead, n, coverage, width in rows}

    def brier_rows(self, since: float) -> Dict[tuple, dict]:
        """Per (alert, lead), over probabilities scored after `since`: count, Brier score
        and the observed frequency."""
        rows = self.store.read(lambda db: db.execute(
            "SELECT name, lead, COUNT(*), AVG((probability - outcome) * (probability - outcome)), AVG(outcome) "
            "FROM alert_scored WHERE completed > ? GROUP BY name, lead ORDER BY name, lead", (since,)).fetchall())
        return {(name, lead): {"count": n, "brier": brier, "frequency": frequency}
                for name, lead, n, brier, frequency in rows}

    def alert_skill(self, since: float) -> Dict[str, dict]:
        """Per alert, over forecasts scored after `since`: precision and recall of the
        alert state at issue time against "the threshold was passed at some lead"."""
        rows = self.store.read(lambda db: db.execute(
            "SELECT name, MAX(raised), MAX(outcome) FROM alert_scored WHERE completed > ? "
            "GROUP BY name, issued", (since,)).fetchall())
        found: Dict[str, dict] = {}
        for name, raised, outcome in rows:
            counts = found.setdefault(name, {"forecasts": 0, "true_positive": 0, "false_positive": 0,
                                             "false_negative": 0})
            counts["forecasts"] += 1
            key = ("true_positive" if raised and outcome else "false_positive" if raised
                   else "false_negative" if outcome else None)
            if key:
                counts[key] += 1
        for counts in found.values():
            tp = counts["true_positive"]
            counts["precision"] = _ratio(tp, tp + counts["false_positive"])
            counts["recall"] = _ratio(tp, tp + counts["false_negative"])
        return found

    def alerts(self) -> dict:
        """GET /v1/alerts: each alert's state and the last events, newest first."""
        def query(db: sqlite3.Connection) -> tuple:
            return (db.execute("SELECT name, raised, probability, changed FROM alert_state ORDER BY name").fetchall(),
                    db.execute("SELECT ts, name, event, probability FROM alert_events ORDER BY ts DESC").fetchall(),
                    dict(db.execute("SELECT key, value FROM meta WHERE key IN (?, ?)",
                                    ("count_" + RAISED, "count_" + CLEARED)).fetchall()))
        states, events, counts = self.store.read(query)
        settings = self.settings
        return {"level": settings.alert_level, "clear_below": settings.alert_level - settings.alert_margin,
                "checks": settings.alert_checks, "raised_total": int(counts.get("count_" + RAISED, 0)),
                "cleared_total": int(counts.get("count_" + CLEARED, 0)),
                "alerts": [{"alert": name, "raised": bool(raised), "probability": probability, "since": changed}
                           for name, raised, probability, changed in states],
                "events": [{"event": event, "alert": name, "timestamp": ts, "probability": p}
                           for ts, name, event, p in events]}


def _ratio(numerator: int, denominator: int) -> Optional[float]:
    return numerator / denominator if denominator else None


def served_distribution(answer: dict, alerts: Sequence) -> Optional[dict]:
    """What the store keeps of a schema-4 answer (Step.distribution), None otherwise."""
    interval, exceedance = answer.get("interval"), answer.get("exceedance")
    if interval is None and not exceedance:
        return None
    served: Dict[str, object] = {}
    if interval is not None and interval.get("coverage") is not None:
        served["interval"] = {key: interval[key] for key in ("coverage", "lower", "upper", "model_lower",
                                                            "model_upper")}
    served["alerts"] = [{"name": alert.name, "op": alert.op, "threshold": alert.threshold,
                         "probabilities": exceedance[alert.name]}
                        for alert in alerts if exceedance and alert.name in exceedance]
    return served
