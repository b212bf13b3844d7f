"""`edgecast train NEW.csv --from FLEET` and `edgecast train --from FLEET --station NEW`: a
new station's bundle from a fleet's global model (edgecast/trainer/newcomer.py)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecast import options
from edgecast.trainer.errors import DataError
from edgecast.trainer.reports import Metrics
from edgecast.trainer.settings import MODELS_DIR

from .api import EpochHook, Progress, default_bundle_name, read_options


@dataclass(frozen=True)
class StartResult:
    bundle: Path
    how: str  # what was done: fine-tuned (and how scaled), or the unknown identity, and why
    fine_tuned: bool
    metrics: Metrics  # the station's own test split; for the unknown identity, the network's test windows
    windows: dict[str, int] | None  # the station's train/val/test windows, when it has a split


@options.keywords(*options.START_FROM)
def start_from(
    fleet: str | Path,
    data: str | Path | Sequence[str | Path] | None = None,
    *,
    station: str | None = None,
    name: str | None = None,
    models_dir: str | Path = MODELS_DIR,
    progress: Progress | None = None,
    on_epoch: EpochHook | None = None,
    **settings: Any,
) -> StartResult:
    """The bundle `models_dir/name` (default: the station, else the file's name) of a station
    that starts from `fleet`'s global model: with `data` (its history, read like `train`
    reads a file, in the fleet's clock unless given) fine-tuned on it where it allows, with
    none the global model under the unknown identity. `target` and `features` must be the
    fleet's (they default to them)."""
    from edgecast.trainer.bundle import read_bundle
    from edgecast.trainer.data import load_csv
    from edgecast.trainer.newcomer import read_fleet, start_station

    found = read_fleet(fleet)
    spec = found.unknown.spec
    given = dict(settings)
    if given.get("target") is None:
        given["target"] = spec.target
    if not given.get("features"):
        given["features"] = list(spec.features[1:])
    if given.get("clock") is None:
        given["clock"] = found.record.get("settings", {}).get("clock")
    chosen = options.values(given, options.START_FROM)
    if chosen["target"] != spec.target:
        raise DataError(f"{fleet}: its global model forecasts {spec.target}, not {chosen['target']}",
                        settings=("target",))
    files = [] if data is None else [data] if isinstance(data, (str, Path)) else list(data)
    if not files and not station:
        raise DataError("give the new station's file, or its station name when it has no history yet",
                        settings=("station",))
    options.check_folder_name(name) if name is not None else options.check_folder_name(station, "station")
    out_dir = Path(models_dir) / (name or station or default_bundle_name(files[0]))
    series = None
    if files:
        series = load_csv(files if len(files) > 1 else files[0], chosen["target"], list(chosen["features"]),
                          max_gap=found.config.max_gap, options=read_options(chosen))
        for note in series.notes():
            _say(progress, f"note: {note}")
    started = start_station(found, series, station or out_dir.name, out_dir, on_epoch)
    bundle = read_bundle(started.bundle)
    windows = started.result.training["split"]["windows"] if started.result is not None else None
    return StartResult(bundle.path, started.how, started.result is not None,
                       Metrics.from_dict(bundle.metrics), windows)


def _say(progress: Progress | None, line: str) -> None:
    if progress is not None:
        progress(line)
