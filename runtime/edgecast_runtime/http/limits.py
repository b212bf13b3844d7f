"""What `serve` takes of a request before any endpoint sees it: a request head
(request line and headers) of bounded size read within a deadline, a Host this hub
answers to (a DNS-rebinding page carries its own name), exactly one plain
Content-Length (a proxy in front must not read the body's end elsewhere) and JSON
bodies only (a cross-site browser sends text/plain and forms without asking)."""

from __future__ import annotations

import io
import ipaddress
import json
import re
import socket
import time
from email.message import Message
from typing import Callable, Iterable, Optional
from urllib.parse import urlsplit

from edgecast_runtime.errors import EdgecastRuntimeError
from edgecast_runtime.logs import log_event

DEFAULT_MAX_HEAD_BYTES = 16 * 1024  # browsers' heads are well under 8 KiB
JSON_MEDIA_TYPE = "application/json"
_DIGITS = re.compile(r"[0-9]+")  # ASCII digits only: int() also reads "+20", "2_0", " 20"
_HOST = re.compile(r"(\[[^\]]*\]|[^\[\]:\s/@]+)(?::([0-9]{1,5}))?")
_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")


class HttpError(Exception):
    """A request refused: the status and message of its JSON answer."""

    def __init__(self, status: int, message: str, headers: Optional[dict] = None,
                 close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.close = close


class HeadTooLarge(Exception):
    """The request line and headers went past the byte budget (414 while still in
    the request line, else 431)."""

    def __init__(self, limit: int, in_request_line: bool) -> None:
        self.in_request_line = in_request_line
        self.status = 414 if in_request_line else 431
        self.message = (f"URI Too Long: the request line is longer than {limit} bytes" if in_request_line
                        else f"the request head (request line and headers) is larger than {limit} bytes")
        super().__init__(self.message)


class DeadlineReader(io.RawIOBase):
    """A connection's raw reads, each bounded by what is left of the current
    request's deadline (set when its first bytes arrive, then `on_request_start` is
    called); between requests a read waits up to `timeout`, as an idle keep-alive
    connection may."""

    def __init__(self, sock: socket.socket, timeout: float, on_request_start: Callable[[], None]) -> None:
        self._sock = sock
        self._timeout = timeout
        self._on_request_start = on_request_start
        self.deadline: Optional[float] = None
        self.deadline_hit = False

    def new_request(self) -> None:
        self.deadline = None
        self.deadline_hit = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:
        limit = self._timeout
        if self.deadline is not None:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                self.deadline_hit = True
                raise TimeoutError("request deadline passed")
            limit = min(limit, remaining)
        self._sock.settimeout(limit)
        try:
            count = self._sock.recv_into(buffer)
        except socket.timeout:
            if self.deadline is not None:
                self.deadline_hit = True
            raise TimeoutError("timed out reading the request") from None
        if count and self.deadline is None:
            self.deadline = time.monotonic() + self._timeout
            self._on_request_start()
        return count


class HeadLimitedReader(io.BufferedReader):
    """Buffered reads of a connection. While a request head is read, readline() (the
    standard library reads the request line and each header with it, allowing 100
    lines of 64 KiB) counts the bytes against `limit` and raises HeadTooLarge past it,
    so a connection never holds more than `limit` bytes of head."""

    def __init__(self, raw: io.RawIOBase, limit: int) -> None:
        super().__init__(raw, buffer_size=64 * 1024)
        self.limit = limit
        self._left: Optional[int] = None
        self._lines = 0

    def start_head(self) -> None:
        self._left, self._lines = self.limit, 0

    def end_head(self) -> None:
        self._left = None

    def readline(self, size: Optional[int] = -1) -> bytes:
        if self._left is None:
            return super().readline(size)
        cap = self._left + 1 if size is None or size < 0 else min(size, self._left + 1)
        line = super().readline(cap)
        self._left -= len(line)
        if self._left < 0:
            raise HeadTooLarge(self.limit, in_request_line=self._lines == 0)
        self._lines += 1
        return line


def allowed_host_names(extra: Iterable[str] = (), bind_host: Optional[str] = None) -> frozenset[str]:
    """The names a request's Host may carry besides IP literals: localhost, this
    machine's name, the bind address when it is a name, and `extra`
    (--allowed-host; a name that is not a host name is an error)."""
    names = {"localhost", _normal(socket.gethostname())}
    if bind_host and not _is_ip(bind_host.strip("[]")):
        names.add(_normal(bind_host))
    for name in extra:
        if not _NAME.fullmatch(_normal(name)):
            raise EdgecastRuntimeError(f"allowed_hosts {name!r} is not a host name "
                                       f"(letters, digits, '-', '_' and dots; no port)", setting="allowed_hosts")
        names.add(_normal(name))
    return frozenset(names)


def check_host(headers: Message, request_version: str, target: str, allowed: frozenset[str],
               client: str) -> None:
    """Refuse (HttpError) a request without exactly one valid Host (400; HTTP/1.0
    may omit it), or naming a host this hub does not answer to (421, logged), in
    Host or in an absolute request target."""
    values = headers.get_all("Host") or []
    if len(values) > 1:
        raise HttpError(400, f"more than one Host header ({len(values)})", close=True)
    if not values and request_version >= "HTTP/1.1":
        raise HttpError(400, "HTTP/1.1 requests need a Host header", close=True)
    authority = urlsplit(target).netloc  # empty but for an absolute target (http://name/path)
    for host in values + ([authority] if authority else []):
        name = _host_name(host)
        if not (_is_ip(name) or name in allowed):
            log_event({"event": "host_refused", "client": client, "host": host[:200]})
            raise HttpError(421, f"this hub does not answer to the host {host[:100]!r}; the hub's "
                                 f"allowed_hosts setting lists the names it serves", close=True)


def declared_length(headers: Message, max_body: int) -> Optional[int]:
    """The body length a request declares (None: no body), refusing what a proxy in
    front could read otherwise: Transfer-Encoding (411), several or non-digit
    Content-Length headers (400); one over `max_body` is 413."""
    if headers.get("Transfer-Encoding") is not None:
        raise HttpError(411, "chunked bodies are not supported; send Content-Length", close=True)
    values = headers.get_all("Content-Length") or []
    if len(values) > 1:
        raise HttpError(400, f"{len(values)} Content-Length headers: send exactly one", close=True)
    if not values:
        return None
    text = values[0].strip(" \t")
    if not _DIGITS.fullmatch(text):
        raise HttpError(400, f"invalid Content-Length: {values[0][:40]!r} (expected digits only)",
                        close=True)
    if len(text) > 18 or int(text) > max_body:
        size = text if len(text) <= 18 else f"{len(text)}-digit number of"
        raise HttpError(413, f"request body of {size} bytes exceeds the limit of {max_body} bytes",
                        close=True)
    return int(text)


def require_json(content_type: Optional[str]) -> None:
    """Refuse (415) a body not declared as JSON; parameters such as charset may follow."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != JSON_MEDIA_TYPE:
        got = f"got {content_type[:60]!r}" if content_type else "got none"
        raise HttpError(415, f"request bodies must be JSON: send 'Content-Type: {JSON_MEDIA_TYPE}' ({got})")


def decode_json(body: bytes) -> object:
    """The JSON document of a request body; 400 when empty, not UTF-8 or malformed."""
    if not body.strip():
        raise HttpError(400, "empty request body: expected JSON")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, "request body is not UTF-8 text") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise HttpError(400, "malformed JSON: nested too deeply") from None
    except ValueError as exc:
        raise HttpError(400, f"malformed JSON: {exc}") from None


def _host_name(host: str) -> str:
    """The name or address in a Host value (`name`, `1.2.3.4`, `[::1]`, each with an
    optional port), lower-case, without a trailing dot; 400 when malformed."""
    match = _HOST.fullmatch(host.strip(" \t"))
    name = match.group(1) if match else ""
    if name.startswith("["):
        name = name[1:-1] if _is_ip(name[1:-1], version=6) else ""
    if not name or (match.group(2) and int(match.group(2)) > 65535):
        raise HttpError(400, f"invalid Host header: {host[:100]!r}", close=True)
    return _normal(name)


def _normal(name: str) -> str:
    return name.strip().lower().removesuffix(".")


def _is_ip(text: str, version: Optional[int] = None) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return version is None or address.version == version
