"""The bearer token of `serve`: read from a file (never the command line, where `ps`
shows it; owner-only), required on every endpoint except /healthz (which says only
"ok" or "degraded" without it), and required at all when the
server listens beyond loopback, unless the operator states the network is trusted."""

from __future__ import annotations

import hmac
import ipaddress
import os
import stat
from pathlib import Path
from typing import Optional

from edgecast_runtime.errors import EdgecastRuntimeError

OPEN_PATHS = ("/healthz",)  # a load balancer's probe carries no credentials
MIN_TOKEN_CHARS = 16
MAX_TOKEN_FILE_BYTES = 4096


def read_token(token_file: str | Path) -> str:
    """The token: the file's first line, at least MIN_TOKEN_CHARS characters. The file
    must be a regular file (a FIFO is refused at once, never waited on) that only its
    owner may read or write (mode 0600 or 0400; a 0644 file leaks the token to every
    user of the hub)."""
    try:
        descriptor = os.open(token_file, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        raise EdgecastRuntimeError(f"cannot read the token file {token_file}: {exc.strerror or exc}",
                                   setting="token_file") from None
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise EdgecastRuntimeError(f"the token file {token_file} is not a regular file (a FIFO, "
                                       f"device, socket or folder)", setting="token_file")
        if info.st_mode & 0o077:
            raise EdgecastRuntimeError(f"the token file {token_file} is open to other users (mode "
                                       f"{stat.S_IMODE(info.st_mode):04o}): chmod 600 {token_file}",
                                       setting="token_file")
        data = os.read(descriptor, MAX_TOKEN_FILE_BYTES + 1)
    except OSError as exc:
        raise EdgecastRuntimeError(f"cannot read the token file {token_file}: {exc.strerror or exc}",
                                   setting="token_file") from None
    finally:
        os.close(descriptor)
    if len(data) > MAX_TOKEN_FILE_BYTES:
        raise EdgecastRuntimeError(f"the token file {token_file} is larger than {MAX_TOKEN_FILE_BYTES} bytes",
                                   setting="token_file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise EdgecastRuntimeError(f"the token file {token_file} is not UTF-8 text", setting="token_file") from None
    token = text.splitlines()[0].strip() if text.strip() else ""
    if len(token) < MIN_TOKEN_CHARS:
        raise EdgecastRuntimeError(f"the token in {token_file} is shorter than {MIN_TOKEN_CHARS} "
                                   f"characters (make one with: openssl rand -hex 32)", setting="token_file")
    return token


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def serve_token(host: str, token_file: str | Path | None = None, trusted_network: bool = False) -> Optional[str]:
    """The token `serve` requires (None: none), refusing to listen beyond loopback
    without one unless `trusted_network`."""
    if token_file is not None:
        return read_token(token_file)
    if not is_loopback(host) and not trusted_network:
        raise EdgecastRuntimeError(f"serve on {host} (beyond loopback) needs token_file FILE "
                                   f"(a bearer token clients must send), or trusted_network "
                                   f"to serve without one", setting=("token_file", "trusted_network"))
    return None


def authorized(path: str, header: Optional[str], token: Optional[str]) -> bool:
    """Whether a request to `path` with this Authorization header may proceed."""
    return path in OPEN_PATHS or carries_token(header, token)


def carries_token(header: Optional[str], token: Optional[str]) -> bool:
    """Whether this Authorization header carries the token (always, when none is
    required). An open path (/healthz) shows its details only to such a request."""
    if token is None:
        return True
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
