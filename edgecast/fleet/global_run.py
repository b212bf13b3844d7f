"""`edgecast fleet train --global`: one Ray task trains one network on every station, then
writes (and with --export exports and verifies) each station's ordinary bundle and the
fleet's FLEET/.global/ (the global network and the unknown station's bundle).

One task, granted every worker's CPUs: the network needs all stations' windows at once, so
the parallelism is TensorFlow's threads, not stations. A station whose file cannot be read
fails alone (the network is trained on the others); a failure of the training itself fails
every station, each saying why.
"""
from __future__ import annotations

import os
import resource
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

from edgecast.trainer.errors import DataError

from .stations import FleetSettings, Station
from .work import build_station, configure_tensorflow, export_and_verify, granted_cpus, one_line, pin_threads

if TYPE_CHECKING:
    from edgecast.trainer.global_model import GlobalNetwork, Member


def global_task(stations: list[Station], settings: FleetSettings, fleet_dir: str, run_id: str) -> list[dict]:
    """The body of the Ray task: a result per station, failures as one-line errors."""
    threads = pin_threads(granted_cpus())
    common = {"threads": threads, "host": socket.gethostname(), "pid": os.getpid()}
    results = {s.station: {"station": s.station, "data": s.source, **common} for s in stations}
    try:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=threads):
            _train_and_write(stations, settings, Path(fleet_dir), run_id, results)
    except Exception as exc:  # the network itself failed: every station not yet written says why
        for result in results.values():
            if "status" not in result:
                result.update(status="failed", error=f"global model: {one_line(exc)}",
                              error_settings=list(getattr(exc, "settings", ())))
    peak = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return [{**result, "peak_rss_mb": peak} for result in results.values()]


def _train_and_write(stations: list[Station], settings: FleetSettings, fleet_dir: Path, run_id: str,
                     results: dict[str, dict]) -> None:
    from edgecast.trainer.data import load_csv
    from edgecast.trainer.global_model import GLOBAL_FOLDER, member, train_global, write_global

    members = []
    for station in stations:  # a file that cannot be read fails its station alone
        try:
            series = load_csv(station.files, settings.target, settings.features, max_gap=settings.config.max_gap,
                              options=settings.read_options())
            members.append(member(station.station, series, settings.config))
        except Exception as exc:
            results[station.station].update(status="failed", error=one_line(exc),
                                            error_settings=list(getattr(exc, "settings", ())))
    if len(members) < 2:
        raise DataError(f"a global model needs at least 2 stations that can be read, got {len(members)}")
    configure_tensorflow(int(os.environ["TF_NUM_INTRAOP_THREADS"]))
    network = train_global(members, settings.config)
    fleet = fleet_dir.name
    by_name = {s.station: s for s in stations}
    for one in members:
        started = time.perf_counter()
        result = results[one.station]
        try:
            outcome = _write_one(network, one, by_name[one.station], settings, fleet_dir, run_id)
            result.update(status="trained", **outcome)
        except Exception as exc:
            result.update(status="failed", error=one_line(exc), error_settings=list(getattr(exc, "settings", ())))
        result["seconds"] = round(time.perf_counter() - started + network.seconds, 3)
    write_global(network, members, fleet_dir / GLOBAL_FOLDER, fleet, settings.as_dict())


def _write_one(network: GlobalNetwork, one: Member, station: Station, settings: FleetSettings, fleet_dir: Path,
               run_id: str) -> dict:
    """One station's bundle, exported and verified, swapped in as a local fleet's is (work.build_station)."""
    from edgecast.trainer.global_model import write_station

    def pipeline(staging: Path) -> dict:
        write_station(network, one, staging, fleet_dir.name)
        outcome = {"train_seconds": round(network.seconds, 3), "epochs_run": network.history["epochs_run"],
                   "notices": []}
        if settings.export:
            outcome.update(export_and_verify(staging, settings))
        return outcome

    return build_station(station, settings, fleet_dir, run_id, pipeline)
