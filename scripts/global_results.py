"""One global model against ten local ones, and new stations started from it (issue 24):
writes results/global.json and results/global.md.

    .venv/bin/python scripts/global_results.py [--data-dir ../shared/data] [--stations N] [--epochs E] [--workers 2]

On the ten Beijing stations, with `TrainConfig(horizon=24)` and the weather covariates:
(1) each station's own model (trainer/pipeline.py `train`) against one global model over
all of them (trainer/global_model.py `train_global`, the station's identity folded in),
test RMSE per lead on each station's own test windows; (2) leave-one-station-out: a global
model on the other nine, written as a fleet's `.global/` and read back (trainer/newcomer.py
`read_fleet`), forecasting the held-out station's test windows with no history (the
unknown identity, with the network's scaling) and fine-tuned on its last 7, 30 and 365
days before its test split (`fine_tune`), against its own full-history model from (1).

Trainings run in `--workers` spawned processes, one TensorFlow thread each. `--stations N`
and `--epochs E` make a quick check on the first N stations (their figures are not the
results). The training cost in core-seconds is measured by benchmarks/global_cost.py; here
only each training's wall seconds are recorded. The data are never copied into the project.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import datetime, timezone
from pathlib import Path

import global_tasks as tasks  # scripts/ is on sys.path when run

os.environ.update(tasks.THREAD_ENV)  # before anything loads TensorFlow, here and in every worker

ROOT = Path(__file__).resolve().parents[1]
LEADS = (1, 6, 12, 24)
DAYS = (0, *tasks.HISTORY_DAYS)
# The goals (Done when 1 and 2), as ratios of RMSE at 6 h.
GOALS = {"global_median": 0.97, "global_worst": 1.03, "loso_median_0_days": 1.05, "loso_median_30_days": 1.02}


def run_all(settings: dict, workers: int) -> list[dict]:
    """Every task, longest first: the global model, the leave-one-out rounds, the local models."""
    stations = settings["stations"]
    todo = [("global", None), *(("loso", s) for s in stations), *(("local", s) for s in stations)]
    if workers <= 1:
        tasks.single_threaded()
        return [_report(tasks.run(task, settings)) for task in todo]
    done = []
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=tasks.single_threaded) as pool:
        futures = [pool.submit(tasks.run, task, settings) for task in todo]
        for future in as_completed(futures):
            done.append(_report(future.result()))
    return done


def _report(result: dict) -> dict:
    print(f"{time.strftime('%H:%M:%S')} done: {result['task']} {result['station'] or ''} "
          f"in {result['task_wall_seconds']:.0f} s", flush=True)
    return result


def at(rmse: list[float], lead: int) -> float:
    return rmse[lead - 1]


def summarise(results: list[dict], stations: list[str]) -> dict:
    local = {r["station"]: r for r in results if r["task"] == "local"}
    glob = next(r for r in results if r["task"] == "global")
    loso = {r["station"]: r for r in results if r["task"] == "loso"}
    rows = []
    for s in stations:
        own, shared = local[s]["rmse"], glob["rmse"][s]
        rows.append({"station": s, "local": {f"{k}h": at(own, k) for k in LEADS},
                     "global": {f"{k}h": at(shared, k) for k in LEADS},
                     "ratio": {f"{k}h": round(at(shared, k) / at(own, k), 4) for k in LEADS},
                     "unknown_identity": {f"{k}h": at(glob["unknown_identity_rmse"][s], k) for k in LEADS},
                     "persistence": {f"{k}h": at(local[s]["persistence"], k) for k in LEADS},
                     "test_windows": local[s]["test_windows"],
                     "rmse_by_lead": {"local": own, "global": shared, "persistence": local[s]["persistence"]}})
    six = {r["station"]: r["ratio"]["6h"] for r in rows}
    worst = max(six, key=six.get)
    median6 = round(statistics.median(six.values()), 4)
    part1 = {"rows": rows, "median_ratio": {f"{k}h": round(statistics.median(r["ratio"][f"{k}h"] for r in rows), 4)
                                            for k in LEADS},
             "median_ratio_6h": median6, "worst_ratio_6h": six[worst], "worst_station_6h": worst,
             "goal": {"median_6h_at_most": GOALS["global_median"], "worst_6h_at_most": GOALS["global_worst"]},
             "goal_met": bool(median6 <= GOALS["global_median"] and six[worst] <= GOALS["global_worst"]),
             "global_training": {k: v for k, v in glob.items() if k not in ("rmse", "unknown_identity_rmse")},
             "local_training": {s: {k: local[s][k] for k in ("wall_seconds", "train_seconds", "epochs_run",
                                                             "train_windows")} for s in stations}}
    loso_rows = []
    for s in stations:
        reference = at(local[s]["rmse"], 6)
        history = loso[s]["history"]
        loso_rows.append({"station": s, "local_6h": reference,
                          "rmse_6h": {str(d): at(history[str(d)]["rmse"], 6) for d in DAYS},
                          "ratio_6h": {str(d): round(at(history[str(d)]["rmse"], 6) / reference, 4) for d in DAYS},
                          "runs": history, "global": loso[s]["global"]})
    medians = {str(d): round(statistics.median(r["ratio_6h"][str(d)] for r in loso_rows), 4) for d in DAYS}
    worst0 = max(loso_rows, key=lambda r: r["ratio_6h"]["0"])
    part2 = {"rows": loso_rows, "median_ratio_6h": medians,
             "worst_ratio_6h_0_days": {"station": worst0["station"], "ratio": worst0["ratio_6h"]["0"]},
             "goal": {"median_0_days_at_most": GOALS["loso_median_0_days"],
                      "median_30_days_at_most": GOALS["loso_median_30_days"]},
             "goal_met_0_days": bool(medians["0"] <= GOALS["loso_median_0_days"]),
             "goal_met_30_days": bool(medians["30"] <= GOALS["loso_median_30_days"])}
    return {"global_vs_local": part1, "leave_one_out": part2}


def _yes(flag: bool) -> str:
    return "**met**" if flag else "**not met**"


def markdown(results: dict) -> str:
    p1, p2 = results["global_vs_local"], results["leave_one_out"]
    g = p1["global_training"]
    lines = [
        "# One global model against ten local ones, and new stations started from it", "",
        f"Written by `scripts/global_results.py` on {results['created']} in {results['wall_seconds'] / 60:.0f} min "
        f"({results['workers']} worker processes, one TensorFlow thread each, on a shared {os.cpu_count()}-core "
        f"machine): `TrainConfig(horizon=24)` defaults otherwise ({results['train_defaults']}), target PM2.5, "
        f"features `{','.join(tasks.FEATURES)}`, clock +08:00. Every station keeps its own chronological "
        "70/15/15 split; RMSE in µg/m³ over each station's own test windows (last 15 %, unseen in every training).",
    ]
    if results["quick"]:
        lines += ["", f"**Quick check only** ({results['quick']}): these figures are not the results."]
    lines += ["", "## Global against local, every station", "",
              f"One network trained on all {len(p1['rows'])} stations' windows ({g['train_windows']} training windows, "
              f"{g['epochs_run']} epochs, best {g['best_epoch']}), against each station's own model "
              "(`pipeline.train`, same settings). Each station keeps its own scaling and its own frozen ridge map "
              "(fitted as its local model's is); the LSTM correction on top is the one shared network, reading the "
              "station's identity, which each station's bundle has folded in (`GlobalNetwork.for_station`). "
              "*Unknown* is the station under the unknown identity with the network's scaling and a ridge map "
              "fitted on every station (what a new station with no history gets; this station was seen in "
              "training).", "",
              "| station | lead | local | global | global / local | unknown identity | persistence |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in p1["rows"]:
        for k in (f"{lead}h" for lead in LEADS):
            lines.append(f"| {r['station']} | {k} | {r['local'][k]:.2f} | {r['global'][k]:.2f} | {r['ratio'][k]:.3f} "
                         f"| {r['unknown_identity'][k]:.2f} | {r['persistence'][k]:.2f} |")
    lines += ["", "Median global / local by lead: " + ", ".join(f"{k} {v:.3f}" for k, v in p1["median_ratio"].items())
              + ".", "",
              f"**Goal** (median ≤ {GOALS['global_median']}× at 6 h, no station worse than {GOALS['global_worst']}×): "
              f"median {p1['median_ratio_6h']:.3f}×, worst {p1['worst_station_6h']} {p1['worst_ratio_6h']:.3f}×: "
              f"{_yes(p1['goal_met'])}."]
    lines += ["", "## Leave one station out", "",
              "For each station, a global model trained on the other stations (same settings), written as a fleet's "
              "`.global/` and read back with `read_fleet`; the held-out station's own test windows forecast with "
              "0 days of its history (the unknown identity's bundle, network's scaling) and fine-tuned "
              "(`newcomer.fine_tune`) on its last 7, 30 and 365 days before its test split (training windows on the "
              "first 80 % of those days, early stopping on the last 20 %, every window wholly inside them). "
              "Ratio: 6 h RMSE against the station's own full-history local model above.", "",
              "| station | local 6 h | " + " | ".join(f"{d} d" for d in DAYS) + " | scaling / kept global weights |",
              "| --- | --- | " + " | ".join("---" for _ in DAYS) + " | --- |"]
    for r in p2["rows"]:
        how = "; ".join(f"{d} d: {_how(r['runs'][str(d)])}" for d in tasks.HISTORY_DAYS)
        lines.append(f"| {r['station']} | {r['local_6h']:.2f} | "
                     + " | ".join(f"{r['rmse_6h'][str(d)]:.2f} ({r['ratio_6h'][str(d)]:.3f}×)" for d in DAYS)
                     + f" | {how} |")
    medians = p2["median_ratio_6h"]
    lines += ["| **median ratio** | | " + " | ".join(f"**{medians[str(d)]:.3f}×**" for d in DAYS) + " | |", "",
              f"**Goal** with no history (median ≤ {GOALS['loso_median_0_days']}×): {medians['0']:.3f}×, "
              f"{_yes(p2['goal_met_0_days'])} (worst {p2['worst_ratio_6h_0_days']['station']} "
              f"{p2['worst_ratio_6h_0_days']['ratio']:.3f}×). **Goal** with 30 days "
              f"(median ≤ {GOALS['loso_median_30_days']}×): {medians['30']:.3f}×, {_yes(p2['goal_met_30_days'])}.", "",
              "A station fits its own scaling (and its own ridge map) only with at least `newcomer.OWN_SCALING_DAYS` "
              "days of *training* rows (here 80 % of its history), else it keeps the network's; *kept global*: fine-tuning did not lower "
              "the validation loss, so the global weights were kept; *ep*: fine-tuning epochs run."]
    lines += ["", "## Training time", "",
              f"Wall seconds of each training in this run (workers in parallel on a shared machine, so these are not "
              f"a cost measurement): global model on all stations {g['train_seconds']:.0f} s; local models "
              + ", ".join(f"{s} {v['train_seconds']:.0f} s" for s, v in p1["local_training"].items())
              + f" (sum {sum(v['train_seconds'] for v in p1['local_training'].values()):.0f} s); "
              "leave-one-out global models " + ", ".join(f"{r['station']} {r['global']['train_seconds']:.0f} s"
                                                         for r in p2["rows"]) + ".", "",
              "Core-seconds of one global model against the ten local ones, measured in one benchmark run, are in "
              "[benchmarks/global.json](../benchmarks/global.json) (`benchmarks/global_cost.py`)."]
    return "\n".join(lines) + "\n"


def _how(run: dict) -> str:
    if not run["fine_tuned"]:
        return run.get("note", "not fine-tuned")
    own = "own" if run["scaling"] == "own" else "network's"
    return f"{own}, {'kept global' if run['kept_global'] else 'tuned'} ({run['epochs_run']} ep)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "global.json")
    parser.add_argument("--stations", type=int, default=None, help="only the first N stations (a quick check)")
    parser.add_argument("--epochs", type=int, default=None, help="at most E epochs (a quick check)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    files = tasks.station_files(args.data_dir)
    if len(files) != 10:
        raise SystemExit(f"{args.data_dir}: expected the ten Beijing station files, found {len(files)}; "
                         "the real data live in ../shared/data")
    stations = list(files)[: args.stations] if args.stations else list(files)
    if len(stations) < 3:
        raise SystemExit("--stations must be at least 3: leaving one out must leave a fleet of two")
    from edgecast.base import write_json_atomic
    from edgecast_runtime.durable import atomic_write

    config = tasks.train_config(args.epochs)
    settings = {"data_dir": str(args.data_dir), "stations": stations, "epochs": args.epochs}
    quick = ", ".join(f"--{k} {v}" for k, v in (("stations", args.stations), ("epochs", args.epochs)) if v)
    print(f"{len(stations)} stations, {args.workers} workers{'; quick check: ' + quick if quick else ''}", flush=True)
    started = time.perf_counter()
    done = run_all(settings, args.workers)
    results = {
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "quick": quick or None, "stations": stations, "workers": args.workers,
        "train_defaults": f"LSTM {config.units} x{config.layers}, look-back {config.look_back}, horizon "
                          f"{config.horizon}, epochs {config.epochs}, patience {config.patience}, batch "
                          f"{config.batch_size}, {config.formulation}",
        "data": {s: files[s].name for s in stations},
        **summarise(done, stations),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    results["tasks"] = sorted(({k: v for k, v in r.items() if k in ("task", "station", "task_wall_seconds")}
                               for r in done), key=lambda r: (r["task"], r["station"] or ""))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, results)
    atomic_write(args.out.with_suffix(".md"), markdown(results).encode())
    print(markdown(results), flush=True)
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
