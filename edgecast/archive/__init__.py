"""The network's readings archive: `edgecast collect` writes it (collector.py), fleets train on it.

    from edgecast.archive import read_station, time_range
    frame = read_station("archive", "changping", time_range("2016-01-01", "2017-01-01"))

Layout and rules: partitions.py; the journal that makes acknowledgement safe: journal.py;
what a reading message is: payloads.py. Importing the package loads neither pandas nor
pyarrow (the command line's `--help` stays quick): the names below load on first use.
"""
from __future__ import annotations

from typing import Any

__all__ = ["ArchiveError", "TimeRange", "export_stations", "is_archive", "read_station", "time_range"]


def __getattr__(name: str) -> Any:
    if name == "ArchiveError":
        from .errors import ArchiveError

        return ArchiveError
    if name in __all__:
        from . import reading

        return getattr(reading, name)
    raise AttributeError(f"module 'edgecast.archive' has no attribute {name!r}")
