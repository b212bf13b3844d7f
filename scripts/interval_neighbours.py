"""What the network's readings add to P(PM2.5 > 75) (issue 23, Done when 2): each of the ten
stations trained with scripts/interval_results.py's settings plus `--neighbours` (the other
nine files), scored on its own test split by the trainer (metrics.json: Brier skill
against the training split's climatology, the static interval's coverage), beside the
same station's figures in results/intervals.json (the settings without neighbours).
Writes results/interval_neighbours.json and results/interval_neighbours.md.

    .venv/bin/python scripts/interval_neighbours.py [--data-dir ../shared/data] [--models-dir build/interval-neighbours]

Run scripts/interval_results.py first: its results are the reference. No hub replay here
(a neighbour model's replay needs every neighbour's readings on the hub); the issue's
defaults are what results/intervals.md scores, and this is the one option that moves 6 h.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from edgecast_cli import edgecast  # noqa: E402  (scripts/ is on sys.path when run)
from interval_results import (  # noqa: E402
    ALERT,
    COVERAGE,
    HORIZON,
    LEVELS,
    ROOT,
    TARGETS,
    WEATHER,
    arguments,
    stations,
)

from edgecast.base import write_json_atomic  # noqa: E402
from edgecast_runtime.durable import atomic_write  # noqa: E402

LEADS = (6, 24)


def train(name: str, csv: Path, others: list[Path], models_dir: Path) -> dict:
    started = time.perf_counter()
    neighbours = [option for path in others for option in ("--neighbours", str(path))]
    edgecast("train", str(csv), "--target", "PM2.5", "--features", WEATHER, "--horizon", str(HORIZON),
             "--clock", "+08:00", "--interval", str(COVERAGE), "--quantiles", LEVELS, "--alert", ALERT.name,
             *neighbours, "--name", name.lower(), "--models-dir", str(models_dir))
    bundle = models_dir / name.lower()
    metrics = json.loads((bundle / "metrics.json").read_text())["intervals"]
    history = json.loads((bundle / "training.json").read_text())["history"]
    return {"station": name, "seconds": round(time.perf_counter() - started, 1),
            "epochs_run": history["epochs_run"], "best_epoch": history["best_epoch"],
            "brier_skill_by_lead": metrics["alerts"][ALERT.name]["brier_skill_by_lead"],
            "coverage_by_lead": metrics["interval"]["coverage_by_lead"]}


def reference(path: Path) -> dict[str, list[float]]:
    if not path.is_file():
        raise SystemExit(f"{path} is absent: run scripts/interval_results.py first")
    return {r["station"]: r["model"]["alerts"][ALERT.name]["brier_skill_by_lead"]
            for r in json.loads(path.read_text())["results"]}


def summary(rows: list[dict], without: dict[str, list[float]]) -> dict:
    return {f"{lead}h": {"median_with": statistics.median(r["brier_skill_by_lead"][lead - 1] for r in rows),
                         "median_without": statistics.median(without[r["station"]][lead - 1] for r in rows),
                         "stations_better": sum(r["brier_skill_by_lead"][lead - 1] > without[r["station"]][lead - 1]
                                                for r in rows),
                         "target": TARGETS[f"brier_skill_{lead}h"]} for lead in LEADS}


def markdown(rows: list[dict], without: dict[str, list[float]], found: dict, seconds: float) -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = ["# P(PM2.5 > 75) with the network's readings as inputs", "",
             f"Written by `scripts/interval_neighbours.py` on {when} in {seconds:.0f} s: the settings of "
             "`results/intervals.md` plus `--neighbours` (the other nine stations' PM2.5), Brier skill against "
             "the training split's climatology on each station's test split, beside `results/intervals.json` "
             "(no neighbours). Static coverage: the exported interval before any hub adjustment.", "",
             "| station | Brier skill 6h | without | Brier skill 24h | without | static coverage | epochs (best) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        skill, base, cover = r["brier_skill_by_lead"], without[r["station"]], r["coverage_by_lead"]
        lines.append(f"| {r['station']} | {skill[5]:.3f} | {base[5]:.3f} | {skill[23]:.3f} | {base[23]:.3f} | "
                     f"{min(cover):.3f}–{max(cover):.3f} | {r['epochs_run']} ({r['best_epoch']}) |")
    lines += [""] + [f"- {lead}: median {v['median_with']:.3f} with neighbours, {v['median_without']:.3f} without "
                     f"(target ≥ {v['target']}); {v['stations_better']} of {len(rows)} stations better"
                     for lead, v in found.items()]
    return "\n".join(lines) + "\n"


def main() -> int:
    args = arguments(__doc__, "interval-neighbours")
    without = reference(ROOT / "results" / "intervals.json")
    started, rows = time.perf_counter(), []
    files = stations(args.data_dir)
    for name, csv in files.items():
        print(f"{name}: training with {len(files) - 1} neighbours", flush=True)
        rows.append(train(name, csv, [path for other, path in files.items() if other != name], args.models_dir))
    seconds = time.perf_counter() - started
    found = summary(rows, without)
    write_json_atomic(ROOT / "results" / "interval_neighbours.json", {"results": rows, "summary": found})
    text = markdown(rows, without, found, seconds)
    atomic_write(ROOT / "results" / "interval_neighbours.md", text.encode())
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
