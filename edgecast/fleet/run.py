"""A fleet run: find the stations, skip the up-to-date ones, run the rest as Ray tasks.

Ray is the engine: `ray.init()` starts the embedded local cluster (listening on loopback
only: `_loopback_only`), an address joins a real one. The driver only keeps at most `workers` tasks in flight (so `--workers` caps
the parallelism even on a bigger cluster) and records each result as it arrives.
"""
from __future__ import annotations

import fcntl
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from edgecast import options
from edgecast.archive.settings import EXPORT_FOLDER
from edgecast.base import EdgecastError, write_json_atomic
from edgecast.trainer.settings import MODELS_DIR, TrainConfig
from edgecast_runtime.manifest import file_sha256

if TYPE_CHECKING:
    import ray

from .settings import DEFAULT_FLEET_NAME, DEFAULT_GLOBAL
from .stations import FAILED, FleetSettings, Station, failed_last_time, find_stations, up_to_date
from .work import STAGING, one_line, station_task

RUN_RECORD = "fleet-run.json"
LOCK_FILE = ".fleet.lock"
LOCAL_OBJECT_STORE_BYTES = 128 * 1024**2  # results are small dicts; Ray's default reserves 30 % of RAM
# Rewriting the record after every station would write O(stations^2) bytes on a big fleet.
RECORD_EVERY_SECONDS = 5.0
TRAINED, SKIPPED = "trained", "skipped"
RAY_CLUSTER_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": a one-machine Ray on loopback (_loopback_only)


class FleetError(EdgecastError):
    """The run as a whole cannot go ahead (no stations, cluster unreachable, folder busy)."""


@dataclass
class StationResult:
    station: str
    data: str
    status: str  # trained, skipped or failed
    error: str | None = None
    error_settings: list[str] = field(default_factory=list)  # the settings the error names (EdgecastError.settings)
    seconds: float | None = None  # the whole task: load, train, export, verify, write
    train_seconds: float | None = None
    export_seconds: float | None = None
    peak_rss_mb: float | None = None  # of the Ray worker process that ran it, over its life so far
    host: str | None = None
    pid: int | None = None
    threads: int | None = None
    notices: list[str] = field(default_factory=list)  # e.g. a neighbour left out, and why


@dataclass
class FleetResult:
    folder: Path
    stations: list[StationResult] = field(default_factory=list)
    wall_seconds: float = 0.0
    ray_init_seconds: float | None = None  # None: nothing to run, Ray was not started
    workers: int = 0
    address: str | None = None

    def count(self, status: str) -> int:
        return sum(1 for s in self.stations if s.status == status)

    @property
    def failed(self) -> list[StationResult]:
        return [s for s in self.stations if s.status == FAILED]

    def summary_line(self) -> str:
        return (f"fleet {self.folder}: {self.count(TRAINED)} trained, {self.count(SKIPPED)} skipped, "
                f"{self.count(FAILED)} failed of {len(self.stations)} stations in {self.wall_seconds:.1f} s "
                f"({self.workers} worker{'s' if self.workers != 1 else ''})")


Event = Callable[[str, object], None]  # ("start", (total, skipped)) then ("station", StationResult)


@options.keywords(*options.FLEET)
def train(
    data: list[str | Path],
    target: str,
    *,
    config: TrainConfig | None = None,
    station_column: str | None = None,
    name: str = DEFAULT_FLEET_NAME,
    models_dir: str | Path = MODELS_DIR,
    export: bool = False,
    address: str | None = None,
    workers: int | None = None,
    cpus_per_task: int = 1,
    force: bool = False,
    neighbours: str | None = None,
    since: str | None = None,
    until: str | None = None,
    global_model: bool = DEFAULT_GLOBAL,
    on_event: Event | None = None,
    **settings: Any,
) -> FleetResult:
    """Train (and with `export`, export and verify) one bundle per station under models_dir/name/STATION.

    `data`: files, folders and globs; `STATION=FILE` names a file's station (else the
    `station_column`'s value, found in any case, else the file name's id; ids lower-cased);
    an archive folder (`edgecast collect`): each station's readings from `since`
    (inclusive) to `until` (exclusive; ISO 8601, UTC without an offset), written as station
    files into the fleet folder's .archive/ (edgecast/archive/reading.py).

    Every training and reading option of `edgecast.train` is a keyword here, with the same
    default, and so are the export options of `edgecast.export` that apply with `export`
    (the option table, edgecast/options.py; the signature lists them); each station is read
    and trained with them. `config`: a TrainConfig for the training options not given as
    keywords. `neighbours`: "all" (every other station's readings are inputs) or K (the K
    whose target correlates most with the station's on its training split). A neighbour file
    that cannot be read or aligned is left out of the others' inputs (StationResult.notices
    says so); only its own station fails.

    `global_model`: one network for every station (trainer/global_model.py), trained in one
    task on every worker's CPUs; each station still gets its own ordinary bundle, and the
    fleet keeps the network for new stations under FLEET/.global/ (`train --from`)."""
    started = time.perf_counter()
    settings = fleet_settings(target, config, export, neighbours, settings)
    _check(settings, workers, cpus_per_task)
    settings.neighbour_count()  # a bad --neighbours fails here
    from edgecast.archive.reading import station_files  # pandas: not for `edgecast --help`

    options.check_folder_name(name)
    fleet_dir = (Path(models_dir) / name).resolve()
    data = station_files(list(data), fleet_dir / EXPORT_FOLDER, since, until)  # archives: their stations' files
    stations, unnamed = find_stations(data, station_column)  # before any folder is made: a typo makes none
    if global_model:
        if neighbours:
            raise FleetError("a global model does not read neighbours yet: train it without them",
                             settings=("neighbours",))
        settings.global_model, settings.network = True, {s.station: s.sha256 for s in stations}
    if neighbours:
        settings.neighbour_files = {str(f): file_sha256(f) if len(s.files) > 1 else s.sha256
                                    for s in stations for f in s.files}
        settings.neighbour_ids = {str(f): s.station for s in stations for f in s.files}
    fleet_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(fleet_dir):
        shutil.rmtree(fleet_dir / STAGING, ignore_errors=True)  # left by a killed run; we hold the lock
        result = FleetResult(fleet_dir, address=address)
        result.stations += [StationResult(Path(path).name, path, FAILED, str(error), list(error.settings))
                            for path, error in unnamed.items()]
        todo = []
        for station in stations:
            if not force and up_to_date(fleet_dir / station.station, station, settings):
                result.stations.append(StationResult(station.station, station.source, SKIPPED))
            else:
                todo.append(station)
        if global_model and todo:  # one network: any change retrains every station
            again = failed_last_time(fleet_dir / RUN_RECORD, settings, todo)
            if len(again) == len(todo):  # nothing the network reads has changed
                result.stations += [StationResult(s.station, s.source, FAILED, *again[s.station]) for s in todo]
                todo = []
            else:
                todo, result.stations = stations, [s for s in result.stations if s.status != SKIPPED]
        _emit(on_event, "start", (len(stations) + len(unnamed), len(result.stations)))
        for done in result.stations:
            _emit(on_event, "station", done)
        if todo:
            _run_on_ray(todo, settings, fleet_dir, result, address, workers, cpus_per_task, on_event, started)
        shutil.rmtree(fleet_dir / STAGING, ignore_errors=True)
        result.wall_seconds = round(time.perf_counter() - started, 3)
        _write_run_record(fleet_dir, settings, result)
    return result


def fleet_settings(target: str, config: TrainConfig | None, export: bool, neighbours: str | None,
                   given: dict[str, Any]) -> FleetSettings:
    from edgecast.api import read_options

    chosen = options.values({**given, "target": target}, options.FLEET)
    read = read_options(chosen)  # a bad valid range fails here, before any station runs
    return FleetSettings(
        target, list(chosen["features"]), read.time_column, read.clock, options.train_config(given, config),
        export, list(chosen["quantize"]), chosen["builtin_ops"], chosen["opset"], neighbours,
        list(chosen["neighbour_features"]), time_unit=read.time_unit, time_format=read.time_format,
        dayfirst=read.dayfirst, delimiter=read.delimiter, decimal=read.decimal, valid_ranges=read.valid_ranges,
        tflite=chosen["tflite"])


def _check(settings: FleetSettings, workers: int | None, cpus_per_task: int) -> None:
    settings.config.check()
    if workers is not None and workers < 1:
        raise FleetError(f"workers must be at least 1, got {workers}", settings=("workers",))
    if cpus_per_task < 1:
        raise FleetError(f"cpus_per_task must be at least 1, got {cpus_per_task}", settings=("cpus_per_task",))
    if settings.quantize:
        from edgecast.exporter.quantize import check_modes

        check_modes(settings.quantize)


class _exclusive:
    """One fleet run per folder at a time: a second one would remove the first one's staging."""

    def __init__(self, fleet_dir: Path):
        self.path = fleet_dir / LOCK_FILE

    def __enter__(self):
        self.handle = open(self.path, "w")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise FleetError(f"{self.path.parent}: another fleet run is writing this folder") from None
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def _run_on_ray(todo: list[Station], settings: FleetSettings, fleet_dir: Path, result: FleetResult,
                address: str | None, workers: int | None, cpus_per_task: int, on_event: Event | None,
                started: float) -> None:
    import ray

    owned = not ray.is_initialized()
    init_started = time.perf_counter()
    restore = _loopback_only(ray) if owned and not address else None
    try:
        if owned:
            _connect(ray, address, workers, cpus_per_task)
    except BaseException:
        _restore(ray, restore)
        raise
    result.ray_init_seconds = round(time.perf_counter() - init_started, 3)
    try:
        cluster_cpus = int(ray.cluster_resources().get("CPU", 0))
        if cluster_cpus < cpus_per_task:
            raise FleetError(f"the Ray cluster has {cluster_cpus} CPUs, a station task needs {cpus_per_task}")
        if settings.global_model:
            _run_global(ray, todo, settings, fleet_dir, result, min(workers or cluster_cpus, cluster_cpus), on_event)
            return
        result.workers = min(workers or cluster_cpus // cpus_per_task, len(todo))
        task = ray.remote(station_task).options(num_cpus=cpus_per_task, max_retries=0)
        run_id = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        waiting, in_flight, last_record = list(todo), {}, 0.0
        while waiting or in_flight:
            while waiting and len(in_flight) < result.workers:
                station = waiting.pop(0)
                in_flight[task.remote(station, settings, str(fleet_dir), run_id)] = station
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            station = in_flight.pop(ready[0])
            done = _collect(ray, ready[0], station)
            result.stations.append(done)
            if time.perf_counter() - last_record >= RECORD_EVERY_SECONDS:  # a killed run still says what finished
                result.wall_seconds = round(time.perf_counter() - started, 3)
                _write_run_record(fleet_dir, settings, result)
                last_record = time.perf_counter()
            _emit(on_event, "station", done)
    finally:
        if owned:
            ray.shutdown()
        _restore(ray, restore)


def _run_global(ray: ModuleType, todo: list[Station], settings: FleetSettings, fleet_dir: Path, result: FleetResult,
                cpus: int, on_event: Event | None) -> None:
    """One task on `cpus` CPUs for the whole network (edgecast/fleet/global_run.py)."""
    from .global_run import global_task

    result.workers = 1
    run_id = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    task = ray.remote(global_task).options(num_cpus=cpus, max_retries=0)
    try:
        outcomes = ray.get(task.remote(todo, settings, str(fleet_dir), run_id))
    except Exception as exc:  # the worker died: every station failed with it
        outcomes = [{"station": s.station, "data": s.source, "status": FAILED,
                     "error": f"Ray task lost: {one_line(exc)[:300]}"} for s in todo]
    for outcome in outcomes:
        done = StationResult(**{key: outcome.get(key) for key in StationResult.__dataclass_fields__ if key in outcome})
        result.stations.append(done)
        _emit(on_event, "station", done)


def _loopback_only(ray: ModuleType) -> str | None:
    """Make the embedded local cluster listen on loopback only (Ray has no authentication).

    Ray 2.60 on Linux takes the node's IP from the route to the outside, and its GCS,
    raylet, object manager, workers and agents listen on every interface (`*`, `::`),
    whatever `_node_ip_address` says (ray.init turns 127.0.0.1 back into that IP). With
    its "no cluster" mode (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, the default on macOS and
    Windows) the node IP is 127.0.0.1 and every process binds there. The processes
    inherit the environment; the driver's constant is read at import, so it is set too.
    Returns the variable's previous value for `_restore`."""
    previous = os.environ.get(RAY_CLUSTER_VARIABLE)
    os.environ[RAY_CLUSTER_VARIABLE] = "0"
    constants = _ray_constants(ray)
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False
    return previous if previous is not None else ""


def _restore(ray: ModuleType, previous: str | None) -> None:
    """Undo `_loopback_only` (None: it was not applied), so a later `--address` joins as a node."""
    if previous is None:
        return
    if previous:
        os.environ[RAY_CLUSTER_VARIABLE] = previous
    else:
        os.environ.pop(RAY_CLUSTER_VARIABLE, None)
    constants = _ray_constants(ray)
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = constants.env_bool(RAY_CLUSTER_VARIABLE, not constants.IS_WINDOWS_OR_OSX)


def _ray_constants(ray: ModuleType) -> ModuleType | None:
    try:
        from ray._private import ray_constants
    except ImportError:  # another Ray layout: the environment variable alone applies
        return None
    return ray_constants if hasattr(ray_constants, "ENABLE_RAY_CLUSTER") else None


def _connect(ray: ModuleType, address: str | None, workers: int | None, cpus_per_task: int) -> None:
    options = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    try:
        if address:
            _use_cluster_token()
            ray.init(address=address, **options)
        else:  # the embedded local cluster, sized to the workers asked for (default: every core)
            ray.init(num_cpus=workers * cpus_per_task if workers else None,
                     object_store_memory=LOCAL_OBJECT_STORE_BYTES, **options)
    except Exception as exc:  # ConnectionError, RuntimeError, ValueError, gRPC errors: all one line
        raise FleetError(f"cannot start or join the Ray cluster{f' at {address}' if address else ''}: "
                         f"{one_line(exc)}") from None


def _use_cluster_token() -> None:
    """Ray 2.60's `ray start` turns token authentication on when a token exists (~/.ray/auth_token,
    RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH), but a driver joining it only sends the token in token
    mode: Ray's own check switches this process to token mode when a token is there."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # another Ray version: its own defaults apply
        return
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _collect(ray: ModuleType, ref: ray.ObjectRef, station: Station) -> StationResult:
    try:
        outcome = ray.get(ref)
    except Exception as exc:  # the worker died (killed, out of memory): this station alone failed
        return StationResult(station.station, station.source, FAILED, f"Ray task lost: {one_line(exc)[:300]}")
    known = {key: outcome.get(key) for key in StationResult.__dataclass_fields__ if key in outcome}
    return StationResult(**known)


def _write_run_record(fleet_dir: Path, settings: FleetSettings, result: FleetResult) -> None:
    write_json_atomic(fleet_dir / RUN_RECORD, {
        "written": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "settings": settings.as_dict(),
        "address": result.address,
        "workers": result.workers,
        "wall_seconds": result.wall_seconds,
        "ray_init_seconds": result.ray_init_seconds,
        "driver_pid": os.getpid(),
        "stations": [asdict(s) for s in result.stations],
    })


def _emit(on_event: Event | None, kind: str, payload: object) -> None:
    if on_event is not None:
        on_event(kind, payload)
