"""`edgecast collect`: a thin typer layer over edgecast.archive.collector."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgecast.broker_options import (
    BrokerOption,
    CaFileOption,
    CertFileOption,
    KeyFileOption,
    PasswordEnvOption,
    PasswordFileOption,
    TlsOption,
    UsernameOption,
    broker_settings,
)

from .settings import DEFAULT_COMPACT_SECONDS, DEFAULT_TOPIC


def collect(
    broker: BrokerOption,
    archive: Annotated[Path, typer.Option("--archive", help="Archive folder: ARCHIVE/station=ID/month=YYYY-MM/"
                                                            "readings.parquet.")],
    topic: Annotated[Optional[list[str]], typer.Option(
        "--topic", help=f"Readings topic filter (repeat); its '+' level is the station id "
                        f"(default: {DEFAULT_TOPIC}, where hubs publish their readings).")] = None,
    retention: Annotated[Optional[str], typer.Option(
        "--retention", help="Keep whole months newer than this: 400d, 12h, 90m, 3600s (default: keep all).")] = None,
    client_id: Annotated[Optional[str], typer.Option(
        "--client-id", help="MQTT client id; the broker keeps the readings for it while the collector is down "
                            "(default: stable per machine and archive).")] = None,
    compact_every: Annotated[float, typer.Option(
        "--compact-every", min=0.1, help="Seconds between moving the journal into the Parquet partitions.")]
        = DEFAULT_COMPACT_SECONDS,
    username: UsernameOption = None, password_file: PasswordFileOption = None, password_env: PasswordEnvOption = None,
    ca_file: CaFileOption = None, cert_file: CertFileOption = None, key_file: KeyFileOption = None,
    tls: TlsOption = False,
) -> None:
    """Archive the readings the hubs publish, by station and month, in Parquet; until SIGTERM/SIGINT.

    A reading is acknowledged to the broker only once it is on disk (a write-ahead journal,
    fsynced), so a crash loses none; a repeated reading adds no row. Logs are JSON lines on stderr.
    """
    from edgecast_runtime.lifecycle import on_signals

    from .collector import Collector, CollectSettings

    settings = CollectSettings(archive, tuple(topic or (DEFAULT_TOPIC,)), _retention(retention), client_id,
                               compact_every)
    collector = Collector(settings, broker_settings(broker, username, password_file, password_env, ca_file,
                                                    cert_file, key_file, tls))
    on_signals({"SIGTERM": collector.stop, "SIGINT": collector.stop})
    collector.run()


def _retention(text: str | None):
    from edgecast.release.errors import SigningError
    from edgecast.release.rollout import parse_duration

    from .errors import ArchiveError

    if text is None:
        return None
    try:
        return parse_duration(text)
    except SigningError as exc:
        raise ArchiveError(f"retention: {exc}", settings=("retention",)) from None
