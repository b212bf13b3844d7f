"""The fleet on Ray against a plain loop of `edgecast train`: wall time, stations per hour
per core, peak memory per worker, Ray's start-up cost, and projections for big fleets.

    .venv/bin/python benchmarks/fleet.py                 # the ten shared stations: writes benchmarks/fleet.json and .md
    .venv/bin/python benchmarks/fleet.py --stations 3    # a quick check that everything runs (to a scratch folder)

Three runs over the same stations and settings, each in a fresh models folder:
  sequential  one `edgecast train` subprocess per station, one after the other, pinned to
              core 0 (taskset) with TensorFlow and BLAS on one thread;
  ray-1       `edgecast.fleet.train(workers=1)` on a local Ray cluster, the whole process
              tree pinned to core 0: the same single core as the loop;
  ray-2       `workers=2` on cores 0 and 1.
Peak memory is sampled (every 0.2 s) over each run's whole process tree (driver, Ray's
GCS and raylet, workers); each worker's own peak comes from its task results.
The projections use this run's own figures (see benchmarks/README.md, "Fleet").
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
EDGECAST = Path(sys.executable).parent / "edgecast"
# About 10-20 s of training per station on one core: 24-step horizon, two epochs.
SETTINGS = {"target": "PM2.5", "horizon": 24, "epochs": 2, "patience": 2, "seed": 0}
SINGLE_THREAD = dict.fromkeys(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                               "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"), "1")
PROJECT_STATIONS = (1_000, 10_000)
PROJECT_CORES = (8, 64)
CORES_PER_NODE = 8  # the projected clusters are built of 8-core nodes
SAMPLE_SECONDS = 0.2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--stations", type=int, default=None, help="Use only the first N stations (a quick check).")
    parser.add_argument("--out", type=Path, default=None, help="JSON report (default: benchmarks/fleet.json; "
                        "with --stations, a scratch folder).")
    parser.add_argument("--child-fleet", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--models-dir", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("files", nargs="*", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_fleet is not None:
        return _child_fleet(args.child_fleet, args.files, args.models_dir, args.out)
    files = sorted(p for p in args.data.glob("*") if p.name.endswith((".csv", ".csv.gz")))
    if not files:
        raise SystemExit(f"benchmarks/fleet.py: no station data in {args.data} (it lives in ../shared/data)")
    files = files[: args.stations] if args.stations else files
    out = args.out or (REPO / "benchmarks" / "fleet.json" if args.stations is None
                       else Path(tempfile.mkdtemp(prefix="fleet-bench-")) / "fleet.json")
    cores = os.cpu_count() or 1
    if cores < 2:
        raise SystemExit("benchmarks/fleet.py: needs 2 cores (the 2-worker run)")
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-work-"))
    try:
        runs = {
            "sequential": _sequential(files, work / "sequential"),
            "ray-1": _ray_run(1, files, work / "ray-1", "0"),
            "ray-2": _ray_run(2, files, work / "ray-2", "0,1"),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = _report(files, runs, cores)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(_markdown(report))
    print(_markdown(report))
    print(f"wrote {out} and {out.with_suffix('.md')}")


def _train_args(path: Path, name: str, models_dir: Path) -> list[str]:
    return [str(path), "--target", SETTINGS["target"], "--horizon", str(SETTINGS["horizon"]),
            "--epochs", str(SETTINGS["epochs"]), "--patience", str(SETTINGS["patience"]),
            "--seed", str(SETTINGS["seed"]), "--name", name, "--models-dir", str(models_dir)]


def _sequential(files: list[Path], models_dir: Path) -> dict:
    """The plain loop: a fresh `edgecast train` per station on core 0, one thread."""
    env = {**os.environ, **SINGLE_THREAD, "TF_CPP_MIN_LOG_LEVEL": "3"}
    stations, started = [], time.perf_counter()
    for index, path in enumerate(files):
        command = ["taskset", "-c", "0", str(EDGECAST), "train", *_train_args(path, f"s{index}", models_dir)]
        began = time.perf_counter()
        with TreeSampler() as sampler:
            child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            sampler.root = child.pid
            _, status, _ = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            raise SystemExit(f"benchmarks/fleet.py: edgecast train {path.name} failed (exit {child.returncode})")
        stations.append({"data": path.name, "seconds": round(time.perf_counter() - began, 3),
                         "peak_rss_mb": round(sampler.peak_mb, 1)})
        print(f"sequential {index + 1}/{len(files)}: {path.name} {stations[-1]['seconds']:.1f} s", flush=True)
    return {"wall_seconds": round(time.perf_counter() - started, 3), "cores": 1, "pinned_to": "0",
            "stations": stations, "peak_tree_rss_mb": max(s["peak_rss_mb"] for s in stations)}


def _ray_run(workers: int, files: list[Path], models_dir: Path, cpus: str) -> dict:
    """edgecast.fleet.train in a child pinned to `cpus`: Ray's processes inherit the pinning."""
    out = models_dir.parent / f"ray-{workers}.json"
    command = ["taskset", "-c", cpus, sys.executable, __file__, "--child-fleet", str(workers),
               "--models-dir", str(models_dir), "--out", str(out), *map(str, files)]
    began = time.perf_counter()
    with TreeSampler() as sampler:
        child = subprocess.Popen(command, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
                                 stdout=subprocess.DEVNULL)
        sampler.root = child.pid
        child.wait()
    if child.returncode != 0:
        raise SystemExit(f"benchmarks/fleet.py: the {workers}-worker fleet run failed (exit {child.returncode})")
    result = json.loads(out.read_text())
    result.update(process_seconds=round(time.perf_counter() - began, 3), cores=workers, pinned_to=cpus,
                  peak_tree_rss_mb=round(sampler.peak_mb, 1))
    print(f"ray-{workers}: {result['wall_seconds']:.1f} s in the fleet call, {result['process_seconds']:.1f} s "
          f"with interpreter start and Ray shutdown", flush=True)
    return result


def _child_fleet(workers: int, files: list[Path], models_dir: Path, out: Path) -> None:
    sys.path.insert(0, str(REPO))
    from edgecast import fleet
    from edgecast.trainer.settings import TrainConfig

    config = TrainConfig(horizon=SETTINGS["horizon"], epochs=SETTINGS["epochs"], patience=SETTINGS["patience"],
                         seed=SETTINGS["seed"])
    result = fleet.train(files, SETTINGS["target"], config=config, models_dir=models_dir, workers=workers, force=True)
    failed = [f"{s.station}: {s.error}" for s in result.failed]
    if failed:
        raise SystemExit("benchmarks/fleet.py: " + "; ".join(failed))
    stations = [{"station": s.station, "seconds": s.seconds, "train_seconds": s.train_seconds,
                 "peak_rss_mb": s.peak_rss_mb, "pid": s.pid, "threads": s.threads} for s in result.stations]
    out.write_text(json.dumps({"wall_seconds": result.wall_seconds, "ray_init_seconds": result.ray_init_seconds,
                               "workers": result.workers, "stations": stations}))


class TreeSampler:
    """Peak summed RSS of a process and all its descendants, sampled in a thread."""

    def __init__(self):
        self.root, self.peak_mb, self._stop = None, 0.0, threading.Event()

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        page_mb = os.sysconf("SC_PAGE_SIZE") / 2**20
        while not self._stop.wait(SAMPLE_SECONDS):
            if self.root is not None:
                self.peak_mb = max(self.peak_mb, sum(_rss_pages(pid) for pid in _tree(self.root)) * page_mb)


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, queue = [], [root]
    while queue:
        pid = queue.pop()
        found.append(pid)
        queue += children.get(pid, [])
    return found


def _rss_pages(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _report(files: list[Path], runs: dict, cores: int) -> dict:
    n = len(files)
    for run in runs.values():
        run["stations_per_hour_per_core"] = round(n / (run["wall_seconds"] / 3600) / run["cores"], 1)
    one, two, loop = runs["ray-1"], runs["ray-2"], runs["sequential"]
    worker_peak = max(s["peak_rss_mb"] for s in two["stations"])
    # Core-seconds per station with every core busy: the mean task time of the 2-worker run (one CPU
    # per task), so a last wave that leaves a core idle on a small fleet does not count.
    core_seconds = statistics.fmean(s["seconds"] for s in two["stations"])
    ray_own_mb = max(0.0, two["peak_tree_rss_mb"] - two["cores"] * worker_peak)  # driver, GCS, raylet, object store
    projections = []
    for stations in PROJECT_STATIONS:
        for cluster_cores in PROJECT_CORES:
            nodes = math.ceil(cluster_cores / CORES_PER_NODE)
            projections.append({
                "stations": stations, "cores": cluster_cores, "nodes": nodes,
                "wall_hours": round((two["ray_init_seconds"] + math.ceil(stations / cluster_cores) * core_seconds) / 3600, 2),
                "memory_gb": round((cluster_cores * worker_peak + nodes * ray_own_mb) / 1024, 1),
                "memory_per_node_gb": round((CORES_PER_NODE * worker_peak + ray_own_mb) / 1024, 1),
            })
    return {
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"cores": cores, "python": sys.version.split()[0]},
        "stations": [p.name for p in files],
        "settings": SETTINGS,
        "runs": runs,
        "figures": {
            "speedup_2_workers_over_1": round(one["wall_seconds"] / two["wall_seconds"], 3),
            "ray_1_worker_over_sequential": round(one["wall_seconds"] / loop["wall_seconds"], 3),
            "ray_init_seconds": {"1 worker": one["ray_init_seconds"], "2 workers": two["ray_init_seconds"]},
            "core_seconds_per_station": round(core_seconds, 2),
            "sequential_seconds_per_station": round(statistics.fmean(s["seconds"] for s in loop["stations"]), 2),
            "peak_rss_mb_per_worker": worker_peak,
            "peak_rss_mb_sequential_process": loop["peak_tree_rss_mb"],
            "ray_own_memory_mb": round(ray_own_mb, 1),
        },
        "projections": projections,
        "projection_formula": {
            "wall": "ray_init_seconds + ceil(stations / cores) * core_seconds_per_station",
            "memory": "cores * peak_rss_mb_per_worker + nodes * ray_own_memory_mb (nodes of 8 cores)",
        },
    }


def _markdown(report: dict) -> str:
    runs, figures = report["runs"], report["figures"]
    lines = [f"# Fleet benchmark ({report['created']}, {report['machine']['cores']} cores)", "",
             f"{len(report['stations'])} stations; `edgecast train` settings: "
             + ", ".join(f"{k} {v}" for k, v in report["settings"].items()) + ".", "",
             "| run | cores | wall s | stations / hour / core | Ray start-up s | peak memory of the run (MB) |",
             "|---|---|---|---|---|---|"]
    for name, run in runs.items():
        lines.append(f"| {name} | {run['cores']} (cpu {run['pinned_to']}) | {run['wall_seconds']:.1f} | "
                     f"{run['stations_per_hour_per_core']:.1f} | {run.get('ray_init_seconds', '-')} | "
                     f"{run['peak_tree_rss_mb']:.0f} |")
    lines += ["", f"- speed-up of 2 workers over 1: **{figures['speedup_2_workers_over_1']:.2f}×**",
              f"- 1-worker Ray run / sequential loop on the same core: **{figures['ray_1_worker_over_sequential']:.2f}×**",
              f"- core-seconds per station (mean task time, 2 workers busy): {figures['core_seconds_per_station']:.1f}; "
              f"sequential `edgecast train` per station: {figures['sequential_seconds_per_station']:.1f} s",
              f"- peak RSS per Ray worker: {figures['peak_rss_mb_per_worker']:.0f} MB; per `edgecast train` process: "
              f"{figures['peak_rss_mb_sequential_process']:.0f} MB; Ray's own processes: {figures['ray_own_memory_mb']:.0f} MB",
              "", "Projections (nodes of 8 cores; formula in benchmarks/README.md):", "",
              "| stations | cores | nodes | wall (hours) | memory (GB) | per node (GB) |", "|---|---|---|---|---|---|"]
    for p in report["projections"]:
        lines.append(f"| {p['stations']:,} | {p['cores']} | {p['nodes']} | {p['wall_hours']:.2f} | "
                     f"{p['memory_gb']:.1f} | {p['memory_per_node_gb']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
