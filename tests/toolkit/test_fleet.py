"""The fleet path: one bundle per station as Ray tasks on a real Ray head, failure
isolation, incremental reruns, and fleet-trained = singly-trained metrics.

A Ray head is started once for the module on loopback (`ray start --head`) and every
process it started is ended in a finally (found by its private temp folder, so no other
Ray instance on the machine is touched). Stations are tiny synthetic series so that the
module runs in a few minutes on 2 cores.
"""
from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from conftest import EDGECAST, hourly_frame, run_cli
from support.runtime import free_port

RAY = EDGECAST.parent / "ray"
TINY = ["--target", "PM2.5", "--features", "TEMP", "--look-back", "6", "--horizon", "2", "--units", "8",
        "--epochs", "2", "--batch-size", "32", "--seed", "3"]


def _processes_of(group: int, marker: str) -> list[int]:
    """Processes in the head's process group, or naming its temp folder (Ray renames some
    processes' titles, e.g. ray::DashboardAgent, so the group is the reliable mark)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                state, pgid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0:4:2]
                named = marker.encode() in (entry / "cmdline").read_bytes()
            except (OSError, ValueError):
                continue
            if state != "Z" and (int(pgid) == group or named):
                found.append(int(entry.name))
    return found


def _end_processes(group: int, marker: str) -> None:
    """SIGTERM, then SIGKILL after a bounded wait, every process of this test's Ray head."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _processes_of(group, marker):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while _processes_of(group, marker) and time.monotonic() < deadline:
            time.sleep(0.2)


@pytest.fixture(scope="module")
def ray_head():
    """HOST:PORT of a two-CPU Ray head on 127.0.0.1 (a short temp folder: Ray's socket paths are
    length-limited), started in its own process group so that exactly its processes are ended."""
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    port = free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    starter = subprocess.Popen(
        [str(RAY), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
         "--include-dashboard", "false", "--temp-dir", temp_dir, "--num-cpus", "2", "--disable-usage-stats"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
    )
    try:
        output, _ = starter.communicate(timeout=180)
        assert starter.returncode == 0, output
        yield f"127.0.0.1:{port}"
    finally:
        starter.kill()
        _end_processes(starter.pid, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _station_csv(folder: Path, station: str, seed: int, gz: bool = False) -> Path:
    frame = hourly_frame(hours=300, seed=seed)
    frame["Station"] = station  # as the UCI files spell it
    path = folder / f"PRSA_Data_{station}_20240101-20240113.csv{'.gz' if gz else ''}"
    text = frame.to_csv(index=False).encode()
    path.write_bytes(gzip.compress(text) if gz else text)
    return path


def _fleet(*args, cwd: Path) -> subprocess.CompletedProcess:
    return run_cli("fleet", "train", *args, cwd=cwd, timeout=600)


def _hidden_leftovers(fleet_dir: Path) -> list[str]:
    """Staging folders, retired bundles and temporary files: none may outlive a run."""
    return [str(p) for p in fleet_dir.rglob("*") if p.name.startswith(".") and p.name != ".fleet.lock"]


def test_three_stations_on_a_ray_head_export_verify_and_report(tmp_path: Path, ray_head: str):
    data = tmp_path / "stations"
    data.mkdir()
    for seed, (station, gz) in enumerate([("Alpha", False), ("Beta", True), ("Gamma", True)]):
        _station_csv(data, station, seed, gz)
    run = _fleet(str(data), *TINY, "--export", "--address", ray_head, "--models-dir", "models", cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "3 trained, 0 skipped, 0 failed of 3 stations" in run.stdout
    assert "Traceback" not in run.stderr
    fleet_dir = tmp_path / "models" / "fleet"
    for station in ("alpha", "beta", "gamma"):  # ids from the file names: prefix and date range dropped
        manifest = json.loads((fleet_dir / station / "manifest.json").read_text())
        assert manifest["parity"]["passed"] and {"model.onnx", "model.tflite"} <= set(manifest["artifacts"])
        record = json.loads((fleet_dir / station / "fleet-station.json").read_text())
        assert record["verified"]["passed"] and record["verified"]["max_abs"] <= 1e-3
    run_record = json.loads((fleet_dir / "fleet-run.json").read_text())
    assert {s["threads"] for s in run_record["stations"]} == {1}  # one granted CPU, one TF/BLAS thread
    assert not _hidden_leftovers(fleet_dir)

    report = run_cli("fleet", "report", fleet_dir, "--leads", "1,2", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    summary = json.loads((fleet_dir / "fleet.json").read_text())
    assert [r["station"] for r in summary["stations"]] == ["alpha", "beta", "gamma"]
    for row in summary["stations"]:
        assert row["ratio_to_persistence"]["1"] == pytest.approx(row["rmse"]["model"]["1"] / row["rmse"]["persistence"]["1"], abs=1e-4)
        assert row["parity"]["passed"] and row["artifact_bytes"]["model.onnx"] > 0 and row["train_seconds"] > 0
    assert summary["median_station"] and summary["worst_station"]
    worst = max(summary["stations"], key=lambda r: r["mean_ratio"])
    assert summary["worst_station"] == worst["station"]
    markdown = (fleet_dir / "fleet.md").read_text()
    assert "![skill per station and lead](fleet-skill.png)" in markdown and "| median" not in markdown.split("\n")[0]
    assert (fleet_dir / "fleet-skill.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_bad_station_fails_alone_and_a_rerun_skips_finished_stations(tmp_path: Path, ray_head: str):
    data = tmp_path / "stations"
    data.mkdir()
    _station_csv(data, "Alpha", 0)
    _station_csv(data, "Beta", 1, gz=True)
    (data / "broken.csv").write_text("year,month,day,hour,PM2.5,TEMP,Station\n2024,1,1,0,5,1,Broken\n")
    args = [str(data), *TINY, "--station-column", "station", "--address", ray_head, "--models-dir", "models"]
    first = _fleet(*args, cwd=tmp_path)
    assert first.returncode == 1, first.stdout + first.stderr  # exit code = stations failed
    assert "2 trained, 0 skipped, 1 failed of 3 stations" in first.stdout
    failure = [line for line in first.stderr.splitlines() if line.startswith("broken: ")]
    assert len(failure) == 1 and "broken.csv" in failure[0], first.stderr
    assert "Traceback" not in first.stderr
    fleet_dir = tmp_path / "models" / "fleet"
    # ids from the column `Station` (found for `station`), lower-cased as every id is
    assert sorted(p.name for p in fleet_dir.iterdir() if p.is_dir()) == ["alpha", "beta"]
    assert not _hidden_leftovers(fleet_dir)
    written = {s: (fleet_dir / s / "model.keras").stat().st_mtime_ns for s in ("alpha", "beta")}

    second = _fleet(*args, cwd=tmp_path)
    assert second.returncode == 1 and "0 trained, 2 skipped, 1 failed of 3 stations" in second.stdout, second.stdout
    assert {s: (fleet_dir / s / "model.keras").stat().st_mtime_ns for s in written} == written

    run_record = json.loads((fleet_dir / "fleet-run.json").read_text())
    assert {s["station"]: s["status"] for s in run_record["stations"]} == {
        "alpha": "skipped", "beta": "skipped", "broken": "failed"}


def test_new_data_or_new_settings_make_a_station_stale(tmp_path: Path):
    from edgecast.fleet import FleetSettings, Station
    from edgecast.fleet.stations import STATION_RECORD, up_to_date
    from edgecast.trainer.settings import TrainConfig

    settings = FleetSettings("PM2.5", ["TEMP"], config=TrainConfig(seed=3))
    station = Station("alpha", tmp_path / "alpha.csv", "ab" * 32)
    bundle = tmp_path / "alpha"
    bundle.mkdir()
    assert not up_to_date(bundle, station, settings)  # no record: never trained by the fleet
    (bundle / STATION_RECORD).write_text(json.dumps({"fingerprint": station.fingerprint(settings)}))
    assert up_to_date(bundle, station, settings)
    assert not up_to_date(bundle, Station("alpha", station.data, "cd" * 32), settings)  # new data
    assert not up_to_date(bundle, station, FleetSettings("PM2.5", ["TEMP"], config=TrainConfig(seed=4)))
    assert not up_to_date(bundle, station, FleetSettings("PM2.5", ["TEMP"], config=TrainConfig(seed=3), export=True))


def test_fleet_metrics_equal_single_edgecast_train(tmp_path: Path, ray_head: str):
    from edgecast import fleet
    from edgecast.trainer.settings import TrainConfig

    data = tmp_path / "stations"
    data.mkdir()
    first, second = _station_csv(data, "Alpha", 5), _station_csv(data, "Beta", 6, gz=True)
    config = TrainConfig(look_back=6, horizon=2, units=8, epochs=2, batch_size=32, seed=3)
    # One worker: Beta runs after Alpha in a reused worker process, the harder case for reproducibility.
    result = fleet.train([first, second], "PM2.5", features=["TEMP"], config=config, models_dir=tmp_path / "models",
                         address=ray_head, workers=1)
    assert [s.status for s in result.stations] == ["trained", "trained"], result.stations
    single = run_cli("train", second, *TINY, "--name", "beta-single", "--models-dir", "single", cwd=tmp_path)
    assert single.returncode == 0, single.stderr
    fleet_bundle, single_bundle = tmp_path / "models" / "fleet" / "beta", tmp_path / "single" / "beta-single"
    for name in ("metrics.json", "preprocessing.json"):
        assert json.loads((fleet_bundle / name).read_text()) == json.loads((single_bundle / name).read_text()), name
    fleet_history = json.loads((fleet_bundle / "training.json").read_text())["history"]
    single_history = json.loads((single_bundle / "training.json").read_text())["history"]
    assert fleet_history == single_history  # every epoch's losses, exactly

    again = fleet.train([first, second], "PM2.5", features=["TEMP"], config=config, models_dir=tmp_path / "models",
                        address=ray_head, workers=1)
    assert [s.status for s in again.stations] == ["skipped", "skipped"]
    assert again.ray_init_seconds is None  # nothing to run: Ray was not even joined
