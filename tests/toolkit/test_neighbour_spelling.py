"""`edgecast train --neighbours` with neighbours that spell the target in another case
(issue 27, case 3): found whatever the case, named in the station's spelling, refused
in one line when two columns differ only in case or when a neighbour's file is bad."""
from __future__ import annotations

import json
from pathlib import Path

from conftest import hourly_frame, run_cli

TINY = ["--look-back", "6", "--horizon", "1", "--units", "4", "--epochs", "1", "--batch-size", "64", "--seed", "2"]


def _station(path: Path, seed: int, *targets: str) -> Path:
    frame = hourly_frame(hours=200, seed=seed).drop(columns="TEMP")
    for extra, name in enumerate(targets or ("PM2.5",)):
        frame[name] = frame["PM2.5"] + extra if name != "PM2.5" else frame["PM2.5"]
    if "PM2.5" not in targets and targets:
        frame = frame.drop(columns="PM2.5")
    frame.to_csv(path, index=False)
    return path


def test_neighbours_in_any_case_and_named(tmp_path: Path):
    home = _station(tmp_path / "home.csv", 1)
    lower = _station(tmp_path / "upwind.csv", 2, "pm2.5")
    mixed = _station(tmp_path / "PRSA_data_2010.1.1-2014.12.31.csv", 3, "Pm2.5")  # no id in the name
    run = run_cli("train", home, "--target", "pm2.5", *TINY, "--neighbours", lower, "--neighbours", f"West={mixed}",
                  "--models-dir", "models", cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    spec = json.loads((tmp_path / "models" / "home" / "preprocessing.json").read_text())
    assert spec["features"] == ["PM2.5", "PM2.5@upwind", "PM2.5@west"]  # the station's spelling, ids lower-cased
    recorded = json.loads((tmp_path / "models" / "home" / "training.json").read_text())["neighbours"]
    assert recorded["sources"]["west"]["source"].endswith(mixed.name) and recorded["dropped"] == {}


def test_an_ambiguous_or_bad_neighbour_is_one_line(tmp_path: Path):
    home = _station(tmp_path / "home.csv", 1, "Pm2.5")
    twice = _station(tmp_path / "twice.csv", 2, "PM2.5", "pm2.5")  # neither is spelled as the station does
    run = run_cli("train", home, "--target", "pm2.5", *TINY, "--neighbours", twice, "--models-dir", "models",
                  cwd=tmp_path)
    assert run.returncode != 0 and "Traceback" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "twice.csv" in lines[0] and "ambiguous" in lines[0] and "PM2.5, pm2.5" in lines[0], lines

    other = _station(tmp_path / "other.csv", 3, "NO2")  # a neighbour without the reading at all
    run = run_cli("train", home, "--target", "pm2.5", *TINY, "--neighbours", other, "--models-dir", "models",
                  cwd=tmp_path)
    assert run.returncode != 0 and "Traceback" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "neighbour 'other'" in lines[0] and "no column 'Pm2.5'" in lines[0], lines
    assert not (tmp_path / "models" / "home").exists()
