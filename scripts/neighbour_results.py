"""Neighbouring stations as inputs, measured over the ten shared Beijing stations; writes
results/neighbours.json and results/neighbours.md.

    .venv/bin/python scripts/neighbour_results.py [--data-dir ../shared/data] [--models-dir build/neighbour-results]
        [--masking-only results/neighbours-masking-only.json] [--report-only]

Two `edgecast fleet train` runs with the same settings, one per station each: the
station's own history alone, and with every other station's PM2.5 (`--neighbours all`,
exported and verified in the fleet task, so parity is checked on every station's
windows with neighbours masked and missing). `edgecast evaluate` then scores each
bundle on its test split: the model with neighbours, the same model with every
neighbour missing, the own-history model, persistence and ridge (`edgecast fleet
report --without` tabulates the same in the network fleet's fleet.md). Finally every
exported neighbour model runs in the runtime (ONNX) over its test windows, with and
without neighbours, to find its lowest forecast. The data are never copied.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from edgecast_cli import edgecast  # noqa: E402  (scripts/ is on sys.path when run)

from edgecast_runtime.spec import Spec  # noqa: E402

SETTINGS = ["--target", "PM2.5", "--clock", "+08:00", "--horizon", "6", "--units", "32", "--epochs", "8",
            "--patience", "3", "--workers", "2"]
STEPS = (1, 6)
# Done-when: median RMSE with neighbours over the own-history model's, at most these;
# no station worse than without neighbours by more than WORST; with every neighbour
# missing, each station within SILENT of its own-history model.
MEDIAN_LIMITS = {"1h": 0.97, "6h": 0.95}
WORST = 1.01
SILENT = 1.02


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "build" / "neighbour-results")
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    parser.add_argument("--masking-only", type=Path, default=None,
                        help="an earlier run's JSON of models without the own-history fallback, to compare")
    parser.add_argument("--report-only", action="store_true", help="rewrite neighbours.md from neighbours.json")
    args = parser.parse_args()
    if args.report_only:
        report = json.loads((args.out / "neighbours.json").read_text())
        if args.masking_only:
            report["masking_only"] = masking_only_summary(args.masking_only)
            (args.out / "neighbours.json").write_text(json.dumps(report, indent=2) + "\n")
        (args.out / "neighbours.md").write_text(markdown(report))
        print(f"wrote {args.out / 'neighbours.md'}")
        return
    if not args.data_dir.is_dir():
        raise SystemExit(f"{args.data_dir}: the shared Beijing data are not here; nothing to measure")
    files = sorted(p for p in args.data_dir.iterdir() if p.name.startswith("PRSA_Data_"))
    started = time.perf_counter()
    runs = {}
    for name, extra in (("own", []), ("network", ["--neighbours", "all", "--export"])):
        begun = time.perf_counter()
        edgecast("fleet", "train", *map(str, files), *SETTINGS, *extra, "--name", name,
                 "--models-dir", str(args.models_dir), echo=True)
        runs[name] = round(time.perf_counter() - begun, 1)
    edgecast("fleet", "report", str(args.models_dir / "network"), "--leads", "1,6",
             "--without", str(args.models_dir / "own"))
    stations = [station_row(args.models_dir, csv) for csv in files]
    summary = summarise(stations)
    report = {
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "edgecast fleet train DATA " + " ".join(SETTINGS) + " [--neighbours all --export]",
        "fleet_seconds": runs,
        "total_seconds": round(time.perf_counter() - started, 1),
        "summary": summary,
        "stations": stations,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "neighbours.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "neighbours.md").write_text(markdown(report))
    print(f"wrote {args.out / 'neighbours.md'} and neighbours.json")


def station_row(models_dir: Path, csv: Path) -> dict:
    from edgecast.trainer.stations import station_from_file_name

    station = station_from_file_name(csv)
    network = json.loads(edgecast("evaluate", str(models_dir / "network" / station), str(csv), "--json"))["metrics"]
    own = json.loads(edgecast("evaluate", str(models_dir / "own" / station), str(csv), "--json"))["metrics"]
    rmse = {
        "with_neighbours": pick(network["model"]),
        "neighbours_missing": pick(network["model_neighbours_missing"]),
        "own_history": pick(own["model"]),
        "persistence": pick(network["persistence"]),
        "ridge": pick(network["ridge"]),
        "with_neighbours_unclipped": pick(network["model_unclipped"]),
    }
    manifest = json.loads((models_dir / "network" / station / "manifest.json").read_text())
    spec = Spec.from_dict(json.loads((models_dir / "network" / station / "preprocessing.json").read_text()))
    return {
        "station": station,
        "neighbours": sorted(neighbour.station for neighbour in spec.neighbours),
        "test_windows": network["windows"],
        "rmse": rmse,
        "ratio_with_to_own": {k: round(rmse["with_neighbours"][k] / rmse["own_history"][k], 4) for k in rmse["own_history"]},
        "ratio_missing_to_own": {k: round(rmse["neighbours_missing"][k] / rmse["own_history"][k], 4)
                                 for k in rmse["own_history"]},
        "parity": {"passed": manifest["parity"]["passed"],
                   "max_abs": max(check["max_abs"] for check in manifest["parity"]["checks"]),
                   "window_sets": sorted({check["windows"] for check in manifest["parity"]["checks"]})},
        "lowest_forecast": lowest_forecast(models_dir / "network" / station),
    }


def pick(scores: dict) -> dict:
    return {f"{step}h": round(scores["rmse"][step - 1], 4) for step in STEPS}


def lowest_forecast(bundle: Path) -> dict:
    """The exported model's lowest forecast in the runtime over the test windows, as they
    are and with every neighbour missing."""
    from edgecast_runtime import Forecaster

    forecaster = Forecaster(bundle / "model.onnx")
    with np.load(bundle / "windows.npz") as windows:
        x = windows["test_x"].astype(np.float32)
    silent = x.copy()
    silent[:, :, 1:] = np.nan  # column 0 is the station's own PM2.5, the rest its neighbours'
    return {"as_recorded": float(forecaster.predict_batch(x).min()),
            "neighbours_missing": float(forecaster.predict_batch(silent).min())}


def masking_only_summary(path: Path) -> dict:
    """Per station, the ratios of an earlier run whose neighbour models had no fallback."""
    earlier = json.loads(path.read_text())
    return {"source": path.name, "created": earlier["created"], "summary": earlier["summary"],
            "stations": {s["station"]: {"ratio_with_to_own": s["ratio_with_to_own"],
                                        "ratio_missing_to_own": s["ratio_missing_to_own"]}
                         for s in earlier["stations"]}}


def summarise(stations: list[dict]) -> dict:
    def median(key: str, step: str) -> float:
        return round(statistics.median(s[key][step] for s in stations), 4)

    medians = {step: {"with_to_own": median("ratio_with_to_own", step),
                      "missing_to_own": median("ratio_missing_to_own", step)} for step in ("1h", "6h")}
    worst = max(s["ratio_with_to_own"][step] for s in stations for step in ("1h", "6h"))
    worst_silent = max(s["ratio_missing_to_own"][step] for s in stations for step in ("1h", "6h"))
    lowest = min(min(s["lowest_forecast"].values()) for s in stations)
    return {
        "medians": medians,
        "worst_with_to_own": worst,
        "worst_missing_to_own": worst_silent,
        "lowest_forecast": lowest,
        "checks": {
            "median_6h_with_to_own <= 0.95": medians["6h"]["with_to_own"] <= MEDIAN_LIMITS["6h"],
            "median_1h_with_to_own <= 0.97": medians["1h"]["with_to_own"] <= MEDIAN_LIMITS["1h"],
            "no_station_worse_than_1%": worst <= WORST,
            "neighbours_missing_within_2%_of_own": worst_silent <= SILENT,
            "parity_every_station": all(s["parity"]["passed"] for s in stations),
            "no_negative_forecast": lowest >= 0,
        },
    }


def markdown(report: dict) -> str:
    summary = report["summary"]
    lines = [
        "# Neighbouring stations as inputs: ten Beijing stations",
        "",
        f"Made by `scripts/neighbour_results.py` ({report['created']}): `{report['command']}`; PM2.5 only, "
        "look-back 24, the own-history model and the neighbour model trained with identical settings. "
        "RMSE in µg/m³ on each station's test split (the last 15 %), from `edgecast evaluate`.",
        "",
        "| station | with neighbours 1 h | 6 h | own history 1 h | 6 h | neighbours missing 1 h | 6 h "
        "| persistence 1 h | 6 h | ridge 1 h | 6 h | with/own 1 h | 6 h | missing/own 1 h | 6 h |",
        "| --- |" + " ---: |" * 14,
    ]
    for s in report["stations"]:
        r = s["rmse"]
        cells = [r[m][k] for m in ("with_neighbours", "own_history", "neighbours_missing", "persistence", "ridge")
                 for k in ("1h", "6h")]
        ratios = [s["ratio_with_to_own"]["1h"], s["ratio_with_to_own"]["6h"],
                  s["ratio_missing_to_own"]["1h"], s["ratio_missing_to_own"]["6h"]]
        lines.append(f"| {s['station']} | " + " | ".join(f"{v:.2f}" for v in cells) + " | "
                     + " | ".join(f"{v:.3f}" for v in ratios) + " |")
    medians = summary["medians"]
    lines += [
        "",
        f"Medians over the stations, with neighbours / own history: 1 h **{medians['1h']['with_to_own']:.3f}**, "
        f"6 h **{medians['6h']['with_to_own']:.3f}**; every neighbour missing / own history: 1 h "
        f"{medians['1h']['missing_to_own']:.3f}, 6 h {medians['6h']['missing_to_own']:.3f}. Worst station, with "
        f"neighbours / own: {summary['worst_with_to_own']:.3f}; neighbours missing / own: "
        f"{summary['worst_missing_to_own']:.3f}. Lowest forecast of any exported model (runtime, ONNX, test "
        f"windows with and without neighbours): {summary['lowest_forecast']:.3f}.",
        "",
        "| check | holds |",
        "| --- | --- |",
        *[f"| {name} | {'yes' if ok else 'no'} |" for name, ok in summary["checks"].items()],
        "",
        "Clipping at 0 (in the graph) changes the neighbour models' test RMSE from "
        + ", ".join(f"{s['station']} {s['rmse']['with_neighbours_unclipped']['6h']:.2f} to "
                    f"{s['rmse']['with_neighbours']['6h']:.2f}" for s in report["stations"])
        + " at 6 h.",
        "",
    ]
    if "masking_only" in report:
        lines += masking_lines(report)
    return "\n".join(lines)


def masking_lines(report: dict) -> list[str]:
    """Masking alone against masking plus the own-history fallback in the graph."""
    earlier = report["masking_only"]
    lines = [
        "## Masking alone or a fallback in the bundle",
        "",
        f"An earlier run (`{earlier['source']}`, {earlier['created']}, same settings) exported the "
        "neighbour models without the own-history fallback: trained with neighbours silenced at random "
        "only. Ratios to the own-history model:",
        "",
        "| station | masking: with 1 h | 6 h | masking: all missing 1 h | 6 h "
        "| with fallback: with 1 h | 6 h | with fallback: all missing 1 h | 6 h |",
        "| --- |" + " ---: |" * 8,
    ]
    for s in report["stations"]:
        old = earlier["stations"].get(s["station"])
        if old is None:
            continue
        cells = [old["ratio_with_to_own"]["1h"], old["ratio_with_to_own"]["6h"],
                 old["ratio_missing_to_own"]["1h"], old["ratio_missing_to_own"]["6h"],
                 s["ratio_with_to_own"]["1h"], s["ratio_with_to_own"]["6h"],
                 s["ratio_missing_to_own"]["1h"], s["ratio_missing_to_own"]["6h"]]
        lines.append(f"| {s['station']} | " + " | ".join(f"{v:.3f}" for v in cells) + " |")
    old, new = earlier["summary"], report["summary"]
    lines += [
        "",
        f"Masking alone: medians with neighbours {old['medians']['1h']['with_to_own']:.3f} (1 h), "
        f"{old['medians']['6h']['with_to_own']:.3f} (6 h); every neighbour missing, worst station "
        f"{old['worst_missing_to_own']:.3f}. With the fallback: {new['medians']['1h']['with_to_own']:.3f}, "
        f"{new['medians']['6h']['with_to_own']:.3f}; every neighbour missing, worst station "
        f"{new['worst_missing_to_own']:.3f}.",
        "",
    ]
    return lines


if __name__ == "__main__":
    main()
