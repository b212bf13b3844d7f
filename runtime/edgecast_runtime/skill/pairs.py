"""Scored pairs of the champion and its shadow (shadow.py), in the forecast store.

A pair is the two models' forecasts from the same reading, kept in `shadow_pending`
until a reading has arrived for each target step, then scored: one row per lead in
`shadow_scored` with both errors (forecast - truth). It is an extension of the
ForecastStore (skill/store.py), so a pair is written, completed and scored in the same
SQLite transaction as the reading that brought it: a SIGKILL anywhere leaves the whole
reading applied or none of it, and the reconciliation at start applies it once, so no
scored pair is lost or counted twice. Pairs are kept `retention` seconds (8 weeks: the
promotion rule looks at up to 1,344 hourly origins, docs/promotion.md).

What the hub reports (`report`): per rolling window and lead, the pairs scored and both
models' MSE; with the status, per scored origin each model's squared error averaged over
the leads (docs/promotion.md's `losses`: everything the promotion rule reads, a horizon-th
of the pairs' size); for the current champion and challenger only: pairs of earlier
models are not evidence about these. The queries aggregate in SQLite (a GROUP BY over the
primary key), so a report over 56 days of 24-lead pairs reads 1,344 rows, not 32,256."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Tuple

import numpy as np

from edgecast_runtime.skill.truths import with_truth

if TYPE_CHECKING:
    from edgecast_runtime.skill.store import ForecastStore, Step

DAY = 86400.0
DEFAULT_RETENTION_SECONDS = 56 * DAY
SCHEMA = """
CREATE TABLE IF NOT EXISTS shadow_pending (
    issued REAL PRIMARY KEY, champion_sha256 TEXT NOT NULL, shadow_sha256 TEXT NOT NULL,
    champion TEXT NOT NULL, shadow TEXT NOT NULL,   -- JSON lists, one value per lead
    truths TEXT NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS shadow_scored (
    issued REAL NOT NULL, lead INTEGER NOT NULL, completed REAL NOT NULL,
    champion_sha256 TEXT NOT NULL, shadow_sha256 TEXT NOT NULL,
    champion_error REAL NOT NULL, shadow_error REAL NOT NULL, PRIMARY KEY (issued, lead));
CREATE INDEX IF NOT EXISTS shadow_scored_completed ON shadow_scored (completed);
"""


class PairScores:
    """The store extension (ForecastStore.extend): `apply` runs in each reading's
    transaction and returns the number of pairs it scored."""

    name = "shadow"

    def __init__(self, interval: float, grace: float, max_pending: int,
                 retention: float = DEFAULT_RETENTION_SECONDS) -> None:
        self.interval, self.grace, self.max_pending, self.retention = interval, grace, max_pending, retention
        self.path: Optional[Path] = None  # the store's file; None in memory (open_pairs)
        self.store_read: Callable = lambda reader: None
        self._reader: Optional[sqlite3.Connection] = None
        self._reader_lock = threading.Lock()

    def create(self, db: sqlite3.Connection) -> None:
        db.executescript(SCHEMA)
        db.execute("SELECT issued, champion_sha256, shadow_sha256, champion, shadow, truths, expires "
                   "FROM shadow_pending LIMIT 0")
        db.execute("SELECT issued, lead, completed, champion_sha256, shadow_sha256, champion_error, "
                   "shadow_error FROM shadow_scored LIMIT 0")

    def apply(self, db: sqlite3.Connection, step: Step) -> dict:
        scored = self._add_truth(db, step) if step.truth is not None else 0
        if step.forecast is not None and step.shadow is not None and step.persistence is not None:
            shadow_sha256, shadow = step.shadow
            horizon = len(step.forecast)
            db.execute("INSERT OR IGNORE INTO shadow_pending VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (step.timestamp, step.model_sha256, shadow_sha256, json.dumps(step.forecast),
                        json.dumps(shadow), json.dumps([None] * horizon),
                        step.timestamp + horizon * self.interval + self.grace))
            db.execute("DELETE FROM shadow_pending WHERE issued IN (SELECT issued FROM shadow_pending "
                       "ORDER BY issued DESC LIMIT -1 OFFSET ?)", (self.max_pending,))
        db.execute("DELETE FROM shadow_pending WHERE expires < ?", (step.timestamp,))
        db.execute("DELETE FROM shadow_scored WHERE completed <= ?", (step.timestamp - self.retention,))
        return {"scored": scored}

    def _add_truth(self, db: sqlite3.Connection, step: Step) -> int:
        """As ForecastStore._add_truth: the truth goes to every pending pair that targets
        this step; a pair whose last truth this was is scored."""
        now, scored = step.timestamp, 0
        rows = db.execute("SELECT issued, champion_sha256, shadow_sha256, champion, shadow, truths "
                          "FROM shadow_pending WHERE issued < ?", (now,)).fetchall()
        for issued, champion_sha256, shadow_sha256, champion_text, shadow_text, truths_text in rows:
            truths = with_truth(truths_text, issued, now, self.interval, step.truth)
            if truths is None:
                continue
            if any(value is None for value in truths):
                db.execute("UPDATE shadow_pending SET truths = ? WHERE issued = ?", (json.dumps(truths), issued))
                continue
            champion, shadow = json.loads(champion_text), json.loads(shadow_text)
            db.executemany("INSERT OR REPLACE INTO shadow_scored VALUES (?, ?, ?, ?, ?, ?, ?)",
                           [(issued, index + 1, now, champion_sha256, shadow_sha256,
                             champion[index] - truth, shadow[index] - truth)
                            for index, truth in enumerate(truths)])
            db.execute("DELETE FROM shadow_pending WHERE issued = ?", (issued,))
            scored += 1
        return scored

    def rewind(self, db: sqlite3.Connection, limit: float) -> None:
        db.execute("DELETE FROM shadow_pending WHERE issued > ?", (limit,))
        db.execute("DELETE FROM shadow_scored WHERE issued > ? OR completed > ?", (limit, limit))

    # --- reading ---------------------------------------------------------------------
    # The report reads through a read-only connection of its own: in WAL mode it neither
    # waits for nor holds up the writer, so a status built while a reading is applied
    # never delays that reading's answer (benchmarks/shadow.py measures it).

    def read(self, reader: Callable[[sqlite3.Connection], Any]) -> Any:
        if self.path is None:  # a store in memory has one connection
            return self.store_read(reader)
        with self._reader_lock:
            if self._reader is None:
                self._reader = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            return reader(self._reader)

    def losses(self, db: sqlite3.Connection, champion_sha256: str, shadow_sha256: str
               ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(issued, champion loss, shadow loss) per scored origin of these two models, in
        time order: each loss the mean over the leads of the squared error."""
        rows = db.execute("SELECT issued, AVG(champion_error * champion_error), AVG(shadow_error * shadow_error) "
                          "FROM shadow_scored WHERE champion_sha256 = ? AND shadow_sha256 = ? GROUP BY issued "
                          "ORDER BY issued", (champion_sha256, shadow_sha256)).fetchall()
        table = np.array(rows, dtype=np.float64).reshape(-1, 3)
        return table[:, 0], table[:, 1], table[:, 2]

    def lead_sums(self, db: sqlite3.Connection, champion_sha256: str, shadow_sha256: str, since: float
                  ) -> List[Tuple[int, int, float, float]]:
        """(lead, pairs, sum of champion error², sum of shadow error²) completed after `since`."""
        return db.execute("SELECT lead, COUNT(*), SUM(champion_error * champion_error), "
                          "SUM(shadow_error * shadow_error) FROM shadow_scored WHERE champion_sha256 = ? "
                          "AND shadow_sha256 = ? AND completed > ? GROUP BY lead ORDER BY lead",
                          (champion_sha256, shadow_sha256, since)).fetchall()

    def errors(self, db: sqlite3.Connection, champion_sha256: str, shadow_sha256: str,
               since: float = -np.inf) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(issued, champion errors, shadow errors) of the pairs of these two models
        completed after `since`: origins in time order, one column per lead."""
        rows = db.execute("SELECT issued, lead, champion_error, shadow_error FROM shadow_scored "
                          "WHERE champion_sha256 = ? AND shadow_sha256 = ? AND completed > ? "
                          "ORDER BY issued, lead", (champion_sha256, shadow_sha256, since)).fetchall()
        if not rows:
            return np.zeros(0), np.zeros((0, 0)), np.zeros((0, 0))
        table = np.array(rows, dtype=np.float64)
        issued, where = np.unique(table[:, 0], return_inverse=True)
        horizon = int(table[:, 1].max())
        champion = np.full((len(issued), horizon), np.nan)
        shadow = np.full((len(issued), horizon), np.nan)
        leads = table[:, 1].astype(int) - 1
        champion[where, leads], shadow[where, leads] = table[:, 2], table[:, 3]
        return issued, champion, shadow

    def pending(self, db: sqlite3.Connection) -> int:
        return db.execute("SELECT COUNT(*) FROM shadow_pending").fetchone()[0]


def open_pairs(store: ForecastStore, interval: float, grace: float, max_pending: int,
               log: Callable[[dict], None]) -> Optional[PairScores]:
    """The extension, its tables created in the store; None (logged) when they cannot be
    (a full disk): forecasts go on, a shadow's are not scored."""
    pairs = PairScores(interval, grace, max_pending)
    pairs.path, pairs.store_read = store.path, store.read
    try:
        store.extend(pairs)
    except sqlite3.Error as exc:
        log({"event": "scoring_error", "error": f"cannot write the forecast store {store.path} (its shadow "
             f"tables): {exc}; a shadow model's forecasts are not scored"})
        return None
    return pairs


def lead_rows(window: str, window_seconds: float, sums: List[Tuple[int, int, float, float]]) -> List[dict]:
    """Per lead over the window: pairs, both models' MSE and RMSE, and their ratio."""
    rows = []
    for lead, count, champion_sq, shadow_sq in sums:
        champion_mse, shadow_mse = champion_sq / count, shadow_sq / count
        rows.append({"window": window, "window_seconds": window_seconds, "lead": lead, "pairs": count,
                     "champion_mse": champion_mse, "shadow_mse": shadow_mse,
                     "champion_rmse": champion_mse ** 0.5, "shadow_rmse": shadow_mse ** 0.5,
                     "mse_ratio": shadow_mse / champion_mse if champion_mse > 0 else None})
    return rows


def losses_document(issued: np.ndarray, champion: np.ndarray, shadow: np.ndarray) -> dict:
    """docs/promotion.md's `losses`: per origin, each model's squared error averaged over
    the leads (6 significant digits): all the rule needs, at a horizon-th of the pairs."""
    def rounded(values: np.ndarray) -> List[float]:
        return [float(f"{value:.6g}") for value in values]
    return {"issued": [float(t) for t in issued], "champion": rounded(champion), "challenger": rounded(shadow)}


def report(pairs: PairScores, champion_sha256: str, shadow_sha256: Optional[str], now: Optional[float],
           windows: Tuple[Tuple[str, float], ...], with_losses: bool) -> dict:
    """The scoring part of the shadow's status (see the module docstring)."""
    body: dict = {"pending_pairs": pairs.read(pairs.pending), "scored_pairs": 0, "skill": []}
    if shadow_sha256 is None or now is None:
        return body
    issued, champion, shadow = pairs.read(lambda db: pairs.losses(db, champion_sha256, shadow_sha256))
    body["scored_pairs"] = int(len(issued))
    for name, seconds in windows:
        sums = pairs.read(lambda db: pairs.lead_sums(db, champion_sha256, shadow_sha256, now - seconds))
        body["skill"] += lead_rows(name, seconds, sums)
    if with_losses and len(issued):
        body["losses"] = losses_document(issued, champion, shadow)
    return body
