"""Which stations a fleet run covers: data files from paths, folders and globs, a station
id per file, and the fingerprint that says whether a station's bundle is up to date."""
from __future__ import annotations

import glob
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edgecast.exporter.settings import DEFAULT_OPSET
from edgecast.trainer.errors import DataError
from edgecast.trainer.settings import TrainConfig
from edgecast.trainer.stations import (  # noqa: F401  (part of this module's API)
    DATA_SUFFIXES,
    FILE_NAME_PREFIXES,
    named_file,
    safe_station_id,
    station_from_file_name,
)

if TYPE_CHECKING:
    from edgecast.trainer.data import ReadOptions

NEIGHBOURS_ALL = "all"
FAILED = "failed"  # a station's status in the run record (fleet/run.py)
# How a global fleet's failure kept from the last run ends (so the next does not add it twice).
KEPT_FAILURE = " (as in the last run, on the same files and settings: --force retries it)"
STATION_RECORD = "fleet-station.json"  # written into each bundle, last, before it is swapped in


@dataclass
class FleetSettings:
    """Everything that decides a station's model: same settings and same data, same bundle."""

    target: str
    features: list[str] = field(default_factory=list)
    time_column: str | None = None
    clock: str | None = None
    config: TrainConfig = field(default_factory=TrainConfig)
    export: bool = False
    quantize: list[str] = field(default_factory=list)
    builtin_ops: bool = False
    opset: int = DEFAULT_OPSET
    neighbours: str | None = None  # "all", or K: the K stations whose target correlates most (training split)
    neighbour_features: list[str] = field(default_factory=list)  # default: the target
    neighbour_files: dict[str, str] = field(default_factory=dict)  # every station's file -> sha256
    # How the files are read, beyond time_column and clock (edgecast.trainer.data.ReadOptions).
    time_unit: str | None = None
    time_format: str | None = None
    dayfirst: bool = False
    delimiter: str | None = None
    decimal: str | None = None
    valid_ranges: dict[str, tuple] = field(default_factory=dict)  # {column: (min or None, max or None)}
    tflite: bool = True  # with export: model.tflite too
    neighbour_ids: dict[str, str] = field(default_factory=dict)  # every station's file -> its station id
    # One network for every station (trainer/global_model.py); `network` is every station's
    # data sha256, so a change to any station's data retrains them all.
    global_model: bool = False
    network: dict[str, str] = field(default_factory=dict)

    def neighbour_count(self) -> int | None:
        """None for every other station, else K."""
        if self.neighbours in (None, NEIGHBOURS_ALL):
            return None
        if not self.neighbours.isdigit() or int(self.neighbours) < 1:
            raise DataError(f"neighbours must be 'all' or a whole number of at least 1, got {self.neighbours!r}",
                            settings=("neighbours",))
        return int(self.neighbours)

    def read_options(self) -> ReadOptions:
        from edgecast.trainer.data import ReadOptions

        return ReadOptions(time_column=self.time_column, time_unit=self.time_unit, time_format=self.time_format,
                           dayfirst=self.dayfirst, clock=self.clock, delimiter=self.delimiter, decimal=self.decimal,
                           valid_ranges=dict(self.valid_ranges))

    def as_dict(self) -> dict:
        return {**asdict(self), "config": asdict(self.config)}

    def fingerprint_dict(self) -> dict:
        """as_dict() without the settings added after fleets were first written while they
        keep their defaults: a fleet trained before they existed stays up to date."""
        settings = self.as_dict()
        for name in ADDED_LATER:
            if settings[name] == asdict(FleetSettings(self.target))[name]:
                del settings[name]
        return settings


# FleetSettings fields that older fingerprints do not have (see fingerprint_dict).
ADDED_LATER = ("time_unit", "time_format", "dayfirst", "delimiter", "decimal", "valid_ranges", "tflite", "global_model",
               "network")


@dataclass
class Station:
    station: str
    data: Path  # absolute: remote workers do not share the driver's working directory
    sha256: str  # of its file; of several files, edgecast.trainer.joining.data_sha256
    files: list[Path] = field(default_factory=list)  # several files (yearly exports), joined in time order

    def __post_init__(self) -> None:
        self.files = list(self.files) or [self.data]

    @property
    def source(self) -> str:
        return " + ".join(map(str, self.files))

    def fingerprint(self, settings: FleetSettings) -> str:
        payload = json.dumps({"data_sha256": self.sha256, "settings": settings.fingerprint_dict()}, sort_keys=True,
                             default=str)
        return hashlib.sha256(payload.encode()).hexdigest()


def data_files(sources: list[str | Path]) -> list[tuple[str | None, Path]]:
    """(station or None, file): files named directly (STATION=FILE names the station),
    every CSV/CSV.gz in a named folder, and glob matches; in a stable order."""
    found: dict[Path, str | None] = {}
    for source in map(str, sources):
        name, named = named_file(source)
        if name is not None:
            if not named.is_file():
                raise DataError(f"{source}: no such file ({name}=FILE names one file)")
            paths = [named]
        elif glob.has_magic(source):
            matches = [Path(p) for p in sorted(glob.glob(source, recursive=True))]
            if not matches:
                raise DataError(f"{source}: no file matches")
            paths = [p for p in matches if p.is_file()]
        elif Path(source).is_dir():
            paths = sorted(p for p in Path(source).iterdir() if p.is_file() and _is_data(p))
            if not paths:
                raise DataError(f"{source}: no .csv or .csv.gz file in this folder")
        elif Path(source).is_file():
            paths = [Path(source)]
        else:
            raise DataError(f"{source}: no such file or folder")
        for path in paths:
            if name is not None or path.resolve() not in found:
                found[path.resolve()] = name
    return [(name, path) for path, name in found.items()]


def _is_data(path: Path) -> bool:
    return path.name.lower().endswith(DATA_SUFFIXES)


def station_from_column(path: Path, column: str) -> str:
    """The one value of `column` (found whatever its case) in the file (one station per file)."""
    import pandas as pd  # here: `edgecast --help` need not load it

    from edgecast.trainer.dialect import sniff

    sep = sniff(path).delimiter  # a `;` export names its station too
    try:
        header = [str(c).strip() for c in pd.read_csv(path, nrows=0, sep=sep, encoding="utf-8-sig").columns]
        same = [c for c in header if c.casefold() == column.casefold()]
        if len(same) > 1 and column not in same:
            raise DataError(f"{path}: station column {column!r} is ambiguous: {', '.join(same)} differ only in case",
                            settings=("station_column",))
        found = column if column in header else (same[0] if same else column)
        values = pd.read_csv(path, usecols=lambda c: str(c).strip() == found, dtype=str, sep=sep, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    if values.shape[1] != 1:
        raise DataError(f"{path}: no column {column!r} for the station id; columns are: {', '.join(header[:20])}",
                        settings=("station_column",))
    values = values.iloc[:, 0].dropna().map(str.strip).unique()
    if len(values) != 1:
        shown = ", ".join(sorted(values)[:5]) or "none"
        raise DataError(f"{path}: column {found!r} holds {len(values)} station ids ({shown}); give one file per station")
    return safe_station_id(str(values[0]), path)


def find_stations(sources: list[str | Path], station_column: str | None) -> tuple[list[Station], dict[str, DataError]]:
    """(stations, files that could not be named): a file whose id cannot be read fails alone.
    An id is STATION of STATION=FILE, else the station column's value, else the file
    name's (normalised: see trainer/stations.py). Several files naming the same station
    (yearly exports) are that station's data, joined in time order when it is trained
    (trainer/joining.py: overlapping rows must be identical)."""
    from edgecast.trainer.joining import data_sha256

    unnamed: dict[str, DataError] = {}
    seen: dict[str, list[Path]] = {}
    for name, path in data_files(sources):
        try:
            station = name or (station_from_column(path, station_column) if station_column
                               else station_from_file_name(path))
        except DataError as exc:
            unnamed[str(path)] = exc
            continue
        seen.setdefault(station, []).append(path)
    stations = []
    for station, paths in seen.items():
        paths = sorted(paths, key=str) if len(paths) > 1 else paths
        stations.append(Station(station, paths[0], data_sha256(paths), paths))
    return stations, unnamed


def up_to_date(bundle: Path, station: Station, settings: FleetSettings) -> bool:
    """True when the bundle was written from this very data with these very settings."""
    try:
        record = json.loads((bundle / STATION_RECORD).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("fingerprint") == station.fingerprint(settings)


def failed_last_time(run_record: Path, settings: FleetSettings, todo: list[Station]) -> dict[str, tuple[str, list]]:
    """(error, error settings) of each station of `todo` whose own file failed in the last run
    (`run_record`) with these very settings: for a global model they hold every station's
    sha256, so the files are the same too. Its failure would come again, and retrying it
    would retrain the whole network for nothing. A failure of the network itself
    ("global model: ...") is not kept."""
    try:
        record = json.loads(run_record.read_text())
        if record["settings"] != json.loads(json.dumps(settings.as_dict())):
            return {}
        failed = {s["station"]: s for s in record["stations"] if s["status"] == FAILED}
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    kept = {}
    for station in todo:
        error = (failed.get(station.station) or {}).get("error")
        if error and not error.startswith("global model:"):
            kept[station.station] = (error.removesuffix(KEPT_FAILURE) + KEPT_FAILURE,
                                     list(failed[station.station].get("error_settings") or []))
    return kept
