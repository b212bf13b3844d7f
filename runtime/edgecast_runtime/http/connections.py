"""How many connections `serve` holds (each one a thread and a file descriptor)
and what it does at the limits: past --max-connections, or when accept() finds no
descriptor left, the longest-idle keep-alive connection is closed to make room (a
client must expect that of any keep-alive connection); with none idle, a new
connection gets a short 503 and is closed, and a failing accept() is paused, not
retried in a busy loop. Each of these is counted and logged at most once per
LOG_INTERVAL_SECONDS."""

from __future__ import annotations

import errno
import json
import socket
import threading
import time
from typing import Optional

from edgecast_runtime.logs import log_event

try:
    import resource
except ImportError:  # not on Windows; the limit is then not reported
    resource = None

LOG_INTERVAL_SECONDS = 10.0
FIRST_PAUSE_SECONDS = 0.05  # after a failed accept(); doubled while it keeps failing
LONGEST_PAUSE_SECONDS = 1.0  # also how long shutdown may wait for the accept loop
OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}  # a closed connection helps


class RateLimitedLog:
    """A log line per event name at most every `interval` seconds: under a flood,
    one line with the number of occurrences since the last line and the total."""

    def __init__(self, interval: float = LOG_INTERVAL_SECONDS) -> None:
        self.interval = interval
        self.totals: dict[str, int] = {}
        self._unlogged: dict[str, int] = {}
        self._logged_at: dict[str, float] = {}
        self._lock = threading.Lock()

    def note(self, event: str, **fields: object) -> None:
        now = time.monotonic()
        with self._lock:
            self.totals[event] = self.totals.get(event, 0) + 1
            self._unlogged[event] = self._unlogged.get(event, 0) + 1
            last = self._logged_at.get(event)
            if last is not None and now - last < self.interval:
                return
            self._logged_at[event] = now
            count, self._unlogged[event] = self._unlogged[event], 0
            total = self.totals[event]
        log_event({"event": event, "count": count, "total": total, **fields})


class _Slot:
    __slots__ = ("idle_since", "closing")

    def __init__(self) -> None:
        self.idle_since: Optional[float] = time.monotonic()  # None while a request is in hand
        self.closing = False


class ConnectionTable:
    """The server's open connections, at most `limit` at once."""

    def __init__(self, limit: int, log: Optional[RateLimitedLog] = None) -> None:
        self.limit = limit
        self.log = log or RateLimitedLog()
        self._slots: dict[socket.socket, _Slot] = {}
        self._lock = threading.Lock()
        self._pause = FIRST_PAUSE_SECONDS
        body = json.dumps({"error": f"too many connections (at most {limit}); try again shortly",
                           "status": 503}).encode() + b"\n"
        self._refusal = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                         b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body)) + body

    def admit(self, sock: socket.socket) -> bool:
        """Whether a new connection may be served (making room if need be); if not,
        it has been sent a 503 and the caller closes it."""
        with self._lock:
            open_now = sum(not slot.closing for slot in self._slots.values())
            admitted = open_now < self.limit or self._close_longest_idle()
            if admitted:
                self._slots[sock] = _Slot()
        if admitted:
            if open_now >= self.limit:
                self.log.note("idle_connection_closed", reason="connection limit", limit=self.limit)
            return True
        try:
            sock.setblocking(False)  # a client that reads nothing cannot hold the accept loop
            sock.send(self._refusal)
        except OSError:
            pass
        self.log.note("connection_refused", limit=self.limit, open_connections=open_now)
        return False

    def release(self, sock: socket.socket) -> None:
        with self._lock:
            self._slots.pop(sock, None)

    def set_idle(self, sock: socket.socket, idle: bool) -> None:
        """Between requests (idle) or with one in hand: only idle ones make room."""
        with self._lock:
            slot = self._slots.get(sock)
            if slot is not None:
                slot.idle_since = time.monotonic() if idle else None

    def accepted(self) -> None:
        self._pause = FIRST_PAUSE_SECONDS

    def accept_failed(self, error: OSError) -> None:
        """After accept() failed (typically EMFILE: no descriptor left): say why,
        close the longest-idle connection if any when out of descriptors or memory,
        and pause the accept loop, which would otherwise retry at once, forever."""
        with self._lock:
            open_now = len(self._slots)
            made_room = error.errno in OUT_OF_RESOURCES and self._close_longest_idle()
        self.log.note("accept_failed", error=f"{type(error).__name__}: {error.strerror or error}",
                      open_connections=open_now,
                      open_file_limit=resource.getrlimit(resource.RLIMIT_NOFILE)[0] if resource else None)
        if made_room:
            self.log.note("idle_connection_closed", reason="no file descriptor left", limit=self.limit)
            time.sleep(FIRST_PAUSE_SECONDS)  # for its thread to close it
        else:
            time.sleep(self._pause)
            self._pause = min(2 * self._pause, LONGEST_PAUSE_SECONDS)

    def _close_longest_idle(self) -> bool:
        """Shut the longest-idle connection (its thread then sees the end of the
        stream and closes it); called with the lock held."""
        idle = [(slot.idle_since, sock) for sock, slot in self._slots.items()
                if slot.idle_since is not None and not slot.closing]
        if not idle:
            return False
        sock = min(idle, key=lambda pair: pair[0])[1]
        self._slots[sock].closing = True
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already gone: its thread is on the way out
        return True


class BoundedConnections:
    """A mixin for a threading socketserver with a ConnectionTable in `connections`:
    a connection is admitted (or refused) before its thread starts and released
    when it ends; a failed accept() pauses the loop."""

    connections: ConnectionTable

    def get_request(self) -> tuple:
        try:
            accepted = super().get_request()
        except OSError as exc:  # the standard library would retry at once, in a busy loop
            self.connections.accept_failed(exc)
            raise
        self.connections.accepted()
        return accepted

    def process_request(self, request: socket.socket, client_address: tuple) -> None:
        if not self.connections.admit(request):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)  # starts the connection's thread
        except BaseException:
            self.connections.release(request)
            raise

    def process_request_thread(self, request: socket.socket, client_address: tuple) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.release(request)
