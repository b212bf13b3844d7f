"""MQTT authentication and TLS for a paho-mqtt client.

The password comes from a file or from an environment variable, never from the
command line, where `ps` shows it to every user of the hub. TLS verifies the broker
against a CA file (the broker's certificate must name the host connected to); a client
certificate and key are optional, for brokers that require one. paho-mqtt itself is
not imported here: the caller passes its client.
"""

from __future__ import annotations

import os
import socket
import ssl
from pathlib import Path
from typing import Any, Optional

from edgecast_runtime.errors import BrokerSecurityError, EdgecastRuntimeError


def read_password(password_file: str | Path | None = None, password_env: Optional[str] = None) -> Optional[str]:
    """The password from `password_file` (its first line) or from the environment
    variable named `password_env`; None when neither is given."""
    if password_file is not None and password_env is not None:
        raise BrokerSecurityError("give the MQTT password by file or by environment variable, not both")
    if password_file is not None:
        try:
            text = Path(password_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise BrokerSecurityError(f"cannot read the MQTT password file {password_file}: "
                                      f"{exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise BrokerSecurityError(f"the MQTT password file {password_file} is not UTF-8 text") from None
        password = text.splitlines()[0] if text else ""
        if not password:
            raise BrokerSecurityError(f"the MQTT password file {password_file} is empty")
        return password
    if password_env is not None:
        password = os.environ.get(password_env)
        if not password:
            raise BrokerSecurityError(f"the environment variable {password_env} (the MQTT password) "
                                      f"is not set or empty")
        return password
    return None


def configure_client(client: Any, *, username: Optional[str] = None, password_file: str | Path | None = None,
                     password_env: Optional[str] = None, ca_file: str | Path | None = None,
                     cert_file: str | Path | None = None, key_file: str | Path | None = None,
                     tls: bool = False) -> None:
    """Set a paho-mqtt client's credentials and TLS before it connects. TLS is on with
    `tls`, or when a CA file or a client certificate is given; without a CA file the
    system's CAs verify the broker. Raises BrokerSecurityError naming the file or option at fault."""
    password = read_password(password_file, password_env)
    if password is not None and not username:
        raise BrokerSecurityError("an MQTT password was given without a user name")
    if username:
        client.username_pw_set(username, password)
    if key_file is not None and cert_file is None:
        raise BrokerSecurityError("an MQTT client key was given without its certificate")
    if ca_file is None and cert_file is None and not tls:
        return
    for label, path in (("CA file", ca_file), ("client certificate", cert_file), ("client key", key_file)):
        if path is not None and not os.access(path, os.R_OK):
            raise BrokerSecurityError(f"cannot read the MQTT {label} {path}")
    try:
        client.tls_set(ca_certs=_text(ca_file), certfile=_text(cert_file), keyfile=_text(key_file),
                       cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    except (ssl.SSLError, OSError) as exc:
        raise BrokerSecurityError(f"cannot use the MQTT TLS files (CA {ca_file}, certificate {cert_file}, "
                                  f"key {key_file}): {exc}") from None


def _text(path: str | Path | None) -> Optional[str]:
    return None if path is None else str(path)


DEFAULT_PORT = 1883  # MQTT's own port; 8883 is the usual TLS one


def parse_broker(text: str) -> tuple[str, int]:
    """HOST, HOST:PORT, [IPv6] or [IPv6]:PORT."""
    host, port = text.strip(), DEFAULT_PORT
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            raise EdgecastRuntimeError(f"broker address {text!r}: missing ']'")
        host, rest = host[1:end], host[end + 1:]
        if rest.startswith(":"):
            port = _broker_port(text, rest[1:])
        elif rest:
            raise EdgecastRuntimeError(f"broker address {text!r}: expected [HOST]:PORT")
    elif host.count(":") == 1:
        host, port_text = host.split(":")
        port = _broker_port(text, port_text)
    if not host:
        raise EdgecastRuntimeError(f"broker address {text!r}: missing host")
    return host, port


def _broker_port(text: str, port_text: str) -> int:
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise EdgecastRuntimeError(f"broker address {text!r}: bad port {port_text!r}")
    return int(port_text)


def no_delay(client: Any) -> None:
    """TCP_NODELAY on the broker connection: an answer is one small packet, and Nagle's
    algorithm held it back behind the broker's delayed ACK (back-to-back readings were
    answered in 87 ms median instead of a few, benchmarks/shadow.py)."""
    sock = client.socket()
    try:
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass  # not TCP (a UNIX socket, a websocket wrapper): nothing to tune
