"""The runtime runs where only `pip install ./runtime` happened: no TensorFlow, no
onnx, nothing from the toolkit, and it imports none of the heavy libraries."""

import ast
import importlib
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.runtime import ONE, SCHEMA2, SEED_MODEL, THREE, record

FORBIDDEN = ("tensorflow", "keras", "sklearn", "pandas", "typer")


@pytest.mark.parametrize("name", ["tensorflow", "onnx"])
def test_heavy_libraries_are_not_installed(name):
    with pytest.raises(ImportError):
        importlib.import_module(name)


def test_runtime_is_the_installed_wheel_not_the_source_tree():
    import edgecast_runtime

    location = Path(edgecast_runtime.__file__).resolve()
    assert "site-packages" in location.parts, location


def test_distribution_depends_on_onnxruntime_numpy_and_prometheus_client_only():
    requirements = importlib.metadata.requires("edgecast-runtime")
    core = sorted(r.split(">")[0].split("=")[0].split("<")[0].strip().lower()
                  for r in requirements if "extra" not in r)
    extras = [r for r in requirements if "extra" in r]
    # prometheus-client (pure Python, no dependencies): the hub's /metrics
    assert core == ["numpy", "onnxruntime", "prometheus-client"]
    allowed_extras = {"mqtt": "paho-mqtt", "releases": "cryptography"}
    assert all(any(r.lower().startswith(package) and f'extra == "{extra}"' in r
                   for extra, package in allowed_extras.items()) for r in extras), extras


def test_sources_import_only_stdlib_numpy_onnxruntime_prometheus_client_and_paho():
    """...and cryptography, in the one module that wraps it (signed releases, an extra)."""
    import edgecast_runtime

    base = set(sys.stdlib_module_names) | {"numpy", "onnxruntime", "paho", "prometheus_client",
                                           "edgecast_runtime"}
    package = Path(edgecast_runtime.__file__).parent
    sources = sorted(package.rglob("*.py"))
    assert any(source.parent != package for source in sources)  # the subpackages are read too
    for source in sources:
        allowed = base | {"cryptography"} if source.name == "signature.py" else base
        tree = ast.parse(source.read_text(), filename=str(source))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{source.name} imports {name}"


def test_no_runtime_module_exceeds_400_lines():
    """One job per module: a module past 400 lines is doing several."""
    import edgecast_runtime

    package = Path(edgecast_runtime.__file__).parent
    lengths = {str(source.relative_to(package)): len(source.read_text().splitlines())
               for source in package.rglob("*.py")}
    assert {name: count for name, count in lengths.items() if count > 400} == {}
    assert len(lengths) >= 40  # the subpackages' modules are installed with the wheel
    assert "mqtt/bridge.py" in lengths and "http/server.py" in lengths


# The runtime's own HTTP service (prometheus_client imports the standard library's
# http.server for its own exporter, which the hub never starts).
HTTP_MODULES = ("edgecast_runtime.http.server", "edgecast_runtime.http.command", "edgecast_runtime.http.limits",
                "edgecast_runtime.http.connections", "edgecast_runtime.http.auth")


@pytest.mark.parametrize("module", ["edgecast_runtime.mqtt.bridge", "edgecast_runtime.cli"])
def test_an_mqtt_hub_loads_no_http_server(module):
    """An MQTT-only hub (the bridge, or the command line that starts it) never imports
    the HTTP server: `serve` imports it when it runs."""
    probe = (f"import sys, {module}\n"
             f"print(sorted(m for m in sys.modules if m in {HTTP_MODULES!r}))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    serving = subprocess.run([sys.executable, "-c", "import sys, edgecast_runtime.http.command\n"
                              "print('edgecast_runtime.http.server' in sys.modules)"], capture_output=True, text=True, timeout=60)
    assert serving.stdout.strip() == "True"  # the probe can see the server when it is loaded


SYS_MODULES_PROBE = """
import json, sys
import numpy as np
from edgecast_runtime import Forecaster, StreamingForecaster
import edgecast_runtime.cli.main, edgecast_runtime.http.command, edgecast_runtime.mqtt.bridge, edgecast_runtime.lifecycle
import edgecast_runtime.skill.metrics, edgecast_runtime.cli.replay, edgecast_runtime.skill.rolling
model = Forecaster(sys.argv[1])
window = np.ones(model.window_shape, dtype=np.float32)
forecast = model.predict(window)
model.predict_batch(np.stack([window, window]))
stream = StreamingForecaster(model)
for _ in range(model.look_back):
    answer = stream.observe([1.0] * model.n_features)
assert answer["status"] == "forecast", answer
heavy = [m for m in sys.modules if m.split(".")[0] in {forbidden!r}]
print(json.dumps({{"heavy": heavy, "forecast": [float(v) for v in forecast]}}))
"""


@pytest.mark.parametrize("model", [ONE, THREE, SCHEMA2, SEED_MODEL],
                         ids=["one", "three", "schema2", "pm25-seed"])
def test_predicting_imports_no_heavy_library(model):
    if not model.exists():
        pytest.skip(f"{model} is not there yet (the toolkit commits models/pm25-seed)")
    probe = SYS_MODULES_PROBE.format(forbidden=set(FORBIDDEN))
    result = subprocess.run([sys.executable, "-c", probe, str(model)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["heavy"] == []
    assert report["forecast"]


def test_installed_size_is_reported():
    """The runtime-only environment on disk: every installed package, the wheel's
    dependencies included (printed in the figures, for the closing note)."""
    import edgecast_runtime

    site_packages = Path(edgecast_runtime.__file__).resolve().parents[1]
    used = subprocess.run(["du", "-sk", str(site_packages)], capture_output=True, text=True,
                          check=True)
    kib = int(used.stdout.split()[0])
    prometheus = sum(f.stat().st_size for f in (site_packages / "prometheus_client").rglob("*")
                     if f.is_file())
    record("isolation", site_packages_mib=round(kib / 1024, 1),
           prometheus_client_kib=round(prometheus / 1024, 1))
    assert kib > 0
