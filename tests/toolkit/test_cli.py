"""The `edgecast` command as a user runs it: happy paths and one-line errors."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, hourly_frame, run_cli


def assert_one_line_error(result, *fragments: str, code: int = 2) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("edgecast: error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_missing_file(tmp_path):
    assert_one_line_error(run_cli("train", tmp_path / "absent.csv", "--target", "PM2.5"), "absent.csv", "no such file")


def test_missing_target_column(tiny_csv):
    assert_one_line_error(run_cli("train", tiny_csv, "--target", "PM10"), "tiny.csv", "no column 'PM10'", "PM2.5")


def test_non_numeric_target_column(tmp_path):
    frame = hourly_frame(hours=60)
    frame["PM2.5"] = frame["PM2.5"].astype(object)
    frame.loc[17, "PM2.5"] = "high"
    path = tmp_path / "text.csv"
    frame.to_csv(path, index=False)
    assert_one_line_error(run_cli("train", path, "--target", "PM2.5"), "text.csv", "'PM2.5'", "row 19", "'high' is not a number")


def test_too_few_rows(tmp_path):
    path = tmp_path / "short.csv"
    hourly_frame(hours=20).to_csv(path, index=False)
    assert_one_line_error(run_cli("train", path, "--target", "PM2.5", "--look-back", "24"), "short.csv", "too few usable rows", "look-back 24")


@pytest.mark.parametrize("command", ["export", "verify"])
def test_folder_that_is_not_a_bundle(tmp_path, command):
    (tmp_path / "notes.txt").write_text("not a model")
    assert_one_line_error(run_cli(command, tmp_path), str(tmp_path), "not an edgecast bundle", "model.keras")
    assert_one_line_error(run_cli(command, tmp_path / "nowhere"), "nowhere", "not a folder")


def test_verify_before_export_says_what_to_run(trained_bundle, tmp_path):
    import shutil

    copy = tmp_path / "fresh"
    shutil.copytree(trained_bundle, copy)
    (copy / "manifest.json").unlink()
    assert_one_line_error(run_cli("verify", copy), "no manifest.json", "edgecast export")


def test_bad_opset_is_one_line(trained_bundle, tmp_path):
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(trained_bundle, copy)
    assert_one_line_error(run_cli("export", copy, "--opset", "99"), "opset 99")


def test_train_export_verify_round_trip(tiny_csv, tmp_path):
    trained = run_cli(
        "train", tiny_csv, "--target", "PM2.5", "--features", "TEMP", "--look-back", "6", "--units", "4",
        "--epochs", "2", "--models-dir", tmp_path / "models", "--name", "tiny",
    )
    assert trained.returncode == 0, trained.stderr
    bundle = tmp_path / "models" / "tiny"
    assert "epoch 2/2" in trained.stderr and "wrote" in trained.stdout and "persistence" in trained.stdout
    exported = run_cli("export", bundle)
    assert exported.returncode == 0, exported.stderr
    assert "passed" in exported.stdout and (bundle / "model.onnx").is_file() and (bundle / "model.tflite").is_file()
    verified = run_cli("verify", bundle, "--json")
    assert verified.returncode == 0, verified.stderr
    report = json.loads(verified.stdout)
    assert report["passed"] and {c["artifact"] for c in report["checks"]} == {"model.onnx", "model.tflite"}
    table = run_cli("verify", bundle)
    assert table.returncode == 0 and "max abs error" in table.stdout
    assert "quantile rows" not in table.stdout  # a plain model has none to explain


def test_same_seed_same_numbers(tiny_csv, tmp_path):
    from edgecast.trainer.data import load_csv
    from edgecast.trainer.pipeline import TrainConfig, train

    series = load_csv(tiny_csv, "PM2.5")
    config = TrainConfig(look_back=6, units=4, epochs=2, batch_size=16, seed=7)
    first = train(series, config, tmp_path / "a").metrics
    second = train(series, config, tmp_path / "b").metrics
    assert first["model"] == second["model"]


def test_demo_prints_three_agreeing_forecasts(tmp_path):
    result = run_cli("demo", "--models-dir", tmp_path)
    assert result.returncode == 0, result.stderr
    rows = dict(re.findall(r"│ (Keras|ONNX Runtime|TFLite)[^│]*│\s+([-\d.]+) │", result.stdout))
    assert set(rows) == {"Keras", "ONNX Runtime", "TFLite"}, result.stdout
    values = np.array([float(v) for v in rows.values()])
    assert values.max() - values.min() <= 1e-3
    assert "70 72 75 80" in result.stdout


def test_real_station_train_export_verify(shared_changping, tmp_path):
    """The end-to-end path on a real station, with few epochs to keep CI short."""
    trained = run_cli(
        "train", shared_changping, "--target", "PM2.5", "--look-back", "24", "--epochs", "2",
        "--models-dir", tmp_path, "--name", "changping",
    )
    assert trained.returncode == 0, trained.stderr
    bundle = tmp_path / "changping"
    metrics = json.loads((bundle / "metrics.json").read_text())
    assert {"model", "persistence", "ridge"} <= set(metrics) and metrics["windows"] > 5000
    # The data README's baselines on the same split (1 h): persistence 19.95, ridge 19.57 µg/m³.
    assert metrics["persistence"]["rmse"][0] == pytest.approx(19.95, abs=0.2)
    assert metrics["ridge"]["rmse"][0] == pytest.approx(19.57, abs=0.3)
    assert run_cli("export", bundle).returncode == 0
    verified = run_cli("verify", bundle, "--json")
    report = json.loads(verified.stdout)
    assert verified.returncode == 0 and report["passed"]
    assert max(c["max_abs"] for c in report["checks"]) <= 1e-3


def test_default_bundle_name_of_a_gzipped_csv_drops_both_suffixes(tmp_path):
    import gzip

    path = tmp_path / "Station-A.csv.gz"
    path.write_bytes(gzip.compress(hourly_frame(hours=120).to_csv(index=False).encode()))
    result = run_cli("train", path, "--target", "PM2.5", "--look-back", "4", "--units", "2", "--epochs", "1",
                     "--models-dir", tmp_path / "models")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["station-a"]


def test_plain_re_export_names_every_file_it_removes(trained_bundle, tmp_path):
    import shutil

    from edgecast import export

    copy = tmp_path / "bundle"
    shutil.copytree(trained_bundle, copy)
    stale = ["model.int8.onnx", "model.builtin.tflite"]  # left by an earlier export with other options
    for name in stale:
        shutil.copy(copy / ("model.onnx" if name.endswith(".onnx") else "model.tflite"), copy / name)
    (copy / "model.sig").write_text("{}")  # `edgecast sign` of the earlier export: no longer its files
    result = run_cli("export", copy)
    assert result.returncode == 0, result.stderr
    removed = [line for line in result.stdout.splitlines() if line.startswith("removed ")]
    assert sorted(removed) == sorted([*(f"removed {copy / name} (written by an earlier export, not requested this "
                                        f"time)" for name in stale),
                                      f"removed {copy / 'model.sig'} (it signed the earlier export's files: run "
                                      f"edgecast sign again)"])
    assert not any((copy / name).exists() for name in [*stale, "model.sig"])
    (copy / "model.int8.onnx").write_bytes((copy / "model.onnx").read_bytes())
    assert export(copy, tflite=False).removed == [copy / "model.tflite", copy / "model.int8.onnx"]


def test_verify_says_when_the_manifest_belongs_to_another_model(trained_bundle, tiny_csv, tmp_path):
    import shutil

    import edgecast

    other = edgecast.train(tiny_csv, target="PM2.5", look_back=4, units=2, epochs=1, models_dir=tmp_path / "models")
    edgecast.export(other.bundle, tflite=False)
    copy = tmp_path / "bundle"
    shutil.copytree(trained_bundle, copy)
    shutil.copy(other.bundle / "manifest.json", copy / "manifest.json")
    result = run_cli("verify", copy)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    problems = [line for line in result.stderr.splitlines() if line.startswith("integrity:")]
    assert len(problems) == 1, result.stderr
    assert f"{copy / 'manifest.json'} belongs to another model ('tiny', trained on {tiny_csv})" in problems[0]
    assert "edgecast export" in problems[0] and "corrupted" not in result.stderr


@pytest.mark.parametrize("options, fragment", [
    (["--learning-rate", "-1"], "--learning-rate must be a positive number, got -1.0"),
    (["--learning-rate", "0"], "--learning-rate must be a positive number, got 0.0"),
    (["--patience", "-1"], "--patience must be 0 or more, got -1"),
    (["--decimal", "x"], "--decimal 'x' must be '.' or ','"),
    (["--delimiter", ",", "--decimal", ","], "--decimal ',' is also the --delimiter"),
    (["--name", "../escape"], "--name '../escape' names a folder in models_dir: give one folder"),
    (["--name", "a/b"], "--name 'a/b' names a folder in models_dir"),
    (["--name", ""], "--name '' names a folder in models_dir"),
])
def test_bad_training_options_are_one_line_before_any_work(tiny_csv, tmp_path, options, fragment):
    """Values that used to train anyway: a negative rate (the loss climbs), a negative
    patience, a decimal mark that is a letter or the delimiter, a name that leaves
    --models-dir or silently means the default."""
    result = run_cli("train", tiny_csv, "--target", "PM2.5", *options, "--models-dir", tmp_path / "models")
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "models").exists() and not (tmp_path / "escape").exists()


def foreign_spec_copy(model: Path, folder: Path) -> Path:
    """The model's ONNX file with another scaler in its embedded spec: another model's file
    of the same window shape."""
    import onnx

    from edgecast_runtime.contract import SPEC_KEY

    proto = onnx.load(model)
    entry = next(entry for entry in proto.metadata_props if entry.key == SPEC_KEY)
    spec = json.loads(entry.value)
    spec["scaler"]["data_max"] = [value + 1.0 for value in spec["scaler"]["data_max"]]
    entry.value = json.dumps(spec)
    onnx.save(proto, folder / "other.onnx")
    return folder / "other.onnx"


def test_evaluate_refuses_a_bad_stretch_or_a_foreign_artifact_in_one_line(trained_bundle, tmp_path):
    """Each used to end in a traceback (IndexError, onnxruntime's NoSuchFile or shape
    error, a temporary file's path) or, for another model's file of the same shape, in
    scores of the wrong model."""
    csv = trained_bundle.parent / "hourly.csv"
    seed_model = REPO_ROOT / "models" / "pm25-seed" / "model.onnx"
    cases = [
        (["--plot", tmp_path / "e.png", "--plot-steps", "0"], ["--plot-steps must be at least 1, got 0"]),
        (["--plot", tmp_path / "e.png", "--plot-steps", "-5"], ["--plot-steps must be at least 1, got -5"]),
        (["--plot", tmp_path / "nodir" / "e.png"], [f"the folder {tmp_path / 'nodir'} does not exist"]),
        (["--artifact", tmp_path / "absent.onnx"], ["absent.onnx: no such file (artifact)"]),
        (["--artifact", seed_model], ["takes windows [batch, 4, 1], but the model's spec describes [batch, 6, 2]"]),
        (["--artifact", foreign_spec_copy(trained_bundle / "model.onnx", tmp_path)],
         ["other.onnx: exported from another spec"]),
    ]
    for options, fragments in cases:
        assert_one_line_error(run_cli("evaluate", trained_bundle, csv, *options), *fragments)
    assert not list(tmp_path.glob("*.png"))


def test_verify_names_another_models_file_copied_in(trained_bundle, tmp_path):
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(trained_bundle, copy)
    shutil.copy(REPO_ROOT / "models" / "pm25-seed" / "model.onnx", copy / "model.onnx")
    result = run_cli("verify", copy)
    assert_one_line_error(result, f"{copy / 'model.onnx'}: takes windows [batch, 4, 1]",
                          "its sha256 differs from the manifest", code=result.returncode)
    assert result.returncode != 0


def test_fleet_report_refuses_leads_no_station_forecasts(trained_bundle, tmp_path):
    import shutil

    shutil.copytree(trained_bundle, tmp_path / "fleet" / "north")
    assert_one_line_error(run_cli("fleet", "report", tmp_path / "fleet", "--leads", "1,100"),
                          "--leads 100 lie beyond every station's horizon (the longest is 2 steps)")
    assert not (tmp_path / "fleet" / "fleet.md").exists()


def test_fleet_retrain_begins_no_round_on_a_missing_archive_nor_mixes_two(tmp_path):
    """A mistyped archive used to leave a plan naming it, and the next run on the right
    archive went on with that round; a plan file's name was once said as '--plan' too."""
    retrain = ["fleet", "retrain", "--target", "PM2.5", "--key", tmp_path / "k.pem", "--broker", "127.0.0.1:1",
               "--models-dir", tmp_path / "models"]
    assert_one_line_error(run_cli(*retrain[:2], tmp_path / "absent", *retrain[2:]),
                          f"{tmp_path / 'absent'}: no such archive folder")
    assert not (tmp_path / "models").exists()
    (tmp_path / "models").mkdir()
    (tmp_path / "other").mkdir()
    plan = tmp_path / "models" / "retrain.plan.json"
    plan.write_text(json.dumps({"round": 1, "archive": str(tmp_path / "first"), "started": "", "steps": {}}))
    assert_one_line_error(run_cli(*retrain[:2], tmp_path / "other", *retrain[2:]),
                          f"round 1 of {plan} trains on {tmp_path / 'first'}, not {tmp_path / 'other'}")
    plan.write_text("not json")
    assert_one_line_error(run_cli(*retrain[:2], tmp_path / "other", *retrain[2:]), f"--plan {plan} cannot be read")


def test_a_fleet_or_retrain_name_is_one_folder_too(tiny_csv, tmp_path):
    fleet = run_cli("fleet", "train", tiny_csv, "--target", "PM2.5", "--name", "../x", "--models-dir", tmp_path / "m")
    assert_one_line_error(fleet, "--name '../x' names a folder in models_dir")
    retrain = run_cli("fleet", "retrain", tmp_path, "--target", "PM2.5", "--key", tmp_path / "k.pem",
                      "--broker", "127.0.0.1:1", "--name", "a/b", "--models-dir", tmp_path / "m")
    assert_one_line_error(retrain, "--name 'a/b' names a folder in models_dir")
    assert not (tmp_path / "m").exists() and not (tmp_path / "x").exists()
