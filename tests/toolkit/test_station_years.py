"""Several files per station (yearly exports), joined in time order with their overlaps
checked (issue 27): identical overlapping rows are taken once, a conflicting one is refused
with one line naming both files and the first conflicting timestamp; in `edgecast train`
given several files, and in `edgecast fleet train` (STATION=FILE repeated, or the station
column), where a conflicting station fails alone. Through the command line, tiny data."""
from __future__ import annotations

import json
from pathlib import Path

from conftest import hourly_frame, run_cli
from test_fleet import ray_head  # noqa: F401  (a module-scoped fixture: this module starts its own head)

TINY = ["--target", "PM2.5", "--features", "TEMP", "--look-back", "6", "--units", "4", "--epochs", "2",
        "--batch-size", "32", "--seed", "3"]
HOURS = 240


def split_years(folder: Path, name: str, seed: int = 0, overlap: int = 20, **columns) -> tuple[Path, Path]:
    """The first 140 hours in one file, the rest (with `overlap` hours of the first again,
    identical) in another, `;`-separated with decimal commas, as another year's export may be."""
    frame = hourly_frame(hours=HOURS, seed=seed).assign(**columns)
    first, second = folder / f"{name}-2024a.csv", folder / f"{name}-2024b.csv"
    frame.iloc[:140].to_csv(first, index=False)
    frame.iloc[140 - overlap:].to_csv(second, index=False, sep=";", decimal=",")
    return first, second


def conflicting(path: Path, row: int = 5) -> None:
    """Change one reading of the second file within its overlap with the first."""
    lines = path.read_text().splitlines()
    fields = lines[1 + row].split(";")
    fields[4] = "999,5"  # PM2.5
    lines[1 + row] = ";".join(fields)
    path.write_text("\n".join(lines) + "\n")


def test_train_joins_yearly_files_in_time_order_as_the_whole_file(tmp_path):
    whole = tmp_path / "whole.csv"
    hourly_frame(hours=HOURS).to_csv(whole, index=False)
    first, second = split_years(tmp_path, "station")
    joined = run_cli("train", second, first, *TINY, "--name", "joined", "--models-dir", tmp_path / "models")
    assert joined.returncode == 0, joined.stdout + joined.stderr
    alone = run_cli("train", whole, *TINY, "--name", "alone", "--models-dir", tmp_path / "models")
    assert alone.returncode == 0, alone.stderr
    data = json.loads((tmp_path / "models" / "joined" / "training.json").read_text())["data"]
    assert data["files"] == [str(first), str(second)]  # in time order, whatever the order given
    assert data["rows_read"] == HOURS + 20 and data["rows_regular"] == HOURS and data["interval_seconds"] == 3600
    assert data["source"] == f"{first} + {second}"
    assert "note: station-2024b.csv: read as ';'-separated with decimal commas" in joined.stderr
    metrics = [json.loads((tmp_path / "models" / name / "metrics.json").read_text()) for name in ("joined", "alone")]
    assert metrics[0] == metrics[1]  # the same series, the same model


def test_train_refuses_a_conflicting_overlap_in_one_line(tmp_path):
    first, second = split_years(tmp_path, "station")
    conflicting(second, row=5)  # hour 140 - 20 + 5 = 125: 2024-01-06 05:00
    result = run_cli("train", first, second, *TINY, "--models-dir", tmp_path / "models")
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in (str(first), str(second), "overlap with different readings, first at 2024-01-06 05:00:00",
                     "PM2.5", "999.5", "1 conflicting row of 20 shared"):
        assert fragment in lines[0], lines[0]
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_a_neighbours_yearly_files_are_joined_too(tmp_path):
    own = tmp_path / "own.csv"
    hourly_frame(hours=HOURS, seed=4).to_csv(own, index=False)
    first, second = split_years(tmp_path, "other", seed=5)
    result = run_cli("train", own, *TINY, "--neighbours", f"other={first}", "--neighbours", f"other={second}",
                     "--models-dir", tmp_path / "models")
    assert result.returncode == 0, result.stdout + result.stderr
    training = json.loads((tmp_path / "models" / "own" / "training.json").read_text())
    assert training["neighbours"]["stations"] == ["other"]
    assert training["neighbours"]["sources"]["other"]["source"] == f"{first} + {second}"
    conflicting(second)
    refused = run_cli("train", own, *TINY, "--neighbours", f"other={first}", "--neighbours", f"other={second}",
                      "--models-dir", tmp_path / "models2")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "neighbour 'other':" in refused.stderr and "overlap with different readings" in refused.stderr


def test_fleet_joins_a_stations_files_and_a_conflicting_station_fails_alone(tmp_path: Path,
                                                                          ray_head: str):  # noqa: F811
    data = tmp_path / "data"
    data.mkdir()
    alpha = split_years(data, "exportA", seed=1)  # named by STATION=FILE, twice
    delta = split_years(data, "exportD", seed=2, Station="Delta")  # named by the station column
    beta = split_years(data, "exportB", seed=3)
    conflicting(beta[1], row=0)
    run = run_cli("fleet", "train", f"alpha={alpha[0]}", f"Alpha={alpha[1]}", *delta, f"beta={beta[0]}",
                  f"beta={beta[1]}", "--station-column", "station", *TINY, "--horizon", "2", "--address", ray_head,
                  "--models-dir", "models", cwd=tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr  # one station failed
    assert "2 trained, 0 skipped, 1 failed of 3 stations" in run.stdout, run.stdout
    failure = [line for line in run.stderr.splitlines() if line.startswith("beta: ")]
    assert len(failure) == 1 and "Traceback" not in run.stderr, run.stderr
    assert "overlap with different readings, first at 2024-01-06 00:00:00" in failure[0]
    assert str(beta[0].resolve()) in failure[0] and str(beta[1].resolve()) in failure[0]
    fleet = tmp_path / "models" / "fleet"
    for station, files in (("alpha", alpha), ("delta", delta)):
        record = json.loads((fleet / station / "fleet-station.json").read_text())
        assert record["data"]["files"] == [str(f.resolve()) for f in files]
        training = json.loads((fleet / station / "training.json").read_text())["data"]
        assert training["rows_read"] == HOURS + 20 and training["rows_regular"] == HOURS
    assert not (fleet / "beta").exists()
    again = run_cli("fleet", "train", f"alpha={alpha[1]}", f"alpha={alpha[0]}", *delta, "--station-column", "station",
                    *TINY, "--horizon", "2", "--address", ray_head, "--models-dir", "models", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 trained, 2 skipped, 0 failed of 2 stations" in again.stdout  # the files' order does not matter
