"""Station ids from data file names: what fleet names a bundle and neighbours name a column."""
from __future__ import annotations

import re
from pathlib import Path

from .errors import DataError

DATA_SUFFIXES = (".csv", ".csv.gz")
FILE_NAME_PREFIXES = ("PRSA_Data_",)  # archive prefixes that say nothing about the station


def station_from_file_name(path: Path) -> str:
    """PRSA_Data_Changping_20130301-20170228.csv.gz -> changping: the name without its
    suffixes, archive prefix and trailing date range."""
    path = Path(path)
    name = path.name
    for suffix in sorted(DATA_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    for prefix in FILE_NAME_PREFIXES:
        name = name[len(prefix):] if name.startswith(prefix) else name
    name = re.sub(r"[_-]\d{8}-\d{8}$", "", name)
    return safe_station_id(name.lower(), path)


def safe_station_id(text: str, path: Path) -> str:
    """A folder name: letters, digits, '-', '_' and '.' (other characters become '-')."""
    station = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    if not station:
        raise DataError(f"{path}: no usable station id in {text!r}")
    return station
