"""The committed, really exported LSTM (models/pm25-seed, trained by `edgecast demo`
on the tutorial series) served by the runtime alone."""

import json

import numpy as np
import pytest
from support.runtime import SEED_MODEL, run_cli

from edgecast_runtime import Forecaster

pytestmark = pytest.mark.skipif(
    not SEED_MODEL.exists(),
    reason=f"{SEED_MODEL} is absent (the toolkit's `edgecast demo` bundle is not committed yet)")

TUTORIAL_SERIES = [90, 85, 82, 88, 87, 80, 75, 72, 78, 85, 88, 90, 93, 92, 89, 87, 82, 75, 70, 68,
                   70, 72, 75, 80, 85]


@pytest.fixture(scope="module")
def seed():
    return Forecaster(SEED_MODEL)


def last_window(model):
    values = TUTORIAL_SERIES[-model.look_back - 1:-1]  # ends with 70 72 75 80 for look-back 4
    return np.array(values, dtype=np.float32).reshape(model.look_back, 1)


def test_loads_and_checks_its_manifest(seed):
    assert seed.schema_version == "1" and seed.n_features >= 1 and seed.horizon >= 1
    manifest = SEED_MODEL.parent / "manifest.json"
    if manifest.exists():
        assert seed.manifest_path == manifest
        listed = json.loads(manifest.read_text())["artifacts"][SEED_MODEL.name]["sha256"]
        assert listed == seed.sha256


def test_predicts_single_and_batch_alike(seed):
    if seed.n_features != 1:
        pytest.skip("the seed model reads more than the target; this test feeds the tutorial series")
    window = last_window(seed)
    single = seed.predict(window)
    assert single.shape == (seed.horizon,) and np.isfinite(single).all()
    batch = seed.predict_batch(np.stack([window, window + 1, window]))
    np.testing.assert_allclose(batch[0], single, rtol=1e-6)
    np.testing.assert_allclose(batch[2], single, rtol=1e-6)


def test_cli_predict_and_stream_agree_with_the_python_api(seed):
    if seed.n_features != 1:
        pytest.skip("the seed model reads more than the target; this test feeds the tutorial series")
    window = last_window(seed)
    expected = seed.predict(window)
    result = run_cli("predict", SEED_MODEL, *[str(v) for v in window[:, 0]], "--output", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["forecast"] == pytest.approx(expected.tolist(), rel=1e-6)
    series = TUTORIAL_SERIES[:-1]
    streamed = run_cli("stream", SEED_MODEL, stdin="\n".join(map(str, series)) + "\n")
    answers = [json.loads(line) for line in streamed.stdout.splitlines()]
    assert len(answers) == len(series)
    assert answers[-1]["forecast"] == pytest.approx(expected.tolist(), rel=1e-6)
    info = run_cli("info", SEED_MODEL, "--json")
    assert json.loads(info.stdout)["sha256"] == seed.sha256
