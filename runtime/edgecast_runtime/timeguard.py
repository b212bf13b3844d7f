"""Readings' timestamps against the hub's own clock.

Timestamps must increase, so one reading stamped far in the future (year 9999) would
make every later reading out of order, across restarts. A reading more than
`max_future_seconds` ahead of the hub's clock is therefore refused, and a last
accepted timestamp beyond that bound (a state written before this check, or while
the hub's clock was unset) is not trusted to order later readings: the stream
restarts from the next one instead of refusing everything.

The default allowance is one sampling interval plus 15 minutes (1 h 15 min for
hourly data; 15 minutes when the interval is unknown): a reading stamped with the
step it belongs to, a sensor clock some minutes fast, or a hub clock that NTP has
not yet corrected are accepted, while a forged future reading can hold the stream
back by at most that long. A hub whose clock reads before 2020 has never been set
(no real-time clock, no network time yet): it cannot judge the future, so the check
is skipped, with a notice logged once."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Callable, Optional

from edgecast_runtime.errors import InputValueError

CLOCK_SET_AFTER = 1_577_836_800.0  # 2020-01-01T00:00:00Z
DEFAULT_FUTURE_SLACK_SECONDS = 900.0


def moment_text(seconds: float) -> str:
    """A timestamp as UTC ISO text (or as a number beyond the calendar)."""
    try:
        return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return repr(seconds)


class FutureGuard:
    """The latest timestamp the hub accepts now: the hub's clock plus the allowance.
    `max_future_seconds` None: one sampling interval plus DEFAULT_FUTURE_SLACK_SECONDS."""

    def __init__(self, max_future_seconds: Optional[float] = None,
                 log: Optional[Callable[[dict], None]] = None,
                 now: Callable[[], float] = time.time):
        self.max_future_seconds = max_future_seconds
        self._log = log or (lambda event: None)
        self._now = now
        self._unset_noticed = False

    def allowance(self, interval: Optional[float]) -> float:
        if self.max_future_seconds is not None:
            return float(self.max_future_seconds)
        return float(interval or 0.0) + DEFAULT_FUTURE_SLACK_SECONDS

    def limit(self, interval: Optional[float]) -> Optional[float]:
        """The latest acceptable timestamp, or None while the hub's clock is unset."""
        now = self._now()
        if now < CLOCK_SET_AFTER:
            if not self._unset_noticed:
                self._unset_noticed = True
                self._log({"event": "notice", "clock_unset": True,
                           "message": f"the hub's clock reads {moment_text(now)}, before 2020: "
                                      f"it has not been set, so readings' timestamps are not "
                                      f"checked against it until it is"})
            return None
        return now + self.allowance(interval)

    def check(self, timestamp: Optional[float], interval: Optional[float]) -> None:
        """InputValueError for a reading stamped beyond the limit."""
        if timestamp is None:
            return
        limit = self.limit(interval)
        if limit is not None and timestamp > limit:
            allowance = self.allowance(interval)
            raise InputValueError(
                f"timestamp {moment_text(timestamp)} is in the future: the hub's clock reads "
                f"{moment_text(limit - allowance)} and accepts at most {allowance:g} s ahead "
                f"(max_future_seconds); reading refused", setting="max_future_seconds")

    def untrusted(self, timestamp: Optional[float], interval: Optional[float]) -> bool:
        """Whether an accepted timestamp lies beyond the limit (with the clock set)."""
        if timestamp is None:
            return False
        limit = self.limit(interval)
        return limit is not None and timestamp > limit
