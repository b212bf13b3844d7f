"""Build the schema-2 fixture: a real, tiny `edgecast train` + `edgecast export` of a
covariate model (PM2.5, TEMP, wind direction, hour_of_day, day_of_week), and the
toolkit's own answers for a short recorded stream, so that the runtime tests can
check that the runtime fills the raw window exactly as the trainer does (compass
points and calm to degrees, calendar values from each row's timestamp).

Run with the toolkit's Python (it needs edgecast, pandas, tensorflow):

    .venv/bin/python tests/runtime/make_schema2_fixture.py

It writes tests/runtime/fixtures/schema2/: `model.onnx` (a few KB), `manifest.json`
(the export's manifest, trimmed to what the runtime reads, so it stays
deterministic apart from the model's own sha256) and `reference.json`. Training is
not bit-reproducible across machines, so re-running may change the model's bytes;
`reference.json` is rewritten with it and the tests read both.
"""

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from edgecast_runtime.contract import COMPASS_POINTS

HERE = Path(__file__).resolve().parent
OUT = HERE / "fixtures" / "schema2"
FEATURES = ["TEMP", "wd", "hour_of_day", "day_of_week"]
LOOK_BACK, HORIZON = 4, 2
COMPASS = (*COMPASS_POINTS, "cv")


def training_csv(path: Path, rows: int = 240) -> None:
    rng = np.random.default_rng(0)
    times = pd.date_range("2024-01-01", periods=rows, freq="h")
    wind = np.array(COMPASS)[rng.integers(0, len(COMPASS), rows)].astype(object)
    north = np.isin(wind, ["N", "NNE", "NNW", "NE", "NW"])
    pm = 60 + 25 * np.sin(2 * np.pi * times.hour / 24) - 20 * north + rng.normal(0, 3, rows)
    temp = 10 + 5 * np.cos(2 * np.pi * times.hour / 24) + rng.normal(0, 1, rows)
    pd.DataFrame({"timestamp": times.strftime("%Y-%m-%d %H:%M:%S"), "PM2.5": pm.round(2),
                  "TEMP": temp.round(2), "wd": wind}).to_csv(path, index=False)


def stream_rows():
    """A recorded stream for the runtime: every compass point, calm in two spellings,
    lower case, a day boundary (Sunday to Monday) and hours around midnight."""
    start = pd.Timestamp("2024-03-09 20:00:00")  # a Saturday evening
    rows = []
    for index in range(18):
        moment = start + pd.Timedelta(hours=index)
        wind = COMPASS[(index * 5) % len(COMPASS)]
        if index == 7:
            wind = "CV"
        if index == 11:
            wind = wind.lower()
        rows.append({"timestamp": moment.strftime("%Y-%m-%d %H:%M:%S"),
                     "PM2.5": round(55 + 10 * np.sin(index / 3), 2),
                     "TEMP": round(8 + index * 0.25, 2), "wd": wind})
    return rows


def edgecast(*args) -> None:
    command = [str(Path(sys.executable).parent / "edgecast"), *map(str, args)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    from edgecast.trainer.bundle import read_bundle
    from edgecast.trainer.data import load_csv
    from edgecast.trainer.forecast import predict_raw

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        training_csv(folder / "train.csv")
        edgecast("train", folder / "train.csv", "--target", "PM2.5", "--features", ",".join(FEATURES),
                 "--look-back", LOOK_BACK, "--horizon", HORIZON, "--units", 4, "--epochs", 2,
                 "--batch-size", 32, "--name", "fixture-schema2", "--models-dir", folder / "models")
        bundle_dir = folder / "models" / "fixture-schema2"
        edgecast("export", bundle_dir)
        model_bytes = (bundle_dir / "model.onnx").read_bytes()

        # The toolkit's own reading of the stream: its CSV loader turns compass points
        # into degrees and derives the calendar from the timestamps.
        rows = stream_rows()
        pd.DataFrame(rows).to_csv(folder / "stream.csv", index=False)
        series = load_csv(folder / "stream.csv", "PM2.5", FEATURES)
        raw = series.frame.to_numpy(np.float64)
        windows = np.stack([raw[i - LOOK_BACK + 1:i + 1] for i in range(LOOK_BACK - 1, len(raw))])
        bundle = read_bundle(bundle_dir)
        forecasts = predict_raw(bundle.load_model(), bundle.spec, windows)

    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "model.onnx").write_bytes(model_bytes)
    manifest = {"schema_version": 1, "model_name": "fixture-schema2",
                "artifacts": {"model.onnx": {"sha256": hashlib.sha256(model_bytes).hexdigest(),
                                             "bytes": len(model_bytes), "kind": "onnx"}}}
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    reference = {
        "about": "toolkit (Keras, edgecast.trainer.forecast.predict_raw) forecasts for `rows`, "
                 "read by edgecast.trainer.data.load_csv; forecasts[k] is for the window ending "
                 "at row k + look_back - 1",
        "look_back": LOOK_BACK, "horizon": HORIZON,
        "rows": rows,
        "raw_windows": windows.tolist(),
        "forecasts": forecasts.tolist(),
    }
    (OUT / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    for name in ("model.onnx", "manifest.json", "reference.json"):
        print(f"{OUT / name}: {(OUT / name).stat().st_size} bytes")


if __name__ == "__main__":
    main()
