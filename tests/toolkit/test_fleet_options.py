"""`edgecast fleet train` takes the reading and training options of `edgecast train` and
passes them to each station (issue 22); a station whose time column the reader does not
recognise fails alone, with the one line that says what to pass (issue 27, case 4).

On the module's own Ray head (the fixture of test_fleet.py), two tiny runs.
"""
from __future__ import annotations

import json
from pathlib import Path

from conftest import hourly_frame, run_cli
from test_fleet import ray_head  # noqa: F401  (a module-scoped fixture: this module starts its own head)
from test_station_files_cli import datum_zeit

TINY = ["--target", "PM2.5", "--features", "TEMP", "--look-back", "6", "--horizon", "2", "--units", "4",
        "--epochs", "2", "--batch-size", "32", "--seed", "3"]


def test_an_unrecognised_time_column_fails_its_station_alone_and_the_options_reach_training_json(
        tmp_path: Path, ray_head: str):  # noqa: F811
    data = tmp_path / "stations"
    data.mkdir()
    hourly_frame(hours=240, seed=1).to_csv(data / "alpha.csv", index=False)
    datum_zeit(data / "beta.csv")
    common = [*TINY, "--address", ray_head, "--models-dir", "models"]

    first = run_cli("fleet", "train", data, *common, cwd=tmp_path)
    assert first.returncode == 1, first.stdout + first.stderr  # one station failed
    assert "1 trained, 0 skipped, 1 failed of 2 stations" in first.stdout
    failure = [line for line in first.stderr.splitlines() if line.startswith("beta: ")]
    assert len(failure) == 1, first.stderr
    for fragment in ("beta.csv", "column 'Datum Zeit' looks like timestamps", "file order",
                     "pass --time-column 'Datum Zeit' (and --dayfirst or --time-format"):
        assert fragment in failure[0], failure[0]
    assert "Traceback" not in first.stderr
    fleet_dir = tmp_path / "models" / "fleet"
    recorded = {s["station"]: s for s in json.loads((fleet_dir / "fleet-run.json").read_text())["stations"]}
    assert recorded["alpha"]["status"] == "trained" and recorded["beta"]["status"] == "failed"
    assert "pass time_column 'Datum Zeit'" in recorded["beta"]["error"]  # the library's record names settings
    assert not (fleet_dir / "beta").exists()

    second = run_cli("fleet", "train", data / "beta.csv", *common, "--time-column", "Datum Zeit", "--dayfirst",
                     "--valid-range", "PM2.5=0,500", "--target-min", "1", "--no-neighbour-masking", cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "1 trained, 0 skipped, 0 failed of 1 stations" in second.stdout
    training = json.loads((fleet_dir / "beta" / "training.json").read_text())
    assert training["data"]["time_columns"] == ["Datum Zeit"] and training["data"]["interval_seconds"] == 3600
    assert training["data"]["valid_ranges"] == {"PM2.5": [0.0, 500.0]}
    assert training["config"]["target_min"] == 1.0 and training["config"]["neighbour_masking"] is False
    spec = json.loads((fleet_dir / "beta" / "preprocessing.json").read_text())
    assert spec["time_format"]["dayfirst"] is True
    settings = json.loads((fleet_dir / "beta" / "fleet-station.json").read_text())["settings"]
    assert settings["dayfirst"] is True and settings["time_column"] == "Datum Zeit"


def test_reading_options_at_their_defaults_keep_an_older_fleet_up_to_date(tmp_path: Path):
    """Fingerprints written before the fleet took the reading options stay valid while those keep
    their defaults; any of them set makes the station stale."""
    from edgecast.fleet import FleetSettings, Station
    from edgecast.fleet.stations import ADDED_LATER
    from edgecast.trainer.settings import TrainConfig

    settings = FleetSettings("PM2.5", ["TEMP"], config=TrainConfig(seed=3))
    older = {key: value for key, value in settings.as_dict().items() if key not in ADDED_LATER}
    assert settings.fingerprint_dict() == older
    station = Station("alpha", tmp_path / "alpha.csv", "ab" * 32)
    for changed in ({"dayfirst": True}, {"time_format": "%d.%m.%Y %H:%M"}, {"valid_ranges": {"PM2.5": (0.0, 500.0)}},
                    {"delimiter": ";"}, {"tflite": False}):
        other = FleetSettings("PM2.5", ["TEMP"], config=TrainConfig(seed=3), **changed)
        assert station.fingerprint(other) != station.fingerprint(settings), changed
