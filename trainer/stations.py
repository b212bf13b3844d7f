"""Station ids from data file names: what fleet names a bundle and neighbours name a column.

Ids are normalised one way everywhere (file names, a station column, NAME=FILE): lower
case, and any run of characters other than letters, digits, '.', '_' and '-' becomes '-'.
So `Changping`, `CHANGPING` and `changping` are one station.
"""
from __future__ import annotations

import re
from pathlib import Path

from .errors import DataError

DATA_SUFFIXES = (".csv", ".csv.gz")
FILE_NAME_PREFIXES = ("PRSA_Data_",)  # archive prefixes that say nothing about the station (any case)
# Trailing date ranges: _20130301-20170228 (UCI multi-site) and _2010.1.1-2014.12.31 (UCI Beijing PM2.5).
DATE_RANGE = re.compile(r"(^|[_-])(\d{8}-\d{8}|\d{4}\.\d{1,2}\.\d{1,2}-\d{4}\.\d{1,2}\.\d{1,2})$")
NAMED = "="  # STATION=FILE names a file's station


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
        name = name[len(prefix):] if name.lower().startswith(prefix.lower()) else name
    name = DATE_RANGE.sub("", name)
    return safe_station_id(name, path)


def safe_station_id(text: str, path: Path) -> str:
    """A folder name: lower-case letters, digits, '-', '_' and '.' (other characters become '-')."""
    station = re.sub(r"[^a-z0-9._-]+", "-", text.strip().lower()).strip("-.")
    if not station:
        raise DataError(f"{path}: no usable station id in {text!r}; name the station: STATION={path}")
    return station


def named_file(entry: str | Path) -> tuple[str | None, Path]:
    """(station, path) of a data argument: `STATION=FILE` names the station, a plain path
    (or a path that exists as written, '=' and all) does not (station None)."""
    text = str(entry)
    if NAMED not in text or Path(text).exists():
        return None, Path(text)
    name, path = text.split(NAMED, 1)
    if not path:
        raise DataError(f"{text}: no file after '{NAMED}' (STATION=FILE)")
    return safe_station_id(name, Path(path)), Path(path)


def station_of(entry: str | Path) -> tuple[str, Path]:
    """(station, path): the name given as STATION=FILE, else the one from the file name."""
    station, path = named_file(entry)
    return station or station_from_file_name(path), path
