"""onnxruntime's telemetry stays off in the toolkit (issue 26): `import edgecast` sets
ORT_DISABLE_TELEMETRY=1 (keeping an operator's own value) before anything loads
onnxruntime, so an onnxruntime session opened by export, verify or bench writes
nothing under HOME. The control (ORT_DISABLE_TELEMETRY=0) shows onnxruntime 1.29+ does;
both run with the CI markers onnxruntime obeys cleared (support/telemetry.py).
The runtime's own test, with DNS observed too: tests/runtime/test_telemetry.py."""

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from support.telemetry import telemetry_environment

MODEL = REPO_ROOT / "tests" / "runtime" / "fixtures" / "one_feature.onnx"
SESSION = ("import edgecast, os, onnxruntime as ort; ort.InferenceSession({model!r}); "
           "print(os.environ.get('ORT_DISABLE_TELEMETRY'))")


def written_under_home(tmp_path: Path, setting=None) -> tuple:
    home = tmp_path / "home"
    home.mkdir()
    environment = telemetry_environment(home, setting)
    result = subprocess.run([sys.executable, "-c", SESSION.format(model=str(MODEL))], env=environment,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip(), sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file())


def test_importing_edgecast_turns_onnxruntime_telemetry_off(tmp_path):
    setting, written = written_under_home(tmp_path)
    assert setting == "1" and written == []


def test_the_control_writes_a_device_id_when_telemetry_is_on(tmp_path):
    import onnxruntime

    library = next(Path(onnxruntime.__file__).parent.glob("capi/libonnxruntime.so*"), None)
    if library is None or b"mobile.events.data.microsoft.com" not in library.read_bytes():
        pytest.skip("this onnxruntime has no telemetry collector compiled in")
    setting, written = written_under_home(tmp_path, "0")
    assert setting == "0" and any("deviceid" in path for path in written), written
