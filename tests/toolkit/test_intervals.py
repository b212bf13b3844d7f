"""Quantiles and exceedance probabilities in the exported graph (issue 23, schema 4),
through the command lines: `edgecast train --interval --quantiles --alert`, `edgecast
export` (parity of every output on ONNX at batch 1 and 256 and on TFLite), `edgecast
verify`, and the runtime serving the interval and the probabilities; the calibration's
own properties (never crossing, probabilities consistent with the quantiles) on random
windows and random residuals; the refusals in one line."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from conftest import hourly_pm25, run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecast.escaping import escape
from edgecast.exporter.distribution import output_runner
from edgecast.exporter.micro.tflm import output_order, run_tflm
from edgecast.exporter.oplist import tflite_ops
from edgecast.exporter.parity import LARGE_BATCH
from edgecast.trainer.bundle import read_bundle
from edgecast.trainer.intervals import (
    ADDITIVE,
    KNOTS,
    LOG,
    Calibration,
    backward,
    calibrate,
    crps,
    exceedance,
    forward,
    parse_alert,
    quantiles,
    residual_quantiles,
)
from edgecast_runtime.spec_outputs import Alert

RUNTIME = Path(sys.executable).parent / "edgecast-runtime"
SMALL = ["--target", "PM2.5", "--look-back", "12", "--horizon", "3", "--units", "8", "--epochs", "3", "--seed", "1"]


def pm25(hours: int, seed: int) -> pd.DataFrame:
    """Hourly PM2.5 with episodes above 75, as a station file."""
    times = pd.date_range("2024-01-01", periods=hours, freq="h", tz="UTC").strftime("%Y-%m-%dT%H:%M:%S+00:00")
    return pd.DataFrame({"timestamp": times, "PM2.5": hourly_pm25(hours, seed, level=55, weekly=20, noise=8,
                                                                   memory=0.85)})


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("intervals")
    pm25(90 * 24, seed=4).to_csv(folder / "station.csv", index=False)
    trained = run_cli("train", folder / "station.csv", *SMALL, "--interval", "0.9", "--quantiles", "0.5",
                      "--alert", "PM2.5>75", "--alert", "PM2.5<40", "--models-dir", folder, "--name", "p")
    assert trained.returncode == 0, trained.stdout + trained.stderr
    result = run_cli("export", folder / "p")
    assert result.returncode == 0, result.stdout + result.stderr
    (folder / "export.out").write_text(result.stdout)
    return folder / "p"


def test_every_output_of_the_graph_agrees_across_backends(exported):
    out = (exported.parent / "export.out").read_text()
    for artifact in ("model.onnx", "model.tflite"):
        for output in ("quantiles", "exceedance"):
            rows = [line for line in out.splitlines() if f"{artifact} {output}" in line]
            assert len(rows) == (4 if artifact == "model.onnx" else 2), out  # 2 window sets x batches 1 (and 256)
            assert all(line.rstrip(" │").endswith("yes") for line in rows), rows
    verified = run_cli("verify", exported)
    assert verified.returncode == 0 and "model.tflite exceedance" in verified.stdout, verified.stdout
    # Quantile rows may pass above the tolerance in the title: the table says why.
    assert "quantile rows are held to the tolerance carried through" in " ".join(verified.stdout.split())
    proto = onnx.load(exported / "model.onnx")
    metadata = {entry.key: entry.value for entry in proto.metadata_props}
    spec = json.loads(metadata["edgecast.spec"])
    assert metadata["edgecast.schema_version"] == "4"
    assert spec["probabilistic"]["quantiles"] == [0.05, 0.5, 0.95] and spec["probabilistic"]["interval"] == 0.9
    assert [a["name"] for a in spec["probabilistic"]["alerts"]] == ["PM2.5>75", "PM2.5<40"]
    shapes = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in proto.graph.output}
    assert shapes == {"forecast": ["batch", 3], "quantiles": ["batch", 3, 3], "exceedance": ["batch", 3, 2]}


def test_quantiles_never_cross_and_probabilities_stay_in_range_on_random_windows(exported):
    session = ort.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(7)
    windows = np.concatenate([rng.uniform(-50, 900, (500, 12, 1)), rng.uniform(0, 100, (500, 12, 1)),
                              np.zeros((1, 12, 1)), np.full((1, 12, 1), 5000.0)]).astype(np.float32)
    forecast, levels, probability = session.run(["forecast", "quantiles", "exceedance"], {"window": windows})
    assert np.all(np.diff(levels, axis=-1) >= 0)  # monotone by construction
    assert np.all(levels >= 0) and np.all((probability >= 0) & (probability <= 1))
    # P(> 75) + P(< 40) <= 1 + the smoothing's slack: the two events cannot both happen
    assert np.all(probability.sum(axis=-1) <= 1 + 1e-5)


def test_the_hub_serves_the_interval_and_the_probabilities(exported, tmp_path):
    readings = pm25(20, seed=9)
    lines = "timestamp,PM2.5\n" + "\n".join(f"{t},{v}" for t, v in zip(readings["timestamp"], readings["PM2.5"]))
    result = subprocess.run([str(RUNTIME), "stream", str(exported / "model.onnx")], input=lines + "\n",
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.splitlines()[-1])
    assert answer["status"] == "forecast" and answer["interval"]["coverage"] == 0.9
    assert all(low <= high for low, high in zip(answer["interval"]["lower"], answer["interval"]["upper"]))
    assert set(answer["exceedance"]) == {"PM2.5>75", "PM2.5<40"}


def test_evaluate_prints_the_probabilistic_scores_beside_the_baselines(exported):
    """`edgecast evaluate` on the training file: the interval and alert tables, and in
    --json the model's scores equal to metrics.json's (the same test split) beside
    persistence's and ridge's, each conformalized on the validation split."""
    csv = exported.parent / "station.csv"
    shown = run_cli("evaluate", exported, csv)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "90% interval on the test split" in shown.stdout and "persistence interval score" in shown.stdout
    assert "P(PM2.5>75) on the test split" in shown.stdout and "P(PM2.5<40) on the test split" in shown.stdout
    found = run_cli("evaluate", exported, csv, "--json")
    assert found.returncode == 0, found.stderr
    intervals = json.loads(found.stdout)["intervals"]
    assert set(intervals) == {"model", "persistence", "ridge"}
    stored = json.loads((exported / "metrics.json").read_text())
    assert intervals["model"] == stored["intervals"]
    assert {method: intervals[method] for method in ("persistence", "ridge")} == stored["interval_baselines"]
    for method in ("persistence", "ridge"):
        coverage = intervals[method]["interval"]["coverage_by_lead"]
        assert all(0.5 < c <= 1 for c in coverage), (method, coverage)
        assert set(intervals[method]["alerts"]) == {"PM2.5>75", "PM2.5<40"}


def test_evaluate_draws_the_fan_and_the_reliability_diagrams(exported, tmp_path):
    """`edgecast evaluate --plot FILE.svg`: the interval fan and one reliability diagram per
    alert below the forecast panels (SVG with its text kept as text, so the titles can be
    read), and in --json each alert's reliability bins at leads 1 and 3: every test window
    in one bin, the bins' outcomes the test truths past the threshold, their probabilities
    the exported model.onnx's."""
    rc = tmp_path / "matplotlib"
    rc.mkdir()
    (rc / "matplotlibrc").write_text("svg.fonttype: none\n")
    csv, svg = exported.parent / "station.csv", tmp_path / "eval.svg"
    found = run_cli("evaluate", exported, csv, "--json", "--plot", svg, env={"MPLCONFIGDIR": str(rc)})
    assert found.returncode == 0, found.stderr
    text = svg.read_text()
    assert "interval fan at the highest test episode" in text
    assert "0.5 quantile" in text  # the median of 0.05, 0.5, 0.95, drawn as a line between the bands
    assert all(f"reliability of P({escape(name)})" in text for name in ("PM2.5>75", "PM2.5<40"))
    alerts = json.loads(found.stdout)["intervals"]["model"]["alerts"]
    windows = read_bundle(exported).windows()
    truth, probability = windows["test_y"], outputs_in_batches(exported / "model.onnx", windows["test_x"])["exceedance"]
    for index, (name, threshold) in enumerate((("PM2.5>75", 75), ("PM2.5<40", 40))):
        bins = alerts[name]["reliability"]
        assert set(bins) == {"1", "3"}, bins
        for lead, found_bins in bins.items():
            column = int(lead) - 1
            past = truth[:, column] > threshold if ">" in name else truth[:, column] < threshold
            assert sum(found_bins["count"]) == len(truth)
            assert sum(found_bins["observed_sum"]) == past.sum()
            assert sum(found_bins["predicted_sum"]) == pytest.approx(probability[:, column, index].sum(), abs=0.01)
    png = run_cli("evaluate", exported, csv, "--plot", tmp_path / "eval.png")
    assert png.returncode == 0 and (tmp_path / "eval.png").stat().st_size > 0, png.stderr


def test_metrics_report_coverage_width_and_brier_skill_on_the_test_split(exported):
    metrics = json.loads((exported / "metrics.json").read_text())["intervals"]
    coverage = metrics["interval"]["coverage_by_lead"]
    assert len(coverage) == 3 and all(0.75 <= value <= 0.99 for value in coverage), metrics
    assert all(width > 0 for width in metrics["interval"]["mean_width_by_lead"])
    assert set(metrics["alerts"]) == {"PM2.5>75", "PM2.5<40"}
    skill = metrics["alerts"]["PM2.5>75"]["brier_skill_by_lead"]
    assert skill[0] > 0.2, metrics  # better than climatology an hour ahead
    # CRPS of the calibrated distribution: below the interval's mean width, and growing with the lead
    crps, width = metrics["crps_by_lead"], metrics["interval"]["mean_width_by_lead"]
    assert all(0 < c < w for c, w in zip(crps, width)) and crps[0] <= crps[-1], metrics
    above = metrics["alerts"]["PM2.5>75"]
    assert above["alert_level"] == 0.5 and all(0 <= r <= 1 for r in above["recall_by_lead"] if r is not None)
    assert above["precision_by_lead"][0] is None or above["precision_by_lead"][0] > 0.5, above  # an hour ahead
    card = run_cli("report", exported, "--out", exported.parent / "card.md")
    assert card.returncode == 0, card.stderr
    text = (exported.parent / "card.md").read_text()
    assert "## 90% interval (test split, conformalized on" in text and "| persistence interval score |" in text
    assert "; quantile rows are held to the tolerance carried through" in text  # under the parity verdict
    assert all(f"## P({escape(name)})" in text for name in ("PM2.5>75", "PM2.5<40")) and "| ridge skill |" in text
    section = text.split("## 90% interval", 1)[1]
    row = next(line for line in section.splitlines() if line.startswith("| +1 |"))
    assert f"{coverage[0]:.3f}" in row, row  # the card's first row is metrics.json's
    assert "horizon step, interval fan, reliability of the alert probabilities](card.png)" in text
    assert (exported.parent / "card.png").stat().st_size > 0


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), spread=st.floats(0.05, 1.0))
def test_probabilities_agree_with_the_quantiles_they_come_from(seed, spread):
    """P(y > q_tau) is 1 - tau up to the kernel smoothing, at every lead; where q_tau is the
    floor (the distribution's mass below it is the floor's), at most 1 - tau."""
    rng = np.random.default_rng(seed)
    forecast = rng.uniform(5, 300, (400, 2))
    truth = np.expm1(np.log1p(forecast) + rng.normal(0, spread, forecast.shape))
    levels = (0.1, 0.5, 0.9)
    calibration = calibrate(forecast, truth, levels, target_min=0.0)
    point = np.array([[80.0, 20.0]])
    values = quantiles(calibration, point, 0.0)[0]  # [lead, Q]
    for lead in range(2):
        alerts = tuple(Alert(f"a{i}", "PM2.5", ">", float(v)) for i, v in enumerate(values[lead]))
        probability = exceedance(calibration, point, alerts)[0, lead]
        expected, floored = np.array([1 - level for level in levels]), values[lead] <= 0.0
        np.testing.assert_allclose(probability[~floored], expected[~floored], atol=0.06)
        assert np.all(probability[floored] <= expected[floored] + 0.06), (probability, values[lead])


def test_calibration_round_trips_and_offsets_never_decrease():
    rng = np.random.default_rng(3)
    forecast = rng.uniform(1, 200, (300, 4))
    calibration = calibrate(forecast, forecast * rng.lognormal(0, 0.3, forecast.shape), (0.05, 0.25, 0.5, 0.95), 0.0)
    assert np.all(np.diff(calibration.offsets, axis=1) >= 0)
    again = Calibration.from_dict(json.loads(json.dumps(calibration.to_dict())))
    np.testing.assert_array_equal(again.offsets, calibration.offsets)
    np.testing.assert_array_equal(again.shift, calibration.shift)
    assert parse_alert(" PM2.5 < 35.4 ", "PM2.5").name == "PM2.5<35.4"
    assert parse_alert("pm2.5>75", "PM2.5") == Alert("PM2.5>75", "PM2.5", ">", 75.0)  # any case, as --target


@pytest.mark.parametrize("space", [ADDITIVE, LOG])
def test_crps_is_that_of_the_distribution_the_probabilities_read(space):
    """The CRPS metrics.json reports is E|X - y| - E|X - X'| / 2 of the calibrated predictive
    distribution (knots smoothed by uniform kernels, in the interval's space), checked
    against 400,000 draws from it; the model's own two levels would give far less."""
    rng = np.random.default_rng(0)
    scale = 20.0 if space == ADDITIVE else 0.4
    knots = np.sort(rng.normal(0, scale, (2, KNOTS)), axis=1).astype(np.float32)
    shift = np.zeros(2, np.float32) if space == ADDITIVE else np.array([5.0, 10.0], np.float32)
    calibration = Calibration(space, (0.05, 0.95), np.zeros((2, 2), np.float32), knots,
                              np.array([4 / scale, 2 / scale], np.float32), 100, shift)
    forecast, truth = np.array([[50.0, 80.0]]), np.array([[60.0, 40.0]])
    found = crps(calibration, forecast, truth, None)[0]
    for lead in range(2):
        width = 1 / calibration.inverse_width[lead]
        residual = rng.choice(knots[lead], 400_000) + rng.uniform(-width / 2, width / 2, 400_000)
        draws = backward(forward(forecast[0, lead], space, shift[lead]) + residual, space, shift[lead])
        expected = np.abs(draws - truth[0, lead]).mean() - np.abs(draws - rng.permutation(draws)).mean() / 2
        assert abs(found[lead] - expected) < 0.01 * expected, (lead, found[lead], expected)
        tails = np.array([0.05, 0.95])  # the distribution's own 0.05 and 0.95 quantiles, as the old rule read them
        bounds = backward(forward(forecast[0, lead], space, shift[lead]) + residual_quantiles(calibration, tails)[lead],
                          space, shift[lead])
        error = truth[0, lead] - bounds
        two_levels = 2 * np.mean(np.maximum(tails * error, (tails - 1) * error))
        assert two_levels < 0.7 * found[lead], (two_levels, found[lead])


def test_quantiles_alone_get_their_crps_table_and_alerts_match_the_target_in_any_case(tmp_path):
    """A model with quantile levels and no interval printed no probabilistic table at all,
    and an alert spelled in another case than the file's column was refused."""
    pm25(400, seed=2).to_csv(tmp_path / "s.csv", index=False)
    trained = run_cli("train", tmp_path / "s.csv", *SMALL, "--quantiles", "0.1,0.5,0.9", "--alert", "pm2.5>75",
                      "--models-dir", tmp_path, "--name", "q")
    assert trained.returncode == 0, trained.stdout + trained.stderr
    alerts = json.loads((tmp_path / "q" / "preprocessing.json").read_text())["probabilistic"]["alerts"]
    assert [alert["name"] for alert in alerts] == ["PM2.5>75"], alerts
    shown = run_cli("evaluate", tmp_path / "q", tmp_path / "s.csv")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "CRPS on the test split" in shown.stdout and "P(PM2.5>75) on the test split" in shown.stdout
    assert "CRPS: of the calibrated distribution" in " ".join(shown.stdout.split())  # the caption, however wrapped
    card = run_cli("report", tmp_path / "q", "--out", tmp_path / "card.md")
    assert card.returncode == 0, card.stderr
    text = (tmp_path / "card.md").read_text()
    assert "## CRPS (test split, conformalized on" in text and "| step | CRPS |" in text, text


def test_the_shift_follows_how_the_errors_grow_with_the_level():
    """Errors proportional to the level choose a small c (log-like widths); errors of one
    size whatever the level choose a large one (nearly constant widths), at every lead."""
    rng = np.random.default_rng(5)
    forecast = rng.lognormal(3.5, 1.0, (2000, 3))
    proportional = calibrate(forecast, forecast * rng.lognormal(0, 0.3, forecast.shape), (0.05, 0.95), 0.0)
    constant = calibrate(forecast, np.maximum(forecast + rng.normal(0, 20, forecast.shape), 0), (0.05, 0.95), 0.0)
    level = forecast.mean()
    assert np.all(proportional.shift <= 0.1 * level) and np.all(constant.shift >= 4 * level), \
        (proportional.shift, constant.shift, level)
    widths = [np.diff(quantiles(c, np.array([[100.0] * 3, [400.0] * 3]), 0.0)[..., [0, 1]], axis=-1)[:, 0, 0]
              for c in (proportional, constant)]
    assert widths[0][1] > 3 * widths[0][0] and widths[1][1] < 1.3 * widths[1][0], widths


def test_an_interval_file_from_before_the_shift_reads_as_log1p():
    """intervals.json written before the shift (space 'log1p', no 'shift') gives the
    quantiles it gave then: expm1(log1p(forecast) + offset)."""
    offsets = np.array([[-0.5, 0.4], [-0.8, 0.7]])
    old = {"method": "split-conformal residual quantiles on the validation split", "space": "log1p",
           "levels": [0.05, 0.95], "offsets": offsets.tolist(), "knots": np.zeros((2, 50)).tolist(),
           "inverse_width": [1.0, 1.0], "calibration_windows": 100}
    calibration = Calibration.from_dict(old)
    forecast = np.array([[3.0, 120.0]], np.float32)
    np.testing.assert_allclose(quantiles(calibration, forecast, 0.0)[0],
                               np.expm1(np.log1p(forecast[0])[:, None] + offsets), rtol=1e-5)


@pytest.mark.parametrize("options, fragment", [
    (["--alert", "TEMP>3"], "alert 'TEMP>3' is on 'TEMP'; an alert must be on the target 'PM2.5'"),
    (["--alert", "PM2.5=75"], "expected TARGET>THRESHOLD or TARGET<THRESHOLD"),
    (["--interval", "1.5"], "--interval must be a coverage between 0 and 1, got 1.5"),
    (["--quantiles", "0.5,1.2"], "--quantiles must be levels between 0 and 1"),
])
def test_bad_interval_options_are_one_line_before_training(tmp_path, options, fragment):
    pm25(200, seed=1).to_csv(tmp_path / "s.csv", index=False)
    result = run_cli("train", tmp_path / "s.csv", *SMALL, *options, "--models-dir", tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and fragment in lines[0], result.stderr
    assert not (tmp_path / "s").exists()


def outputs_in_batches(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    parts = [session.run(["quantiles", "exceedance"], {"window": x[i:i + LARGE_BATCH]}) for i in range(0, len(x), LARGE_BATCH)]
    return {name: np.concatenate([part[k] for part in parts]) for k, name in enumerate(["quantiles", "exceedance"])}


def test_builtin_ops_quantized_files_and_the_micro_build_carry_them_and_report_their_change(exported):
    """--builtin-ops: model.builtin.tflite has every output, held to parity. The ONNX
    quantized files keep the outputs in float around an int8 LSTM: the export reports how
    far their quantiles and probabilities moved (checked here against onnxruntime on the
    float file), and the hub serves their interval. The weights-only TFLite files carry
    them too, and so do the integer-activation ones: int16x8 computes them in int16, int8
    in float beside its integer LSTM and dense layers. `--target mcu` builds on the float32
    builtin-ops file: TFLM's quantiles and probabilities agree with onnxruntime's,
    micro.json records their check and main.cc prints them from the right outputs."""
    # One mode per way of carrying them: onnx-static-int8 quantizes the same node types as
    # onnx-int8, and tflite-dynamic-int8 is built as tflite-fp16 is (export/quantize.py).
    result = run_cli("export", exported, "--builtin-ops", "--quantize", "onnx-int8", "--quantize", "tflite-fp16",
                     "--quantize", "tflite-int8", "--quantize", "tflite-int16x8", "--target", "mcu")
    assert result.returncode == 0, result.stdout + result.stderr
    for output in ("quantiles", "exceedance"):
        rows = [line for line in result.stdout.splitlines() if f"model.builtin.tflite {output}" in line]
        assert len(rows) == 2 and all(line.rstrip(" │").endswith("yes") for line in rows), result.stdout
    assert "quantiles max dev" in result.stdout and "probabilities max dev" in result.stdout, result.stdout
    accuracy = json.loads((exported / "manifest.json").read_text())["quantization"]["accuracy"]["artifacts"]
    test_x = np.load(exported / "windows.npz")["test_x"].astype(np.float32)
    want = outputs_in_batches(exported / "model.onnx", test_x)
    got = outputs_in_batches(exported / "model.int8.onnx", test_x)  # the report's batches: dynamic int8 depends on them
    check_micro_build(exported, test_x, want)
    spec = read_bundle(exported).spec
    files = {"model.int8.onnx": got, **{name: output_runner(exported / name, spec)(test_x, 1)
                                        for name in ("model.int8.tflite", "model.int16x8.tflite")}}
    for name, outputs in files.items():
        for output in ("quantiles", "exceedance"):
            reported = accuracy[name][f"{output}_max_abs_deviation"]
            measured = float(np.max(np.abs(outputs[output] - want[output])))
            assert abs(reported - measured) <= 0.01 * max(measured, 1.0), (name, output, reported, measured)
    int8, fp16 = accuracy["model.int8.onnx"], accuracy["model.fp16.tflite"]
    assert int8["exceedance_max_abs_deviation"] < 0.5, int8
    for name in ("model.int8.tflite", "model.int16x8.tflite"):  # measured 0.021 and 0.011 on a like model
        assert accuracy[name]["exceedance_max_abs_deviation"] < 0.1, accuracy[name]
    ops = {op["op"]: op["dtypes"] for op in tflite_ops(exported / "model.int8.tflite")}
    assert "INT8" in ops["UNIDIRECTIONAL_SEQUENCE_LSTM"] and ops["LOG"] == ops["EXP"] == ["FLOAT32"], ops
    check_evaluate_scores_the_files_own_outputs(exported)
    assert 0 <= fp16["quantiles_max_abs_deviation"] < 50 and 0 <= fp16["exceedance_max_abs_deviation"] < 0.5, fp16
    readings = pm25(20, seed=9)
    lines = "timestamp,PM2.5\n" + "\n".join(f"{t},{v}" for t, v in zip(readings["timestamp"], readings["PM2.5"]))
    served = subprocess.run([str(RUNTIME), "stream", str(exported / "model.int8.onnx")], input=lines + "\n",
                            capture_output=True, text=True, timeout=120)
    answer = json.loads(served.stdout.splitlines()[-1])
    assert answer["status"] == "forecast" and answer["interval"]["coverage"] == 0.9, served.stdout + served.stderr


def check_evaluate_scores_the_files_own_outputs(bundle: Path) -> None:
    """`edgecast evaluate --artifact FILE` on the training file (the same test windows)
    scores the file's own quantiles and probabilities: a copy of model.onnx whose quantiles
    are 40 higher and probabilities halved gets its coverage and Brier score from those."""
    proto = onnx.load(bundle / "model.onnx")
    for name, op, value in (("quantiles", "Add", 40.0), ("exceedance", "Mul", 0.5)):
        (producer,) = [node for node in proto.graph.node if name in node.output]
        producer.output[list(producer.output).index(name)] = f"{name}_before"
        proto.graph.initializer.append(onnx.numpy_helper.from_array(np.float32(value), f"{name}_change"))
        proto.graph.node.append(onnx.helper.make_node(op, [f"{name}_before", f"{name}_change"], [name]))
    onnx.save(proto, bundle.parent / "changed.onnx")
    found = run_cli("evaluate", bundle, bundle.parent / "station.csv", "--artifact", bundle.parent / "changed.onnx",
                    "--json")
    assert found.returncode == 0, found.stderr
    scored = json.loads(found.stdout)["intervals"]["model"]
    windows = np.load(bundle / "windows.npz")
    truth = windows["test_y"].astype(np.float64)
    session = ort.InferenceSession(str(bundle.parent / "changed.onnx"), providers=["CPUExecutionProvider"])
    levels, probability = session.run(["quantiles", "exceedance"], {"window": windows["test_x"].astype(np.float32)})
    coverage = ((truth >= levels[..., 0]) & (truth <= levels[..., 2])).mean(axis=0)
    brier = ((probability[..., 0] - (truth > 75)) ** 2).mean(axis=0)
    np.testing.assert_allclose(scored["interval"]["coverage_by_lead"], coverage, atol=1e-4)
    np.testing.assert_allclose(scored["alerts"]["PM2.5>75"]["brier_by_lead"], brier, atol=1e-4)
    stored = json.loads((bundle / "metrics.json").read_text())["intervals"]
    assert scored["alerts"]["PM2.5>75"]["brier_by_lead"] != stored["alerts"]["PM2.5>75"]["brier_by_lead"]


def check_micro_build(bundle: Path, test_x: np.ndarray, want: dict[str, np.ndarray]) -> None:
    """micro/ of a schema-4 bundle: TFLM's every output against onnxruntime's `want`, the
    record and main.cc."""
    record = json.loads((bundle / "micro" / "micro.json").read_text())
    assert record["model_file"] == "model.builtin.tflite" and "carries the quantiles" in record["reason"], record
    assert "model.int8.tflite" not in record["verification"], record  # asked for, but not a schema-4 candidate
    check = record["verification"]["model.builtin.tflite"]
    assert check["passed"] and check["quantiles_within_tolerance"] and check["exceedance_within_tolerance"], check
    assert {"AddLog", "AddExp", "AddMean"} <= set(record["ops"]["resolver"]), record["ops"]
    path = bundle / "micro" / "model.builtin.tflite"
    run = run_tflm(path, record["arena"]["bytes"], test_x)
    order = output_order(path, ["exceedance", "forecast", "quantiles"])
    tflm = dict(zip(order, run.outputs))
    assert set(tflm) == {"forecast", "quantiles", "exceedance"} and tflm["quantiles"].shape == (len(test_x), 3, 3)
    np.testing.assert_allclose(tflm["quantiles"], want["quantiles"], rtol=1e-4, atol=2e-3)
    np.testing.assert_allclose(tflm["exceedance"], want["exceedance"], rtol=0, atol=2e-4)
    main = (bundle / "micro" / "main.cc").read_text()
    for name in ("forecast", "quantiles", "exceedance"):
        assert f"interpreter.output({order.index(name)})" in main, (name, order)
    assert 'const char* const kAlerts[2] = {"PM2.5>75", "PM2.5<40"};' in main and "kLevels[3] = {0.05f, 0.5f, 0.95f}" in main
    assert main.count("// Expected") == 3, main


def test_a_neighbour_model_carries_them_too_with_neighbours_masked_and_missing(tmp_path):
    """Schema 4 on top of schema 3: the outputs follow the forecast whatever the graph
    does with silent neighbours, so parity holds on the masked and missing window sets."""
    times = pd.date_range("2024-01-01", periods=60 * 24, freq="h", tz="UTC").strftime("%Y-%m-%dT%H:%M:%S+00:00")
    own = hourly_pm25(60 * 24, seed=1)
    pd.DataFrame({"timestamp": times, "PM2.5": own}).to_csv(tmp_path / "north.csv", index=False)
    pd.DataFrame({"timestamp": times, "PM2.5": (np.roll(own, -2) * 1.1 + 3).round(1)}).to_csv(
        tmp_path / "south.csv", index=False)
    trained = run_cli("train", tmp_path / "north.csv", "--neighbours", tmp_path / "south.csv", *SMALL,
                      "--interval", "0.9", "--alert", "PM2.5>75", "--models-dir", tmp_path, "--name", "nb")
    assert trained.returncode == 0, trained.stdout + trained.stderr
    result = run_cli("export", tmp_path / "nb")
    assert result.returncode == 0, result.stdout + result.stderr
    for window_set in ("neighbours masked", "neighbours missing"):
        rows = [line for line in result.stdout.splitlines() if window_set in line and ("quantiles" in line
                                                                                       or "exceedance" in line)]
        assert len(rows) == 6 and all(line.rstrip(" │").endswith("yes") for line in rows), result.stdout
    spec = json.loads({e.key: e.value for e in onnx.load(tmp_path / "nb" / "model.onnx").metadata_props}["edgecast.spec"])
    assert spec["schema_version"] == 4 and spec["neighbours"] and spec["probabilistic"]["interval"] == 0.9
