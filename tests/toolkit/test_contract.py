"""The toolkit and the runtime cannot drift apart: what `edgecast export` writes is read
back by the runtime's own reader in the same test, and the metadata keys, schema versions,
tensor names and encodings both sides use are the runtime's (edgecast_runtime.contract)."""
from __future__ import annotations

import numpy as np
import onnx
import pandas as pd
import pytest
from test_forecasting import synthetic_csv

from edgecast.exporter.parity import TOLERANCE, reference_forecast
from edgecast.exporter.pipeline import export_bundle
from edgecast.trainer import features
from edgecast.trainer.bundle import read_bundle
from edgecast.trainer.data import load_csv
from edgecast.trainer.pipeline import TrainConfig, train
from edgecast_runtime import Forecaster, contract

COVARIATES = ["temp", "wd", "hour_of_day", "day_of_week"]
CLOCK = "+08:00"


@pytest.fixture(scope="module")
def encoded_bundle(tmp_path_factory):
    """A schema-2 model: wind direction as compass points and calm codes, calendar features."""
    folder = tmp_path_factory.mktemp("contract")
    series = load_csv(synthetic_csv(folder / "wind.csv", rows=240), "pm", COVARIATES, clock=CLOCK)
    config = TrainConfig(look_back=4, horizon=2, units=4, epochs=1, batch_size=32, seed=0)
    result = train(series, config, folder / "windy")
    export_bundle(result.path, tflite=False, progress=lambda _: None)
    return result.path


@pytest.mark.parametrize("kind", ["plain", "encoded"])
def test_runtime_reads_back_what_export_writes(kind, trained_bundle, encoded_bundle):
    path = trained_bundle if kind == "plain" else encoded_bundle
    bundle = read_bundle(path)
    expected_schema = contract.PLAIN_SCHEMA_VERSION if kind == "plain" else contract.SCHEMA_VERSION
    assert bundle.spec["schema_version"] == expected_schema

    metadata = {entry.key: entry.value for entry in onnx.load(path / "model.onnx").metadata_props}
    assert set(metadata) == {contract.SCHEMA_KEY, contract.SPEC_KEY, contract.NAME_KEY}

    model = Forecaster(path / "model.onnx")  # the runtime's reader, manifest sha256 check included
    assert model.manifest_path == path / contract.MANIFEST_NAME
    assert model.spec == bundle.spec
    assert model.schema_version == metadata[contract.SCHEMA_KEY] == str(expected_schema)
    assert model.schema_version in contract.SUPPORTED_SCHEMA_TEXTS
    assert model.model_name == metadata[contract.NAME_KEY] == bundle.name
    assert (model.input_name, model.output_name) == (contract.INPUT_NAME, contract.OUTPUT_NAME)
    assert model.feature_kinds == [encoding["kind"] for encoding in bundle.spec["encodings"]]
    assert set(model.feature_kinds) <= set(contract.KINDS)


def test_runtime_turns_compass_points_into_the_trainers_degrees(encoded_bundle):
    bundle = read_bundle(encoded_bundle)
    model = Forecaster(encoded_bundle / "model.onnx")
    wind = model.features.index("wd")
    codes = [*contract.COMPASS_POINTS, *contract.CALM_CODES, "nne", "Cv"]
    degrees = features.compass_degrees(pd.Series(codes))
    assert degrees is not None and not degrees.isna().any()

    rng = np.random.default_rng(0)
    numeric = bundle.windows()["test_x"][: len(codes)].copy()
    texts = []
    for index, window in enumerate(numeric):
        picks = rng.integers(0, len(codes), size=model.look_back)
        picks[-1] = index  # every code appears at least once
        window[:, wind] = degrees.to_numpy()[picks]
        rows = window.tolist()
        for row, pick in zip(rows, picks):
            row[wind] = codes[pick]
        texts.append(rows)
    expected = reference_forecast(bundle.load_model(), bundle.spec, numeric)
    got = np.stack([model.predict(window) for window in texts])
    np.testing.assert_allclose(got, expected, atol=TOLERANCE)


def test_runtime_derives_the_trainers_calendar_values_in_the_datas_clock(encoded_bundle):
    model = Forecaster(encoded_bundle / "model.onnx")
    assert model.spec["clock"] == CLOCK
    # Across a UTC day boundary that is not one on the data's clock, and over a week.
    times = pd.date_range("2024-03-30 20:00", periods=24 * 8, freq="h", tz=CLOCK)
    for name in model.layout.calendar_names:
        trainer = features.calendar_values(name, times)
        index = model.features.index(name)
        runtime = [model.layout.calendar_row(moment.timestamp(), model.clock)[index] for moment in times]
        np.testing.assert_array_equal(runtime, trainer, err_msg=name)
        assert trainer.max() == contract.CALENDAR_PERIODS[name] - 1
