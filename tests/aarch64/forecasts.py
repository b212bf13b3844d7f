"""The forecasts of every committed model and every valid test fixture on fixed windows,
as JSON on stdout: `make test-aarch64` runs this on x86-64 and inside the arm64 root
and compares the two (compare.py). Needs only the runtime and numpy."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from edgecast_runtime import Forecaster, ModelError

REPO = Path(__file__).resolve().parents[2]
WINDOWS = 16  # per model: one batch of 16, and the first window alone


def model_files() -> list[Path]:
    found = sorted(REPO.glob("models/**/*.onnx")) + sorted((REPO / "tests/runtime/fixtures").rglob("*.onnx"))
    return [path for path in found if "hostile" not in path.parts]


def windows_for(model: Forecaster, seed: int) -> np.ndarray:
    """Readings in a plausible range (0 to 200, the units of PM2.5 and of most weather
    columns), inside the model's valid ranges where it has any."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 200.0, size=(WINDOWS, *model.window_shape)).astype(np.float32)


def forecasts() -> dict:
    out = {}
    for index, path in enumerate(model_files()):
        name = str(path.relative_to(REPO))
        try:
            model = Forecaster(path)
        except ModelError as exc:  # the fixtures that exist to be refused: refused alike
            out[name] = {"refused": type(exc).__name__}
            continue
        batch = windows_for(model, index)
        out[name] = {"batch": model.predict_batch(batch).astype(float).tolist(),
                     "single": model.predict(batch[0]).astype(float).tolist()}
    return out


if __name__ == "__main__":
    json.dump({"machine": __import__("platform").machine(), "forecasts": forecasts()}, sys.stdout)
