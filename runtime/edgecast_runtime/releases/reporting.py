"""The status a hub's release updater publishes (releases/updates.py): its fields, the
parts other updaters add (the shadow's), and the throttled publishing of changes."""

from __future__ import annotations

import json
from typing import Any

from edgecast_runtime.releases.expiry import release_expiry
from edgecast_runtime.releases.folder import now_text


class StatusReporting:
    """Mixed into HubUpdater, whose attributes it reads: holder, parts, _status, _lock,
    _publish, _pending, _status_throttle, _status_dirty."""

    def status_fields(self) -> dict:
        model = self.holder.current if self.holder else None
        return {**self._status, **release_expiry(model.path if model else None),
                "model_name": model.model_name if model else None,
                "sha256": model.sha256 if model else None, "updated": now_text()}

    def status(self) -> bytes:
        """The status as published."""
        status = self.status_fields()
        for name, part in self.parts.items():
            status[name] = part()
        return json.dumps(status, sort_keys=True, separators=(",", ":")).encode()

    def publish_status(self) -> None:
        self._status_dirty = False
        if self._publish is not None:
            self._publish(self.status())

    def request_status(self) -> None:
        """Publish the status soon (within STATUS_INTERVAL), from the worker thread."""
        with self._lock:
            self._status_dirty = True
            self._lock.notify()

    def _settle(self) -> None:
        """Back to `receiving` while a record is still pending (a refusal of another record
        does not end it), else `running`."""
        pending = self._pending
        if pending is not None:
            self._set_state("receiving", pending_version=pending.release.version)
        else:
            self._set_state("running")

    def _set_state(self, state: str, **extra: Any) -> None:
        """The status changes now; it is published at most every STATUS_INTERVAL seconds,
        and the last change always is."""
        self._status.pop("pending_version", None)
        self._status.pop("damaged", None)
        self._status.update(state=state, **extra)
        self._status_dirty = True
        if self._status_throttle.allow("status"):
            self.publish_status()
