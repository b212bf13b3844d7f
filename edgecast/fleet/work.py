"""One station's work, as it runs inside a Ray task: train, export and verify into a
staging folder, then swap the finished bundle in whole.

Nothing here imports TensorFlow at module level: the task first pins TensorFlow's and
BLAS's thread pools to the CPUs Ray granted, and only then lets TensorFlow load.
"""
from __future__ import annotations

import os
import resource
import shutil
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

from edgecast.base import write_json_atomic
from edgecast_runtime.durable import replace_folder

from .stations import STATION_RECORD, FleetSettings, Station

STAGING = ".staging"  # under the fleet folder, on the same filesystem as the bundles: rename is atomic
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
TF_THREADS_SET = "EDGECAST_FLEET_TF_THREADS"  # the pool size TensorFlow started with in this worker


def station_task(station: Station, settings: FleetSettings, fleet_dir: str, run_id: str) -> dict:
    """The body of the Ray task. Every failure comes back as a one-line error in the result,
    so one station's trouble never reaches another's."""
    started = time.perf_counter()
    threads = pin_threads(granted_cpus())
    result = {"station": station.station, "data": station.source, "threads": threads,
              "host": socket.gethostname(), "pid": os.getpid()}
    try:
        from threadpoolctl import threadpool_limits  # numpy's BLAS is loaded already: limit it live

        with threadpool_limits(limits=threads):
            result.update(build_station(station, settings, Path(fleet_dir), run_id))
        result["status"] = "trained"
    except Exception as exc:  # any error is this station's alone
        result.update(status="failed", error=one_line(exc), error_settings=list(getattr(exc, "settings", ())))
    result["seconds"] = round(time.perf_counter() - started, 3)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # kB on Linux
    return result


def granted_cpus() -> int:
    try:
        import ray

        return max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
    except Exception:  # outside Ray (a direct call): one thread
        return 1


def pin_threads(cpus: int) -> int:
    """TensorFlow reads its pool sizes once, when it starts: set them before it loads.
    TensorFlow itself loads only once the data has been read, so a bad file fails fast."""
    for name in THREAD_VARIABLES:
        os.environ[name] = str(cpus)
    if "tensorflow" in sys.modules:  # a reused worker: TF kept the pools of its first task
        return int(os.environ.get(TF_THREADS_SET, cpus))
    return cpus


def configure_tensorflow(cpus: int) -> None:
    """The same pool sizes through TensorFlow's own API, in case its environment reading changes."""
    from edgecast.base import import_tensorflow

    if os.environ.get(TF_THREADS_SET):
        return
    tf = import_tensorflow()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(cpus)
        tf.config.threading.set_inter_op_parallelism_threads(cpus)
    except RuntimeError:  # TensorFlow already started its runtime: the environment has decided
        pass
    os.environ[TF_THREADS_SET] = str(cpus)


def build_station(station: Station, settings: FleetSettings, fleet_dir: Path, run_id: str,
                  pipeline: Callable[[Path], dict] | None = None) -> dict:
    """Train (and export, verify) into .staging/RUN/STATION, record, then replace the bundle.
    `pipeline(folder)` writes the bundle there and returns its outcome (default: run_pipeline;
    a global fleet's writes the station's share of the network: fleet/global_run.py)."""
    staging = fleet_dir / STAGING / run_id / station.station
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    try:
        outcome = pipeline(staging) if pipeline is not None else run_pipeline(station, settings, staging)
        record = {"station": station.station, "data": {"path": station.source, "sha256": station.sha256,
                                                   **({"files": list(map(str, station.files))} if len(station.files) > 1 else {})},
                  "fingerprint": station.fingerprint(settings), "settings": settings.as_dict(), **outcome}
        write_json_atomic(staging / STATION_RECORD, record)
        replace_folder(staging, fleet_dir / station.station)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return outcome


def run_pipeline(station: Station, settings: FleetSettings, out_dir: Path) -> dict:
    """The per-station pipeline: the same calls `edgecast train`, `export` and `verify` make
    (the one place that knows them, so it can follow the toolkit's Python API)."""
    from edgecast.trainer.data import load_csv
    from edgecast.trainer.neighbours import DROP, add_neighbours
    from edgecast.trainer.pipeline import prepare, train

    read = settings.read_options()
    series = load_csv(station.files, settings.target, settings.features, max_gap=settings.config.max_gap, options=read)
    notices = []
    if settings.neighbours:  # a neighbour file that cannot be used is left out (DROP), with a notice
        others = [f"{settings.neighbour_ids.get(path, '')}={path}" if settings.neighbour_ids.get(path) else path
                  for path in settings.neighbour_files if Path(path) not in station.files]
        series, record = add_neighbours(series, others, settings.neighbour_features, read, settings.config.max_gap,
                                        settings.config.split, settings.neighbour_count(), station=station.station,
                                        unusable=DROP)
        notices += [f"neighbour {other} left out: {why}" for other, why in sorted(record.dropped.items())]
    data = prepare(series, settings.config)  # bad settings or too few rows fail before TensorFlow loads
    configure_tensorflow(int(os.environ["TF_NUM_INTRAOP_THREADS"]))
    from edgecast.trainer.model import keras

    keras.backend.clear_session()  # a reused worker starts each station from a clean Keras state
    trained = train(series, settings.config, out_dir, data=data)
    outcome = {"train_seconds": trained.training["train_seconds"], "epochs_run": trained.training["history"]["epochs_run"],
               "notices": notices}
    if settings.export:
        outcome.update(export_and_verify(out_dir, settings))
    return outcome


def export_and_verify(out_dir: Path, settings: FleetSettings) -> dict:
    """`edgecast export` and `edgecast verify` of a trained bundle; a refusal or failure raises."""
    from edgecast import api
    from edgecast.exporter.errors import ParityError

    started = time.perf_counter()
    exported = api.export(out_dir, opset=settings.opset, tflite=settings.tflite, quantize=settings.quantize,
                          builtin_ops=settings.builtin_ops)
    if exported.refused:
        raise ParityError("; ".join(exported.refused.values()), exported.parity)
    report = api.verify(out_dir)
    if not report.passed:
        problems = report.integrity.problems
        raise ParityError(f"verify failed: {problems[0] if problems else 'parity beyond tolerance'}", report.parity)
    return {"export_seconds": round(time.perf_counter() - started, 3),
            "verified": {"passed": True, "max_abs": report.parity.worst_abs,
                         "tolerance_abs": report.parity.tolerance_abs}}


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if _is_edgecast_error(exc) else f"{type(exc).__name__}: {text}"


def _is_edgecast_error(exc: BaseException) -> bool:
    from edgecast.base import EdgecastError

    return isinstance(exc, EdgecastError)
