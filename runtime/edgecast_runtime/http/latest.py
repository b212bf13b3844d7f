"""GET /v1/forecast/latest: the last forecast `serve` made, whoever released it. With
neighbours, an own reading waits for its neighbours' readings; when `--neighbour-wait`
runs out, the releasing thread forecasts without the silent ones, after the request
that brought the reading has long been answered ("waiting"). That forecast is kept
here, as is every forecast a POST /v1/observe answered, so a client can fetch it."""

from __future__ import annotations

import threading
import time
from typing import Optional

from edgecast_runtime.http.limits import HttpError

OBSERVE, TIMER = "observe", "neighbour_wait"  # who released a forecast


class LatestForecast:
    """The last forecast (a streaming answer with "status": "forecast"), with when and by
    what it was released; in memory, since this process started."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: Optional[dict] = None
        self.count = 0

    def offer(self, answer: dict, released_by: str) -> None:
        """Keep `answer` if it is a forecast (anything else leaves the last one)."""
        if answer.get("status") != "forecast" or answer.get("duplicate"):
            return
        kept = {**answer, "released_by": released_by,
                "released_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        with self._lock:
            self._latest = kept
            self.count += 1

    def answer(self) -> dict:
        """The JSON answer of GET /v1/forecast/latest (404 before the first forecast)."""
        with self._lock:
            latest, count = self._latest, self.count
        if latest is None:
            raise HttpError(404, "no forecast yet: this server has made none since it started")
        return {**latest, "forecasts_since_start": count}
