"""The archive's errors: one line for the user, naming the settings at fault."""
from __future__ import annotations

from edgecast.base import EdgecastError


class ArchiveError(EdgecastError):
    """An archive that cannot be read or written, or a setting of the collector that is wrong."""


class CollectorBrokerError(ArchiveError):
    """The broker cannot be reached, refuses the collector, or its settings are wrong."""
