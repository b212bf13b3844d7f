"""Build the schema-3 fixture: a real, tiny `edgecast train --neighbours` + `edgecast
export` of a PM2.5 model that reads two neighbouring stations (upwind, far), and the
three stations' recorded readings, for the runtime's neighbour tests.

Run with the toolkit's Python (it needs edgecast, pandas, tensorflow):

    .venv/bin/python tests/runtime/make_neighbours_fixture.py

It writes tests/runtime/fixtures/neighbours/: `STATION.onnx` for each of the three
stations (each reads the other two), `model.onnx` (= home.onnx) with its `manifest.json`
(trimmed to what the runtime reads) and `readings.json` (per station, hourly readings with
epoch timestamps). Training is not bit-reproducible across machines; the tests
compare the hub with the runtime's own offline predictions, so they need no reference.
"""

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
OUT = HERE / "fixtures" / "neighbours"
STATIONS = ("home", "upwind", "far")
HOURS = 240
RECORDED = 30  # readings per station kept for the tests


def station_frame(seed: int, lead: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    times = pd.date_range("2024-01-01", periods=HOURS, freq="h", tz="UTC")
    hours = np.arange(HOURS) + lead
    pm = 60 + 25 * np.sin(2 * np.pi * hours / 24) + rng.normal(0, 3, HOURS)
    return pd.DataFrame({"timestamp": times.strftime("%Y-%m-%dT%H:%M:%SZ"), "PM2.5": pm.round(2)})


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    frames = {name: station_frame(seed, lead) for name, seed, lead in zip(STATIONS, (1, 2, 3), (0, 2, 0))}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        for name, frame in frames.items():
            frame.to_csv(folder / f"{name}.csv", index=False)
        edgecast = [sys.executable, "-m", "edgecast.cli"]
        for name in STATIONS:  # each station's model reads the other two
            others = [arg for other in STATIONS if other != name for arg in ("--neighbours", str(folder / f"{other}.csv"))]
            subprocess.run([*edgecast, "train", str(folder / f"{name}.csv"), "--target", "PM2.5", *others,
                            "--look-back", "4", "--horizon", "2", "--units", "4", "--epochs", "2",
                            "--batch-size", "32", "--name", name, "--models-dir", str(folder)], check=True)
            subprocess.run([*edgecast, "export", str(folder / name), "--no-tflite"], check=True)
            model = (folder / name / "model.onnx").read_bytes()
            (OUT / f"{name}.onnx").write_bytes(model)
            if name == "home":
                (OUT / "model.onnx").write_bytes(model)
    write_manifest()
    readings = {name: [{"timestamp": int(pd.Timestamp(t).timestamp()), "PM2.5": float(v)}
                       for t, v in zip(frame["timestamp"][-RECORDED:], frame["PM2.5"][-RECORDED:])]
                for name, frame in frames.items()}
    (OUT / "readings.json").write_text(json.dumps(readings, indent=1) + "\n")
    print(f"wrote {OUT}")


def write_manifest() -> None:
    """Every model of the folder listed with its sha256, as the runtime checks it."""
    artifacts = {}
    for path in sorted(OUT.glob("*.onnx")):
        data = path.read_bytes()
        artifacts[path.name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "kind": "onnx"}
    manifest = {"schema_version": 1, "model_name": "fixture-neighbours", "artifacts": artifacts}
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
