"""A freeze made visible: whether the release a hub serves is past its expiry.

A hub keeps serving its running release when the record expires (there is nothing
better to serve), but that must not go unnoticed: the hub's release status
(releases/updates.py) carries `release_expires` and `release_expired`, and the
metrics (skill/metrics.py: `/metrics`, the `--status-topic` summary) carry the gauges
`edgecast_release_expired` (1 while expired) and `edgecast_release_expiry_timestamp_seconds`.
`ExpiryWatch` publishes the status again when the running release expires, without
waiting for a record to arrive.

The running release is found from the model served: an installed release's model is
`RELEASE_DIR/vN/model.onnx`, its record `RELEASE_DIR/vN.release.json` (checked with
the trusted key when installed and on every start). Only the standard library is
used here, so the metrics work on a hub without the `releases` extra.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, Optional, Tuple

if TYPE_CHECKING:
    from edgecast_runtime.releases.updates import HubUpdater
    from edgecast_runtime.reload import ModelHolder

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
CHECK_SECONDS = 30.0  # how often ExpiryWatch looks, at most
_cache: Dict[Tuple[str, int, int], Optional[datetime]] = {}
_cache_lock = threading.Lock()


def record_of(model_path: Optional[Path]) -> Optional[Path]:
    """The record beside an installed release's model, None for any other model."""
    if model_path is None:
        return None
    folder = Path(model_path).parent
    if not (folder.name.startswith("v") and folder.name[1:].isdigit()):
        return None
    record = folder.parent / f"{folder.name}.release.json"
    return record if record.is_file() else None


def release_expiry(model_path: Optional[Path], now: Optional[float] = None) -> Dict[str, Any]:
    """{"release_version", "release_expires", "release_expired"} of the release whose
    model is at `model_path`; {} when it is not an installed release."""
    record = record_of(model_path)
    if record is None:
        return {}
    expires = _expires(record)
    if expires is None:
        return {}
    now = time.time() if now is None else now
    return {"release_version": int(record.name.split(".")[0][1:]),
            "release_expires": expires.strftime(TIME_FORMAT),
            "release_expired": now > expires.timestamp()}


def _expires(record: Path) -> Optional[datetime]:
    try:
        info = record.stat()
    except OSError:
        return None
    key = (str(record), info.st_mtime_ns, info.st_size)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    try:
        text = json.loads(record.read_bytes())["signed"]["expires"]
        expires: Optional[datetime] = datetime.strptime(text, TIME_FORMAT).replace(tzinfo=timezone.utc)
    except (OSError, ValueError, KeyError, TypeError):
        expires = None
    with _cache_lock:
        if len(_cache) > 64:
            _cache.clear()
        _cache[key] = expires
    return expires


def expiry_families(model_path: Optional[Path], prefix: str = "edgecast") -> Iterator[Any]:
    """The Prometheus gauges (prometheus_client is imported here, only when scraped)."""
    from prometheus_client.core import GaugeMetricFamily

    state = release_expiry(model_path)
    expired = GaugeMetricFamily(f"{prefix}_release_expired", "1 while the running release is past its "
                                "expiry (a freeze: no newer signed release has come)")
    expired.add_metric([], 1.0 if state.get("release_expired") else 0.0)
    yield expired
    if state:
        at = GaugeMetricFamily(f"{prefix}_release_expiry_timestamp_seconds",
                               "When the running release's record expires, Unix time")
        at.add_metric([], datetime.strptime(state["release_expires"], TIME_FORMAT)
                      .replace(tzinfo=timezone.utc).timestamp())
        yield at


class ExpiryWatch:
    """A daemon thread: calls `on_change(state)` when the running release (its model at
    `model_path()`) becomes expired or stops being so, checking every CHECK_SECONDS,
    right at the expiry time and when the model served moves (a release installed); it
    ends once `alive()` is False."""

    def __init__(self, model_path: Callable[[], Optional[Path]], on_change: Callable[[Dict[str, Any]], None],
                 alive: Callable[[], bool], interval: float = CHECK_SECONDS) -> None:
        self.model_path, self.on_change, self.alive, self.interval = model_path, on_change, alive, interval
        self._last: Optional[bool] = None
        self._thread = threading.Thread(target=self._run, name="release-expiry", daemon=True)

    def start(self) -> ExpiryWatch:
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            path = self.model_path()
            state = release_expiry(path)
            expired = bool(state.get("release_expired"))
            if self._last is not None and expired != self._last:
                self.on_change(state)
            self._last = expired
            wait = self.interval
            if state and not expired:
                until = datetime.strptime(state["release_expires"], TIME_FORMAT) \
                    .replace(tzinfo=timezone.utc).timestamp() - time.time()
                wait = min(wait, max(0.2, until + 0.5))
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and self.model_path() == path:  # a new release: look now
                if not self.alive():
                    return
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))


def watch_release(updater: HubUpdater, holder: ModelHolder) -> ExpiryWatch:
    """Under `--trust`: hot reload loads only the running release's signed files
    (releases.guard), and the status is published again when the release expires."""
    from edgecast_runtime.releases.guard import signed_release_guard

    holder.guard = signed_release_guard(updater.release_dir, updater.key, lambda: updater.version)

    def changed(state: Dict[str, Any]) -> None:
        updater.log({"event": "release_expired" if state.get("release_expired") else "release_valid", **state})
        try:
            updater.publish_status()
        except Exception as exc:  # the next status (a change, a reconnect) still carries it
            updater.log({"event": "internal_error", "error": f"expiry status: {type(exc).__name__}: {exc}"})

    current = holder  # the model served now: a release installed later moves it
    return ExpiryWatch(lambda: current.current.path, changed, lambda: _alive(updater)).start()


def _alive(updater: HubUpdater) -> bool:
    worker = getattr(updater, "_thread", None)  # the updater's worker: the watch ends with it
    return worker is None or worker.is_alive()
