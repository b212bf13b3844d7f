"""The archive's defaults and names, importable without pandas or paho (for `--help`)."""
from __future__ import annotations

DEFAULT_TOPIC = "edgecast/readings/+"  # what hubs publish with --publish-readings (neighbours.READINGS_TOPIC)
DEFAULT_COMPACT_SECONDS = 300.0
EXPORT_FOLDER = ".archive"  # in a fleet folder: the station files made from an archive
