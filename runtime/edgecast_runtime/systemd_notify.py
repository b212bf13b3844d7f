"""The service's side of systemd's notify protocol (sd_notify(3)), in the standard
library: one datagram of `KEY=VALUE` lines to the AF_UNIX socket named by
$NOTIFY_SOCKET ('@' at its start: Linux's abstract namespace). Without that variable
(a shell, a test, another supervisor) every call does nothing.

Written here rather than taken from a package: the runtime depends on numpy and
onnxruntime only, and the protocol is a few lines. The watchdog (WatchdogSec= in the
unit, passed as $WATCHDOG_USEC) is fed with `watchdog(alive)` from the service's
main loop, at most every half interval, and only while `alive`: a hung loop or a
dead worker thread stops the pings, and systemd restarts the service."""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Mapping


def socket_address(name: str) -> str:
    """$NOTIFY_SOCKET as an address for socket.sendto: '@name' is abstract."""
    return "\0" + name[1:] if name.startswith("@") else name


def watchdog_seconds(environ: Mapping[str, str], pid: int) -> float | None:
    """The watchdog interval asked of this process, or None: $WATCHDOG_USEC when it is
    a positive integer and $WATCHDOG_PID, if set, names this process (as
    sd_watchdog_enabled(3) decides)."""
    usec = environ.get("WATCHDOG_USEC", "")
    owner = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if owner and (not owner.isdigit() or int(owner) != pid):
        return None
    return int(usec) / 1_000_000


class Notifier:
    """Tells the service manager about readiness, stopping and liveness. Sending never
    raises: a manager that went away must not take the service down with it."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        name = environ.get("NOTIFY_SOCKET", "")
        # Only an absolute path or an abstract name is a valid address.
        self.address = socket_address(name) if name[:1] in ("/", "@") and len(name) > 1 else None
        self.watchdog_interval = watchdog_seconds(environ, os.getpid()) if self.address else None
        self._last_ping = float("-inf")
        self._lock = threading.Lock()  # pings may come from a request thread and the loop

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        """Send `KEY=VALUE` assignments in one datagram; True when it was sent."""
        if self.address is None or not assignments:
            return False
        message = "\n".join(assignments).encode("utf-8")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, self.address)
        except OSError:
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def watchdog(self, alive: bool) -> bool:
        """Called often (every pass of a main loop); pings when half the watchdog
        interval has passed since the last ping and the service is `alive`."""
        if self.watchdog_interval is None or not alive:
            return False
        with self._lock:
            now = time.monotonic()
            if now - self._last_ping < self.watchdog_interval / 2:
                return False
            self._last_ping = now
        return self.notify("WATCHDOG=1")
