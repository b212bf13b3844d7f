"""The command line's MQTT connection options, shared by every command that talks to the
broker (`edgecast release`, `fleet status`, `collect`): one spelling, one help text."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from edgecast.release.broker import BrokerSettings

BrokerOption = Annotated[str, typer.Option("--broker", help="MQTT broker HOST[:PORT].")]
UsernameOption = Annotated[Optional[str], typer.Option("--username", help="MQTT user name.")]
PasswordFileOption = Annotated[Optional[str], typer.Option(
    "--password-file", help="MQTT password: the file's first line (never on the command line).")]
PasswordEnvOption = Annotated[Optional[str], typer.Option(
    "--password-env", help="MQTT password: the environment variable of this name.")]
CaFileOption = Annotated[Optional[str], typer.Option("--ca-file", help="TLS: verify the broker with this CA.")]
CertFileOption = Annotated[Optional[str], typer.Option("--cert-file", help="TLS: client certificate.")]
KeyFileOption = Annotated[Optional[str], typer.Option("--key-file", help="TLS: the client certificate's key.")]
TlsOption = Annotated[bool, typer.Option("--tls", help="TLS with the system's CAs.")]


def broker_settings(broker: str, username: str | None, password_file: str | None, password_env: str | None,
                    ca_file: str | None, cert_file: str | None, key_file: str | None, tls: bool) -> BrokerSettings:
    return BrokerSettings(broker, username, password_file, password_env, ca_file, cert_file, key_file, tls)
