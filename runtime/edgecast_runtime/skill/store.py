"""Pending forecasts and their scores, in SQLite beside the state file.

Every forecast the stream issues waits in `pending` until a reading has arrived for
each of its target steps; then its errors (model and persistence, one row per lead)
move to `scored` and it leaves `pending`, in one transaction: scored exactly once.
A forecast whose truth never comes (a gap, a missing or out-of-range target) expires
`horizon × interval + grace` after it was issued and is counted. Scored rows are kept
for `retention_seconds` (the longest rolling window), so storage stays bounded.

Why WAL with synchronous=FULL: WAL lets a scrape read while a reading is written;
FULL fsyncs the log at every commit, so a committed reading survives a power cut as
the state file does (NORMAL could lose the last commits, and the stream, which has
already answered, would never replay them). One fsync per reading is what the state
file costs already.

Consistency with the state file: the state file is written first, then the store,
which records `last_applied` (the reading's timestamp) in the same transaction. A
reading at or before `last_applied` changes nothing here, so applying one twice (a
resend answered as a duplicate, or the reconciliation at start) never scores twice;
a crash between the two writes is repaired at start from the state file's last
reading and answer (`StreamScorer.reconcile`).

A damaged store (not a database, a broken header, a truncated file) holds only
scores, while the readings state is what the hub needs: at open it is set aside
(renamed `NAME.damaged-YYYYmmddTHHMMSSZ`, with its -wal and -shm), logged, and a
fresh store is started. Pending forecasts are bounded by count as well as by time:
readings far closer together than the sampling interval each leave a pending row,
and every reading scans them all, so beyond `max_pending` the oldest are dropped and
counted (`dropped`)."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from edgecast_runtime.errors import StateError
from edgecast_runtime.skill.truths import with_truth

DEFAULT_GRACE_SECONDS = 6 * 3600.0  # how long a late reading may still complete a forecast
SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    issued REAL PRIMARY KEY,      -- the timestamp of the reading the forecast was made at
    model_sha256 TEXT NOT NULL,
    forecast TEXT NOT NULL,       -- JSON list, one value per lead
    persistence REAL NOT NULL,    -- the last target reading at issue time
    truths TEXT NOT NULL,         -- JSON list, null until that lead's reading arrives
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS scored (
    issued REAL NOT NULL,
    lead INTEGER NOT NULL,
    completed REAL NOT NULL,      -- the timestamp of the reading that completed it
    model_error REAL NOT NULL,    -- forecast - truth
    persistence_error REAL NOT NULL,
    PRIMARY KEY (issued, lead)
);
CREATE INDEX IF NOT EXISTS scored_completed ON scored (completed);
CREATE TABLE IF NOT EXISTS recent_inputs (ts REAL PRIMARY KEY, row TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
COUNTERS = ("issued", "scored", "expired", "dropped")
TABLES = ("pending", "scored", "recent_inputs", "meta")
# SQLite's result codes for a file that is damaged rather than unreachable.
SQLITE_CORRUPT, SQLITE_NOTADB = 11, 26


@dataclass(frozen=True)
class Step:
    """What one accepted reading brings to the store."""

    timestamp: float
    truth: Optional[float]  # the target reading, None when missing or outside its valid range
    forecast: Optional[List[float]]  # issued at this reading, None while the buffer fills
    persistence: Optional[float]  # the last target value in the window the forecast read
    inputs: Optional[List[float]]  # the numeric inputs, for the input-drift check
    model_sha256: str
    distribution: Optional[dict] = None  # schema 4: served interval and probabilities (calibration.py)
    shadow: Optional[Tuple[str, List[float]]] = None  # (sha256, forecast) of the challenger (pairs.py)


@dataclass(frozen=True)
class Outcome:
    applied: bool  # False when the reading had been applied already
    scored: List[Tuple[int, float, float]]  # (lead, model error, persistence error)
    expired: int
    extras: Dict[str, Any] = field(default_factory=dict)  # what each extension's apply returned


class ForecastStore:
    """The SQLite file (":memory:" when `path` is None). Thread-safe."""

    def __init__(self, path: Optional[Path], interval_seconds: float,
                 grace_seconds: float = DEFAULT_GRACE_SECONDS,
                 retention_seconds: float = 30 * 86400.0, input_window_seconds: float = 72 * 3600.0,
                 max_pending: Optional[int] = None, log: Optional[Callable[[dict], None]] = None):
        self.path = Path(path) if path else None
        self.interval = float(interval_seconds)
        self.grace = float(grace_seconds)
        self.retention = float(retention_seconds)
        self.input_window = float(input_window_seconds)
        self.max_pending = max_pending  # None: twice the most a forecast per interval leaves
        self._lock = threading.Lock()
        self.extensions: List[Any] = []  # tables updated in each reading's transaction (extend)
        try:
            self._db = self._connect()
        except sqlite3.Error as exc:
            if self.path is None or not is_damage(exc):
                raise StateError(f"cannot open the forecast store {self.path}: {exc}") from None
            aside = set_aside(self.path)
            (log or (lambda event: None))(
                {"event": "store_set_aside", "path": str(self.path), "moved_to": str(aside),
                 "error": str(exc), "message": "the forecast store was damaged: set aside, "
                 "scoring starts afresh (the readings state is kept)"})
            try:
                self._db = self._connect()
            except sqlite3.Error as again:
                raise StateError(f"cannot open the forecast store {self.path}: {again}") from None

    def _connect(self) -> sqlite3.Connection:
        """Open (or create) the store and check it: its header, its pages (quick_check)
        and the columns of its tables."""
        if self.path:
            create_private(self.path)
        db = sqlite3.connect(str(self.path) if self.path else ":memory:",
                             isolation_level=None, check_same_thread=False)
        try:
            if self.path:
                db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            verdict = db.execute("PRAGMA quick_check").fetchone()
            if verdict is None or verdict[0] != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {verdict[0] if verdict else 'no answer'}")
            db.executescript(SCHEMA)
            for table in TABLES:  # a table of the same name with other columns is damage too
                db.execute(f"SELECT * FROM {table} LIMIT 0")
            db.execute("SELECT issued, model_sha256, forecast, persistence, truths, expires "
                       "FROM pending LIMIT 0")
            db.execute("SELECT issued, lead, completed, model_error, persistence_error "
                       "FROM scored LIMIT 0")
        except sqlite3.Error:
            db.close()
            raise
        return db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def extend(self, extension: Any) -> None:
        """Tables (`create(db)`) that `apply(db, step)` updates in each reading's transaction."""
        with self._lock:
            extension.create(self._db)
            self.extensions.append(extension)

    def read(self, reader: Callable[[sqlite3.Connection], Any]) -> Any:
        with self._lock:  # an extension's query
            return reader(self._db)

    # --- writing ---------------------------------------------------------------------

    def apply(self, step: Step) -> Outcome:
        """Score the pending forecasts this reading completes, keep the new one,
        expire and prune, in one transaction; nothing when already applied."""
        with self._lock:
            try:
                return self._apply(step)
            except sqlite3.Error as exc:
                self._rollback()
                raise StateError(f"cannot write the forecast store {self.path}: {exc}") from None

    def _apply(self, step: Step) -> Outcome:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        last = self._meta("last_applied")
        if last is not None and step.timestamp <= float(last):
            db.execute("ROLLBACK")
            return Outcome(False, [], 0)
        scored = self._add_truth(step) if step.truth is not None else []
        if step.forecast is not None and step.persistence is not None:
            horizon = len(step.forecast)
            cursor = db.execute(
                "INSERT OR IGNORE INTO pending VALUES (?, ?, ?, ?, ?, ?)",
                (step.timestamp, step.model_sha256, json.dumps(step.forecast), step.persistence,
                 json.dumps([None] * horizon),
                 step.timestamp + horizon * self.interval + self.grace))
            self._count("issued", cursor.rowcount)
            self._drop_beyond(self.max_pending or pending_cap(horizon, self.interval, self.grace))
        expired = db.execute("DELETE FROM pending WHERE expires < ?", (step.timestamp,)).rowcount
        self._count("expired", expired)
        db.execute("DELETE FROM scored WHERE completed <= ?", (step.timestamp - self.retention,))
        if step.inputs is not None:
            db.execute("INSERT OR REPLACE INTO recent_inputs VALUES (?, ?)",
                       (step.timestamp, json.dumps(step.inputs)))
        db.execute("DELETE FROM recent_inputs WHERE ts <= ?", (step.timestamp - self.input_window,))
        extras = {extension.name: extension.apply(db, step) for extension in self.extensions}
        self._set_meta("last_applied", repr(step.timestamp))
        db.execute("COMMIT")
        return Outcome(True, scored, expired, extras)

    def rewind(self, limit: float) -> None:
        """Delete forecasts, scores and inputs stamped after `limit`, and the record of
        the last reading applied when it is after `limit`, in one transaction."""
        with self._lock:
            try:
                db = self._db
                db.execute("BEGIN IMMEDIATE")
                db.execute("DELETE FROM pending WHERE issued > ?", (limit,))
                db.execute("DELETE FROM scored WHERE issued > ? OR completed > ?", (limit, limit))
                db.execute("DELETE FROM recent_inputs WHERE ts > ?", (limit,))
                for extension in self.extensions:
                    extension.rewind(db, limit)
                last = self._meta("last_applied")
                if last is not None and float(last) > limit:
                    db.execute("DELETE FROM meta WHERE key = 'last_applied'")
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise StateError(f"cannot write the forecast store {self.path}: {exc}") from None

    def _add_truth(self, step: Step) -> List[Tuple[int, float, float]]:
        """Put the truth into every pending forecast that has this step as a target;
        a forecast whose last missing truth this was is scored and leaves `pending`."""
        db, now = self._db, step.timestamp
        rows = db.execute("SELECT issued, forecast, persistence, truths FROM pending "
                          "WHERE issued < ?", (now,)).fetchall()
        scored = []
        for issued, forecast_text, persistence, truths_text in rows:
            truths = with_truth(truths_text, issued, now, self.interval, step.truth)
            if truths is None:
                continue
            if any(value is None for value in truths):
                db.execute("UPDATE pending SET truths = ? WHERE issued = ?", (json.dumps(truths), issued))
                continue
            forecast = json.loads(forecast_text)
            errors = [(index + 1, forecast[index] - truth, persistence - truth)
                      for index, truth in enumerate(truths)]
            db.executemany("INSERT INTO scored VALUES (?, ?, ?, ?, ?)",
                           [(issued, lead_, now, model, base) for lead_, model, base in errors])
            db.execute("DELETE FROM pending WHERE issued = ?", (issued,))
            self._count("scored", 1)
            scored.extend(errors)
        return scored

    def _drop_beyond(self, cap: int) -> None:
        """Keep at most `cap` pending forecasts: the oldest beyond it are dropped, counted."""
        excess = self._db.execute("SELECT COUNT(*) FROM pending").fetchone()[0] - cap
        if excess > 0:
            dropped = self._db.execute(
                "DELETE FROM pending WHERE issued IN "
                "(SELECT issued FROM pending ORDER BY issued LIMIT ?)", (excess,)).rowcount
            self._count("dropped", dropped)

    def set_meta(self, key: str, value: object) -> None:
        with self._lock:
            try:
                self._set_meta(key, json.dumps(value))
            except sqlite3.Error as exc:
                raise StateError(f"cannot write the forecast store {self.path}: {exc}") from None

    # --- reading -----------------------------------------------------------------------

    def rolling(self, since: float) -> Dict[int, dict]:
        """Per lead, completed after `since`: count, sums of |error| and error² (model, persistence)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT lead, COUNT(*), SUM(ABS(model_error)), SUM(model_error * model_error), "
                "SUM(ABS(persistence_error)), SUM(persistence_error * persistence_error) "
                "FROM scored WHERE completed > ? GROUP BY lead ORDER BY lead", (since,)).fetchall()
        return {lead: {"count": n, "model_abs": ma, "model_sq": ms, "persistence_abs": pa,
                       "persistence_sq": ps} for lead, n, ma, ms, pa, ps in rows}

    def recent_inputs(self) -> List[List[Optional[float]]]:
        with self._lock:
            rows = self._db.execute("SELECT row FROM recent_inputs ORDER BY ts").fetchall()
        return [json.loads(text) for (text,) in rows]

    def counts(self) -> Dict[str, int]:
        with self._lock:
            found = {name: int(self._meta("count_" + name) or 0) for name in COUNTERS}
            found["pending"] = self._db.execute("SELECT COUNT(*) FROM pending").fetchone()[0]
        return found

    def pending_issue_times(self) -> List[float]:
        with self._lock:
            return [row[0] for row in self._db.execute("SELECT issued FROM pending ORDER BY issued")]

    def scored_issue_times(self) -> List[float]:
        with self._lock:
            return [row[0] for row in self._db.execute(
                "SELECT DISTINCT issued FROM scored ORDER BY issued")]

    def last_applied(self) -> Optional[float]:
        with self._lock:
            value = self._meta("last_applied")
        return None if value is None else float(value)

    def meta(self, key: str, default: object = None) -> object:
        with self._lock:
            value = self._meta(key)
        return default if value is None else json.loads(value)

    # --- helpers -----------------------------------------------------------------------

    def _meta(self, key: str) -> Optional[str]:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def _count(self, name: str, amount: int) -> None:
        if amount > 0:
            self._set_meta("count_" + name, str(int(self._meta("count_" + name) or 0) + amount))

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # no transaction was open


def create_private(path: Path) -> None:
    """Create the store's file as 0600 (SQLite gives its -wal and -shm files the same
    mode), refusing a symlink in its place as the state file does."""
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if os.path.islink(path):
            raise StateError(f"{path} is a symbolic link; the hub's state files must be regular "
                             f"files: put the file itself there") from None
        raise StateError(f"cannot open the forecast store {path}: {exc.strerror or exc}") from None
    try:
        os.fchmod(fd, 0o600)
    except OSError:
        pass
    finally:
        os.close(fd)


def is_damage(exc: sqlite3.Error) -> bool:
    """A file SQLite cannot read as a database (not one, a broken header, torn pages),
    as opposed to one it cannot reach (permissions, a full disk, a lock)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB)
    text = str(exc)
    return "not a database" in text or "malformed" in text or "quick_check" in text


def set_aside(path: Path) -> Path:
    """Rename a damaged store (and its -wal and -shm: a log left behind would be
    replayed into the fresh file) to NAME.damaged-TIMESTAMP; the new name."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    counter = 1
    while target.exists():
        target = path.with_name(f"{path.name}.damaged-{stamp}-{counter}")
        counter += 1
    try:
        for suffix in ("-wal", "-shm", ""):
            companion = path.with_name(path.name + suffix)
            if companion.exists():
                os.replace(companion, target.with_name(target.name + suffix))
    except OSError as exc:
        raise StateError(f"the forecast store {path} is damaged and cannot be set aside: "
                         f"{exc.strerror or exc}") from None
    return target


def pending_cap(horizon: int, interval: float, grace: float) -> int:
    """Twice the pending forecasts a reading per interval leaves (each waits
    horizon × interval + grace), and at least 64."""
    return max(64, 2 * (horizon + int(math.ceil(grace / interval)) + 1))


def store_path_for(state_path: Path) -> Path:
    """The store beside the state file: state.json -> state.json.scores.sqlite."""
    return state_path.with_name(state_path.name + ".scores.sqlite")


def exact_float(value: Optional[float]) -> Optional[float]:
    """A JSON number as the float64 holding its float32 value exactly, as numpy's
    float32 -> float64 cast does in the toolkit's evaluation."""
    if value is None:
        return None
    number = float(np.float32(value))
    return number if math.isfinite(number) else None
