"""The bearer token of `serve`: read from a file (never the command line, where `ps`
shows it), required on every endpoint except /healthz, and required at all when the
server listens beyond loopback, unless the operator states the network is trusted."""

from __future__ import annotations

import hmac
import ipaddress
from pathlib import Path
from typing import Optional

from edgecast_runtime.errors import EdgecastRuntimeError

OPEN_PATHS = ("/healthz",)  # a load balancer's probe carries no credentials
MIN_TOKEN_CHARS = 16


def read_token(token_file: str | Path) -> str:
    """The token: the file's first line, at least MIN_TOKEN_CHARS characters."""
    try:
        text = Path(token_file).read_text(encoding="utf-8")
    except OSError as exc:
        raise EdgecastRuntimeError(f"cannot read the token file {token_file}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise EdgecastRuntimeError(f"the token file {token_file} is not UTF-8 text") from None
    token = text.splitlines()[0].strip() if text.strip() else ""
    if len(token) < MIN_TOKEN_CHARS:
        raise EdgecastRuntimeError(f"the token in {token_file} is shorter than {MIN_TOKEN_CHARS} "
                                   f"characters (make one with: openssl rand -hex 32)")
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
    if token is None or path in OPEN_PATHS:
        return True
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
