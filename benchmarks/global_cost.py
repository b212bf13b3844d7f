"""What one global model costs to train against ten local ones, in core-seconds (user +
system CPU time), on the same machine in the same run.

    .venv/bin/python benchmarks/global_cost.py                          # ten stations: writes benchmarks/global.json
    .venv/bin/python benchmarks/global_cost.py --stations 2 --epochs 2  # a quick check (to a scratch folder)

Every training runs in its own child process of this interpreter, TensorFlow and BLAS on
one thread: `--child local STATION` calls trainer/pipeline.py `train` on one station,
`--child global` calls trainer/global_model.py `member` for every station, then
`train_global`. Settings: `TrainConfig(horizon=24)`, features WEATHER, target PM2.5,
clock +08:00 (as scripts/forecast_results.py reads the data). Order: the first half of the
locals, the global model, the other half, so that a neighbour's load is spread over both.

Three figures per child, each summed over the ten locals and set against the global one:
  whole process  getrusage(RUSAGE_CHILDREN) delta around the child (interpreter and
                 TensorFlow start-up, reading the CSVs, windows, training: what a fleet
                 run pays), less the child's own evaluation CPU (below);
  training only  time.process_time() inside the child around the network's build and
                 fit (`train` up to its bundle, `train_global`), TensorFlow already
                 imported and the windows already cut: the networks' own cost;
  evaluation     measured apart and left out of both: each local's `finish_bundle`
                 (test-split scores, bundle writing) against the global model's ten
                 `write_station` calls (the same `finish_bundle` on each folded network).
The global model's FLEET/.global/ folder (`write_global`, the unknown station's bundle) is
not written: the locals have no counterpart.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
OUT = REPO / "benchmarks" / "global.json"
TARGET = "PM2.5"
FEATURES = ("TEMP", "PRES", "DEWP", "RAIN", "WSPM", "wd", "hour_of_day", "day_of_week")
HORIZON = 24
CLOCK = "+08:00"  # the UCI Beijing timestamps are local time
SINGLE_THREAD = dict.fromkeys(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                               "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"), "1")
REPORT_PREFIX = "GLOBAL_COST "  # the child's one JSON line starts with this


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--stations", type=int, default=None, help="Only the first N stations (a quick check).")
    parser.add_argument("--epochs", type=int, default=None, help="Override TrainConfig.epochs (a quick check).")
    parser.add_argument("--out", type=Path, default=None, help="JSON report (default: benchmarks/global.json; "
                        "with --stations or --epochs, a scratch folder).")
    parser.add_argument("--child", choices=("local", "global"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("names", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        return _child(args.child, args.names, args.data, args.epochs)
    files = _station_files(args.data)
    if not files:
        raise SystemExit(f"benchmarks/global_cost.py: no station data in {args.data} (it lives in ../shared/data)")
    stations = list(files)[: args.stations] if args.stations else list(files)
    quick = args.stations is not None or args.epochs is not None
    out = args.out or (Path(tempfile.mkdtemp(prefix="global-cost-")) / "global.json" if quick else OUT)
    half = len(stations) // 2
    plan = [("local", [s]) for s in stations[:half]] + [("global", stations)] + \
           [("local", [s]) for s in stations[half:]]
    children = []
    for index, (kind, names) in enumerate(plan):
        children.append(_run_child(kind, names, args.data, args.epochs))
        c = children[-1]
        print(f"{index + 1}/{len(plan)} {kind} {names[0] if kind == 'local' else len(names)}: "
              f"{c['core_seconds']:.1f} core-s ({c['training_cpu_seconds']:.1f} training), "
              f"{c['wall_seconds']:.1f} s wall, {c['epochs_run']} epochs", flush=True)
    report = _report(stations, children, args.epochs)
    _write_atomic(out, json.dumps(report, indent=2) + "\n")
    print(_table(report))
    print(f"wrote {out}")


def _station_files(data: Path) -> dict[str, Path]:
    """{station: file} of the PRSA_Data_<Station>_... files, in name order."""
    found = {}
    for path in sorted(data.glob("PRSA_Data_*")):
        if path.name.endswith((".csv", ".csv.gz")):
            found[path.name.split("_")[2]] = path
    return found


def _run_child(kind: str, names: list[str], data: Path, epochs: int | None) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--data", str(data),
               *(["--epochs", str(epochs)] if epochs is not None else []), "--child", kind, *names]
    env = {**os.environ, **SINGLE_THREAD, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONHASHSEED": "0"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"benchmarks/global_cost.py: the {kind} child {names} failed "
                         f"(exit {done.returncode}):\n{done.stderr[-3000:]}")
    lines = [line for line in done.stdout.splitlines() if line.startswith(REPORT_PREFIX)]
    if not lines:
        raise SystemExit(f"benchmarks/global_cost.py: the {kind} child {names} printed no report:\n{done.stdout[-2000:]}")
    reported = json.loads(lines[-1][len(REPORT_PREFIX):])
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    whole = user + system
    return {
        "kind": kind, "stations": names,
        "user_seconds": round(user, 3), "system_seconds": round(system, 3),
        "process_core_seconds": round(whole, 3),  # everything the child did, evaluation included
        "core_seconds": round(whole - reported["evaluation_cpu_seconds"], 3),  # the fleet's cost: without evaluation
        "wall_seconds": round(wall, 3),
        **reported,
    }


def _child(kind: str, names: list[str], data: Path, epochs: int | None) -> None:
    """One training, timed from inside; one JSON line on stdout."""
    started_cpu = time.process_time()
    from edgecast.trainer import pipeline
    from edgecast.trainer.data import ReadOptions, load_csv
    from edgecast.trainer.settings import TrainConfig

    files = _station_files(data)
    config = TrainConfig(horizon=HORIZON, **({"epochs": epochs} if epochs is not None else {}))
    clocks: dict[str, float] = {"imports": time.process_time() - started_cpu}

    def timed(name: str, call: Callable[[], Any]) -> Any:
        cpu = time.process_time()
        value = call()
        clocks[name] = clocks.get(name, 0.0) + time.process_time() - cpu
        return value

    series = {name: timed("load", lambda n=name: load_csv([files[n]], TARGET, list(FEATURES), max_gap=config.max_gap,
                                                          options=ReadOptions(clock=CLOCK)))
              for name in names}
    if kind == "global":
        from edgecast.trainer.global_model import member, train_global, write_station

        members = [timed("prepare", lambda n=name: member(n, series[n], config)) for name in names]
        tf = timed("import_tensorflow", _import_model)
        began = time.perf_counter()
        network = timed("training", lambda: train_global(members, config))
        training_wall = time.perf_counter() - began
        history, windows = network.history, sum(len(m.data.train) for m in members)
        with tempfile.TemporaryDirectory(prefix="global-cost-") as folder:
            for one in members:
                timed("evaluation", lambda o=one: write_station(network, o, Path(folder) / o.station.lower()))
    else:
        data = timed("prepare", lambda: pipeline.prepare(series[names[0]], config))
        tf = timed("import_tensorflow", _import_model)
        original, marks = pipeline.finish_bundle, {}

        def finish_bundle(*args, **kwargs):  # train() ends its training where it calls this
            marks["cpu"], marks["wall"] = time.process_time(), time.perf_counter()
            return original(*args, **kwargs)

        pipeline.finish_bundle = finish_bundle
        with tempfile.TemporaryDirectory(prefix="global-cost-") as folder:
            cpu, began = time.process_time(), time.perf_counter()
            result = pipeline.train(series[names[0]], config, Path(folder) / names[0].lower(), data=data)
            ended = time.process_time()
        pipeline.finish_bundle = original
        clocks["training"], clocks["evaluation"] = marks["cpu"] - cpu, ended - marks["cpu"]
        training_wall = marks["wall"] - began
        history, windows = result.training["history"], len(data.train)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report = {
        "training_cpu_seconds": round(clocks["training"], 3),
        "training_wall_seconds": round(training_wall, 3),
        "evaluation_cpu_seconds": round(clocks["evaluation"], 3),
        "epochs_run": history["epochs_run"], "best_epoch": history["best_epoch"],
        "training_cpu_seconds_per_epoch": round(clocks["training"] / history["epochs_run"], 3),
        "train_windows": windows,
        "cpu_seconds": {name: round(value, 3) for name, value in clocks.items()},
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "threads_env": {name: os.environ.get(name) for name in sorted(SINGLE_THREAD)},
        "versions": {"tensorflow": tf.__version__, "keras": _version("keras"), "numpy": _version("numpy")},
    }
    print(REPORT_PREFIX + json.dumps(report), flush=True)


def _import_model():
    """TensorFlow and the Keras model module, loaded before the training clock starts."""
    from edgecast.trainer import model  # noqa: F401

    return sys.modules["tensorflow"]


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except (ImportError, AttributeError):
        return None


def _report(stations: list[str], children: list[dict], epochs: int | None) -> dict:
    locals_ = [c for c in children if c["kind"] == "local"]
    global_ = next(c for c in children if c["kind"] == "global")
    measures = ("core_seconds", "process_core_seconds", "training_cpu_seconds", "evaluation_cpu_seconds",
                "wall_seconds", "training_wall_seconds")
    totals = {"global": {m: global_[m] for m in measures},
              "locals": {m: round(sum(c[m] for c in locals_), 3) for m in measures}}
    totals["locals"]["epochs_run"] = sum(c["epochs_run"] for c in locals_)
    totals["global"]["epochs_run"] = global_["epochs_run"]
    ratio = {m: round(totals["global"][m] / totals["locals"][m], 4) for m in measures if totals["locals"][m]}
    per_epoch = {"global": global_["training_cpu_seconds_per_epoch"],
                 "locals_mean": round(totals["locals"]["training_cpu_seconds"] / totals["locals"]["epochs_run"], 3)}
    return {
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "script": "benchmarks/global_cost.py",
        "machine": _machine(global_["versions"]),
        "settings": {"target": TARGET, "features": list(FEATURES), "horizon": HORIZON, "clock": CLOCK,
                     "config": f"TrainConfig(horizon={HORIZON}" + (f", epochs={epochs})" if epochs else ")"),
                     "threads": SINGLE_THREAD, "stations": stations,
                     "order": [c["kind"] if c["kind"] == "global" else c["stations"][0] for c in children]},
        "measures": {
            "core_seconds": "user+system CPU of the child (getrusage RUSAGE_CHILDREN), less its evaluation CPU",
            "process_core_seconds": "user+system CPU of the whole child, evaluation included",
            "training_cpu_seconds": "process_time inside the child around the network's build and fit",
            "evaluation_cpu_seconds": "process_time of finish_bundle (locals) / ten write_station (global)",
        },
        "children": children,
        "totals": totals,
        "ratio_global_to_locals": ratio,
        "training_cpu_seconds_per_epoch": per_epoch,
        # the target: one global model costs no more core-seconds than the ten locals (whole process)
        "met": totals["global"]["core_seconds"] <= totals["locals"]["core_seconds"],
        "met_training_only": totals["global"]["training_cpu_seconds"] <= totals["locals"]["training_cpu_seconds"],
    }


def _machine(versions: dict) -> dict:
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu_count": os.cpu_count(), "cpu_model": model, "platform": platform.platform(),
            "python": platform.python_version(), **versions,
            "load_average_at_end": [round(v, 2) for v in os.getloadavg()]}


def _table(report: dict) -> str:
    rows = ["| run | core-s (whole process) | training CPU s | evaluation CPU s | wall s | epochs | CPU s/epoch "
            "| train windows |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for c in report["children"]:
        name = "global" if c["kind"] == "global" else c["stations"][0]
        rows.append(f"| {name} | {c['core_seconds']:.1f} | {c['training_cpu_seconds']:.1f} "
                    f"| {c['evaluation_cpu_seconds']:.1f} | {c['wall_seconds']:.1f} | {c['epochs_run']} "
                    f"| {c['training_cpu_seconds_per_epoch']:.2f} | {c['train_windows']} |")
    t, r = report["totals"], report["ratio_global_to_locals"]
    for name in ("locals", "global"):
        label = f"sum of {len(report['children']) - 1} locals" if name == "locals" else "global"
        rows.append(f"| **{label}** | {t[name]['core_seconds']:.1f} | {t[name]['training_cpu_seconds']:.1f} "
                    f"| {t[name]['evaluation_cpu_seconds']:.1f} | {t[name]['wall_seconds']:.1f} "
                    f"| {t[name]['epochs_run']} | | |")
    rows.append(f"| **global / locals** | {r['core_seconds']:.3f} | {r['training_cpu_seconds']:.3f} "
                f"| {r['evaluation_cpu_seconds']:.3f} | {r['wall_seconds']:.3f} | | | |")
    return "\n".join(rows) + (f"\n\nglobal <= locals in core-seconds: {'yes' if report['met'] else 'no'} "
                              f"(training only: {'yes' if report['met_training_only'] else 'no'})")


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(text)
    os.replace(staging, path)


if __name__ == "__main__":
    main()
