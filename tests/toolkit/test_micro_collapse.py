"""Issue 27 case 7: the microcontroller's int8 file forecast a flat line.

A horizon-6 Changping PM2.5 model (look-back 24, LSTM(16), 2 epochs, on the file's last
9,000 hours, copied to a temporary folder) is trained and exported through the CLI. The
int8 file's change-from-last output was quantized with the range of the raw change (the
converter gave the MUL by the per-lead step scale's input its output's scale, 0.83 for a
tensor of range about 4), so most deltas rounded to zero and six leads were one value. The
fused graph now applies the step scale as a FULLY_CONNECTED with a diagonal matrix
(export/graph.py `diagonal_step`); the build gates the int8 file per lead, on collapse and
on TFLM against LiteRT per lead (export/micro/checks.py), and falls back to the float32
file when a gate fails.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import CHANGPING, run_cli

from edgecast.exporter.micro.checks import (
    ERROR_BUDGET_PCT,
    INT8_FILE,
    check_int8,
    choose,
    collapse,
)
from edgecast_runtime.contract import BUILTIN_TFLITE_FILE

HORIZON = 6
real_data = pytest.mark.skipif(
    not CHANGPING.is_file(), reason=f"real data absent: {CHANGPING} (see ../shared/data/README.md)")


@pytest.fixture(scope="module")
def horizon6(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("collapse")
    source = folder / "changping.csv"
    pd.read_csv(CHANGPING).tail(9000).to_csv(source, index=False)
    trained = run_cli("train", source, "--target", "PM2.5", "--horizon", str(HORIZON), "--look-back", "24",
                      "--units", "16", "--epochs", "2", "--name", "cp6", "--models-dir", folder)
    assert trained.returncode == 0, trained.stderr
    bundle = folder / "cp6"
    exported = run_cli("export", bundle, "--target", "mcu")
    assert exported.returncode == 0, exported.stderr
    assert "RMSE change per lead" in exported.stderr  # the progress lines
    return bundle


@real_data
def test_int8_micro_forecast_is_not_a_flat_line(horizon6: Path):
    record = json.loads((horizon6 / "micro" / "micro.json").read_text())
    int8 = record["verification"][INT8_FILE]
    assert len(int8["rmse_change_pct_per_lead"]) == HORIZON == len(int8["max_abs_vs_litert_per_lead"])
    # Before the fix: 88% of windows one value six times, mean 1.4 distinct values.
    assert not int8["collapsed"] and int8["flat_share"] < 0.05
    assert int8["mean_distinct"] >= 0.9 * int8["reference_mean_distinct"] > 3
    # Before: TFLM and LiteRT up to 19 output steps apart; now within the stated tolerance at every lead.
    assert max(int8["max_abs_vs_litert_per_lead"]) <= int8["litert_max_abs"] == 3 * int8["output_step"]
    assert int8["passed"]
    within = max(int8["rmse_change_pct_per_lead"]) <= ERROR_BUDGET_PCT
    assert (record["model_file"] == INT8_FILE) == within
    main = (horizon6 / "micro" / "main.cc").read_text()
    expected = next(line for line in main.splitlines() if "// Expected for this window" in line)
    values = [float(word) for word in expected.split("):", 1)[1].split()]  # before: 36.6331 six times
    assert len(values) == HORIZON and len(set(values)) > 2, expected


@real_data
def test_the_old_int8_graph_collapses_and_is_refused(horizon6: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The int8 file as it was made before the fix, through the same gate: refused."""
    from edgecast.exporter import graph
    from edgecast.exporter.parity import reference_forecast
    from edgecast.exporter.quantize import MODES, quantize
    from edgecast.trainer.bundle import read_bundle

    original = graph.raw_units_function
    monkeypatch.setattr(graph, "raw_units_function",
                        lambda model, spec, batch, diagonal_step=False, calibration=None:
                        original(model, spec, batch, calibration=calibration))
    import edgecast.exporter.fused_lstm as fused

    monkeypatch.setattr(fused, "raw_units_function", graph.raw_units_function)
    bundle = read_bundle(horizon6)
    model, windows = bundle.load_model(), bundle.windows()
    old = tmp_path / INT8_FILE
    old.write_bytes(quantize(MODES["tflite-int8"], model, bundle.spec, horizon6 / "model.onnx",
                             windows["calibration_x"]))
    x, y = windows["test_x"].astype(np.float32), windows["test_y"]
    check = check_int8(old, x, y, reference_forecast(model, bundle.spec, x))
    # Seen: 48% of windows one value six times, mean 2.9 distinct values against 4.3 for the
    # float forecast on the same output step. (The share of windows with fewer than six
    # distinct values, 76% against 79%, would not have caught it: the output step alone
    # merges close leads.)
    assert check["collapsed"] and check["flat_share"] > 0.3, check["collapse"]
    assert check["mean_distinct"] < 0.9 * check["reference_mean_distinct"]
    chosen, reason = choose({BUILTIN_TFLITE_FILE: {"passed": True}, INT8_FILE: check}, None)
    assert chosen == BUILTIN_TFLITE_FILE and "collapse" in reason


def test_collapse_measure_on_the_output_step():
    reference = np.array([[10.0, 11.0, 12.0], [20.0, 20.4, 25.0]])
    assert not collapse(reference, reference, 1.0)["collapsed"]
    flat = np.array([[10.0, 10.0, 10.0], [20.0, 20.0, 20.0]])
    measured = collapse(flat, reference, 1.0)
    assert measured["collapsed"] and measured["flat_share"] == 1.0
    assert measured["reference_mean_distinct"] == 2.5 and measured["mean_distinct"] == 1.0
    # Two leads within one output step share a value in the reference too: no collapse.
    assert not collapse(np.array([[10.0, 11.0, 12.0], [20.0, 20.0, 25.0]]), reference, 1.0)["collapsed"]
