"""Structured logs: one JSON object per line on stderr, so a hub's journal can be
searched and parsed; a lock keeps lines from different threads whole."""

import json
import sys
import threading
import time

_write_lock = threading.Lock()


def utc_now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def log_event(event: dict) -> None:
    line = json.dumps({"ts": utc_now(), **event}, default=str, separators=(",", ":"))
    with _write_lock:
        try:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # a closed stderr must not take the service down
