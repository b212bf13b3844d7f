"""The Python API: the README's example run as written, results typed, `import edgecast` light."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, hourly_frame, run_cli

README = REPO_ROOT / "README.md"


def readme_api_example() -> str:
    """The first Python code block of the README's "Python API" section."""
    section = README.read_text().split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "the README's Python API section has no ```python block"
    return blocks[0]


def test_readme_example_runs_as_written(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(readme_api_example())
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    bundle = tmp_path / "models" / "station"
    for name in ("model.keras", "model.onnx", "model.tflite", "manifest.json"):
        assert (bundle / name).is_file(), name
    assert "parity passed: True" in result.stdout
    assert (tmp_path / "station.svg").read_text().lstrip().startswith("<?xml")
    assert re.search(r"persistence\s+RMSE \d+\.\d\d", result.stdout), result.stdout


def test_import_edgecast_loads_no_tensorflow():
    code = ("import sys, edgecast; edgecast.train, edgecast.TrainResult, edgecast.evaluate; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'tf2onnx', 'onnx', 'pandas') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_export_stays_the_function_when_the_export_package_is_imported():
    """The export package is edgecast.exporter: importing its modules leaves edgecast.export
    the API's function (a package of that name would replace it as an attribute)."""
    code = ("import inspect, edgecast, edgecast.exporter.pipeline, edgecast.exporter.micro.build; "
            "from edgecast import api; "
            "assert edgecast.export is api.export, edgecast.export; "
            "assert edgecast.exporter.pipeline.__name__ == 'edgecast.exporter.pipeline'; "
            "print(list(inspect.signature(edgecast.export).parameters)[:2])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['bundle', 'opset']"


@pytest.mark.parametrize("file, name", [
    ("station.csv", "station"),
    ("PRSA_Data_Changping.csv.gz", "prsa-data-changping"),
    ("Station A.CSV.BZ2", "station-a"),
    ("readings.tsv", "readings"),
    ("log.gz", "log"),
    (".csv", "csv"),
])
def test_default_bundle_name_drops_table_and_compression_suffixes(file, name):
    from edgecast import default_bundle_name

    assert default_bundle_name(file) == name


def test_unknown_loader_option_is_named(tiny_csv, tmp_path):
    import edgecast

    with pytest.raises(TypeError, match="unexpected keyword argument 'epoch'"):
        edgecast.train(tiny_csv, target="PM2.5", epoch=3, models_dir=tmp_path)


def test_verify_and_evaluate_results_are_typed_and_give_the_cli_json(trained_bundle, tmp_path):
    import edgecast

    verified = edgecast.verify(trained_bundle)
    assert verified.passed and verified.parity.checks[0].artifact == "model.onnx"
    assert verified.accuracy.artifacts["model.onnx"].bytes == (trained_bundle / "model.onnx").stat().st_size
    assert json.loads(run_cli("verify", trained_bundle, "--json").stdout).keys() == verified.to_dict().keys()

    csv = tmp_path / "hourly.csv"
    hourly_frame(hours=300).to_csv(csv, index=False)
    evaluated = edgecast.evaluate(trained_bundle, csv)
    assert evaluated.data.same_as_training and evaluated.plot is None
    assert evaluated.metrics.horizon_steps == [1, 2]
    assert set(evaluated.metrics.methods) >= {"model", "persistence", "ridge"}
    printed = json.loads(run_cli("evaluate", trained_bundle, csv, "--json").stdout)
    assert printed == json.loads(json.dumps(evaluated.to_dict()))


def test_evaluate_scores_an_exported_artifact_as_the_hub_runs_it(trained_bundle, tmp_path):
    """`artifact`: the API hands the trainer the exported file's runner (the trainer never
    imports export); its forecasts replace Keras's, within the parity tolerance of them."""
    import numpy as np

    import edgecast
    from edgecast.exporter.parity import TOLERANCE

    csv = tmp_path / "hourly.csv"
    hourly_frame(hours=300).to_csv(csv, index=False)
    keras = edgecast.evaluate(trained_bundle, csv).evaluation.model_forecast
    for name in ("model.onnx", "model.tflite"):
        evaluated = edgecast.evaluate(trained_bundle, csv, artifact=trained_bundle / name)
        forecast = evaluated.evaluation.model_forecast
        assert forecast.shape == keras.shape
        assert np.max(np.abs(forecast - keras)) <= TOLERANCE and np.any(forecast != keras), name
    printed = json.loads(run_cli("evaluate", trained_bundle, csv, "--artifact", trained_bundle / "model.onnx",
                                 "--json").stdout)
    onnx = edgecast.evaluate(trained_bundle, csv, artifact=trained_bundle / "model.onnx")
    assert printed == json.loads(json.dumps(onnx.to_dict()))
