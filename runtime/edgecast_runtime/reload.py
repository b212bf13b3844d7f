"""Hot reload: watch the model file (and the manifest beside it), load a replaced
model beside the running one, validate it, and swap it in with one reference
assignment. A request that already took `holder.current` finishes on that model;
a bad new model is refused and the old one keeps serving."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from edgecast_runtime.admission import SERVICE_LOADING, TRIAL_TIMEOUT_SECONDS, ModelLoading
from edgecast_runtime.contract import MANIFEST_NAME
from edgecast_runtime.errors import EdgecastRuntimeError, ModelError
from edgecast_runtime.model import DEFAULT_THREADS, Forecaster
from edgecast_runtime.trial import one_line

if TYPE_CHECKING:
    from collections.abc import Callable

DEFAULT_POLL_SECONDS = 2.0
HEARTBEAT_SECONDS = 5.0  # without polling, the watcher still wakes this often (liveness)
# A watcher that has not come round for this long is stuck: longer than any reload
# (a trial is stopped after TRIAL_TIMEOUT_SECONDS) and many wake-ups.
STALL_SECONDS = TRIAL_TIMEOUT_SECONDS + 30.0


def load_model(path: str | Path, threads: int = DEFAULT_THREADS,
               loading: ModelLoading = SERVICE_LOADING) -> Forecaster:
    """A Forecaster, or a ModelError whatever went wrong: a model whose metadata
    breaks something unforeseen is still a bad model (exit code 3, a refused reload)."""
    try:
        return Forecaster(path, threads=threads, loading=loading)
    except EdgecastRuntimeError:
        raise
    except Exception as exc:
        raise ModelError(f"{path}: cannot be loaded ({type(exc).__name__}: "
                         f"{one_line(exc, 200)})") from None


def file_signature(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is replaced or rewritten: inode, size, mtime."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns)


class ModelHolder:
    """The model currently in use, and the means to replace it.

    `on_swap(new, old)` callbacks run after a swap (under the reload lock, so two
    reloads never interleave); `log(event_dict)` receives reload events. `guard(new)`,
    when set, must pass before a model reloaded from disk is swapped in (under `--trust`:
    releases.guard, only the running release's signed model); a release installed
    through `switch_to` was verified by its installer."""

    def __init__(self, path: str | Path, threads: int = DEFAULT_THREADS,
                 log: Callable[[dict], None] | None = None,
                 loading: ModelLoading = SERVICE_LOADING) -> None:
        self.path = Path(path)
        self.threads = threads
        self.loading = loading
        self._log = log or (lambda event: None)
        self._reload_lock = threading.Lock()
        self._listeners = []
        self.reloads = 0
        self.refused = 0
        self.last_error = None
        self.watcher: ModelWatcher | None = None  # set by the watcher: /healthz reports it
        self.guard: Callable[[Forecaster], None] | None = None
        self._signature = self.signatures()
        self._current = load_model(self.path, threads, loading)

    @property
    def current(self) -> Forecaster:
        return self._current

    def watcher_health(self) -> dict | None:
        """The watcher's liveness (ModelWatcher.health), None without a watcher."""
        return self.watcher.health() if self.watcher else None

    def report(self, event: dict) -> None:
        self._log(event)

    def on_swap(self, callback: Callable[[Forecaster, Forecaster], None]) -> None:
        self._listeners.append(callback)

    def signatures(self) -> tuple[tuple[int, int, int] | None, tuple[int, int, int] | None]:
        return (file_signature(self.path), file_signature(self.path.parent / MANIFEST_NAME))

    def changed(self) -> bool:
        return self.signatures() != self._signature

    def reload(self, reason: str) -> bool:
        """Load the file now; swap it in when valid. True when a new model is in use.
        The same bytes (same sha256) count as unchanged."""
        with self._reload_lock:
            # Taken before reading: a write that lands during the load changes the
            # signature again, so the next check retries.
            signature = self.signatures()
            self._signature = signature
            old = self._current
            try:
                new = load_model(self.path, self.threads, self.loading)
                if new.sha256 == old.sha256:
                    return False
                if self.guard is not None:
                    self.guard(new)
                for callback in self._listeners:
                    callback(new, old)
            except Exception as exc:  # whatever it was, the old model keeps serving
                self._refuse(reason, exc, old)
                return False
            self._current = new
            self.reloads += 1
            self.last_error = None
            self._log({"event": "reloaded", "reason": reason, "model_name": new.model_name,
                       "sha256": new.sha256, "previous_sha256": old.sha256,
                       "trial_seconds": (new.trial or {}).get("trial_seconds")})
            return True

    def _refuse(self, reason: str, exc: Exception, old: Forecaster) -> None:
        error = one_line(exc if isinstance(exc, EdgecastRuntimeError)
                         else f"{type(exc).__name__}: {exc}", 500)
        self.refused += 1
        self.last_error = error
        self._log({"event": "reload_refused", "reason": reason, "error": error,
                   "serving_sha256": old.sha256})

    def switch_to(self, path: str | Path, reason: str) -> Forecaster:
        """Load the model at another `path` (a verified release, installed in a folder
        of its own) and make it current, and the file watched from now on. Raises
        EdgecastRuntimeError and keeps the old model when it does not load."""
        with self._reload_lock:
            old = self._current
            new = load_model(path, self.threads, self.loading)
            for callback in self._listeners:
                callback(new, old)
            self.path = Path(path)
            self._signature = self.signatures()
            self._current = new
            self.reloads += 1
            self.last_error = None
            self._log({"event": "reloaded", "reason": reason, "model_name": new.model_name,
                       "sha256": new.sha256, "previous_sha256": old.sha256, "path": str(path)})
            return new


class ModelWatcher:
    """A daemon thread that polls the model's files every `interval` seconds and
    reloads once a change has held still for one poll (so a file still being
    copied in place is not read half-written); `request_reload()` (SIGHUP) forces
    a reload at the next wake-up. With `interval=None` it only serves requests."""

    def __init__(self, holder: ModelHolder, interval: float | None = DEFAULT_POLL_SECONDS) -> None:
        self.holder = holder
        self.interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._forced = False
        self._pending = None
        self.last_round = time.monotonic()  # when the loop last came round
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)
        holder.watcher = self

    def start(self) -> "ModelWatcher":
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        """The watcher thread runs and comes round: what the service's watchdog pings
        depend on, so a dead or stuck watcher gets the service restarted."""
        health = self.health()
        return health["alive"] and not health["stalled"]

    def request_reload(self) -> None:
        """Safe to call from a signal handler: it only sets flags."""
        self._forced = True
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)

    def health(self) -> dict:
        """Alive and coming round: a dead or stuck watcher would never reload again."""
        age = time.monotonic() - self.last_round
        alive = self._thread.is_alive() and not self._stop.is_set()
        return {"alive": alive, "stalled": alive and age > self._stall_seconds(),
                "last_poll_age_seconds": round(age, 3), "poll_interval": self.interval}

    def _stall_seconds(self) -> float:
        trial = self.holder.loading.trial_seconds + 30.0  # a reload may spend a whole trial
        return max(STALL_SECONDS, trial, 3 * (self.interval or HEARTBEAT_SECONDS))

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._wake.wait(self.interval or HEARTBEAT_SECONDS)
                self._wake.clear()
                if self._stop.is_set():
                    return
                try:
                    self._round()
                except Exception as exc:  # the holder refuses what it loads; this is the rest
                    self.holder.report({"event": "watcher_error",
                                        "error": one_line(f"{type(exc).__name__}: {exc}", 500)})
                self.last_round = time.monotonic()
        finally:
            if not self._stop.is_set():  # /healthz now says "degraded"; say why once
                self.holder.report({"event": "watcher_died"})

    def _round(self) -> None:
        if self._forced:
            self._forced = False
            self._pending = None
            self.holder.reload("signal")
        elif self.interval:
            self._poll()

    def _poll(self) -> None:
        if not self.holder.changed():
            self._pending = None
            return
        signature = self.holder.signatures()
        if signature == self._pending and signature[0] is not None:
            self._pending = None
            self.holder.reload("file changed")
        else:
            self._pending = signature  # it must hold still until the next poll
