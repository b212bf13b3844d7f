"""The network's readings archive: `edgecast collect` writes it (collector.py), fleets train on it.

    from edgecast.archive import read_station, time_range
    frame = read_station("archive", "changping", time_range("2016-01-01", "2017-01-01"))

Layout and rules: partitions.py; the journal that makes acknowledgement safe: journal.py;
what a reading message is: payloads.py.
"""
from __future__ import annotations

from .errors import ArchiveError
from .reading import TimeRange, export_stations, is_archive, read_station, time_range

__all__ = ["ArchiveError", "TimeRange", "export_stations", "is_archive", "read_station", "time_range"]
