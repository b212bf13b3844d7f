"""Smoke test of `edgecast bench --quick` on the tutorial model: it runs every backend and
writes a JSON report of the promised structure with positive figures. No timings are
asserted (the machine is shared); benchmarks/run.py produces the real numbers and checks
them against the project's targets (benchmarks/targets.py), which `edgecast bench` does not print."""
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from edgecast.benchmarking import BACKENDS

EDGECAST = [sys.executable, "-m", "edgecast.cli"]


@pytest.fixture(scope="module")
def tutorial_bundle(tmp_path_factory) -> Path:
    models = tmp_path_factory.mktemp("models")
    done = subprocess.run([*EDGECAST, "demo", "--models-dir", str(models), "--name", "tutorial"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return models / "tutorial"


def positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def test_bench_quick_writes_the_report(tutorial_bundle, tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run([*EDGECAST, "bench", str(tutorial_bundle), "--quick", "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| backend |" in done.stdout

    report = json.loads(out.read_text())
    assert report["schema_version"] == 2
    assert positive(report["environments"]["runtime-only"]["bytes"])
    assert positive(report["environments"]["full toolkit"]["bytes"])
    (model,) = report["models"]
    assert model["model"]["look_back"] == 4 and model["model"]["name"] == "tutorial"
    assert set(model["backends"]) == set(BACKENDS)
    forecasts = []
    for name, entry in model["backends"].items():
        latency = entry["latency_us"]
        assert positive(latency["median"]) and positive(latency["p99"]) and latency["p99"] >= latency["median"], name
        assert entry["throughput"] and all(positive(row["threads"]) for row in entry["throughput"]), name
        for row in entry["throughput"]:
            rates = [value for key, value in row.items() if key.endswith("_windows_per_s")]
            assert len(rates) == 2 and all(positive(rate) for rate in rates), name
        cold = entry["cold_start"]
        assert positive(cold["median_s"]) and positive(cold["peak_rss_mib"]), name
        assert positive(entry["artifact_bytes"]) and positive(entry["environment_bytes"]), name
        forecasts.append(cold["forecast"][0])
    # the backends were timed in interleaved rounds: each ratio with its bootstrap interval, printed too
    ratios = {(r["ratio"], r["measure"]): r for r in model["ratios"]}
    assert {("runtime/onnxruntime", "latency"), ("runtime/litert", "latency"),
            ("runtime/onnxruntime", "throughput")} <= set(ratios)
    for found in ratios.values():
        assert positive(found["low"]) and found["low"] <= found["median"] <= found["high"], found
        assert found["rounds"] == model["settings"]["rounds"] >= 2
        assert found["process_sets"] == model["settings"]["process_sets"] == 2  # --quick: 2 fresh sets
    assert "runtime/onnxruntime" in done.stdout and "95 % interval" in done.stdout
    assert len(report["machine"]["load_average_before"]) == 3
    # every backend forecast the same raw-units value for the same window
    assert max(forecasts) - min(forecasts) < 1e-3
    # the project's pass/fail targets stay out of a user's report and terminal
    assert "targets" not in model and "target" not in done.stdout.lower()
    found = benchmark_targets().targets(model, report["environments"])
    assert len(found) == 7  # three latency ratios, cold start, peak RSS, throughput at 1 thread, environment
    assert all(isinstance(t["met"], bool) and positive(abs(t["value"])) for t in found)


def benchmark_targets():
    """benchmarks/targets.py: not a package module, loaded from its file as benchmarks/run.py runs it."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "targets.py"
    spec = importlib.util.spec_from_file_location("benchmark_targets", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_names_a_missing_export(tmp_path):
    bundle = tmp_path / "empty"
    bundle.mkdir()
    (bundle / "preprocessing.json").write_text(json.dumps({
        "look_back": 4, "features": ["x"], "horizon": 1,
        "scaler": {"data_min": [0.0], "data_max": [1.0], "feature_range": [0.0, 1.0]},
    }))
    done = subprocess.run([*EDGECAST, "bench", str(bundle), "--quick"], capture_output=True, text=True)
    assert done.returncode == 2
    assert "edgecast export" in done.stderr and "Traceback" not in done.stderr
