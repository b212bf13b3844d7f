"""`edgecast fleet status`: every hub's retained status (edgecast/hub/ID/status), read
for a bounded time: its model, release version, state and last error."""
from __future__ import annotations

import time

from .broker import BrokerSettings, OperatorSession
from .settings import DEFAULT_WAIT_SECONDS

COLUMNS = ("hub", "state", "version", "model", "sha256", "since", "last error")


def fleet_status(settings: BrokerSettings, wait_seconds: float = DEFAULT_WAIT_SECONDS) -> dict[str, dict]:
    """Hub id -> its latest status, as the broker retains it."""
    with OperatorSession(settings, client_id=f"edgecast-status-{time.time_ns()}") as session:
        return dict(sorted(session.collect(wait_seconds).items()))


def last_error_text(status: dict) -> str:
    error = status.get("last_error")
    if not isinstance(error, dict):
        return ""
    version = error.get("version")
    where = f"release {version}" if version is not None else "a release"
    return f"{where} refused ({error.get('reason')}): {error.get('message')}"


def status_rows(statuses: dict[str, dict]) -> list[tuple[str, ...]]:
    return [(hub, str(status.get("state", "?")), str(status.get("version") or "-"),
             str(status.get("model_name") or "-"), str(status.get("sha256") or "-")[:12],
             str(status.get("since") or "-"), last_error_text(status)) for hub, status in statuses.items()]
