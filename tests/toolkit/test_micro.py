"""`edgecast export --target mcu`: the microcontroller build, checked in TensorFlow Lite Micro.

One small two-feature model (conftest's trained_bundle, look-back 6, horizon 2, LSTM(8))
is exported once through the CLI; the tests read what it wrote and rerun TFLM in child
processes where a claim needs it.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from edgecast.exporter.micro.build import verify_micro
from edgecast.exporter.micro.checks import ERROR_BUDGET_PCT, INT8_FILE, LITERT_MAX_STEPS, LITERT_MEAN_STEPS, choose
from edgecast.exporter.micro.cpp import RESOLVER_METHODS
from edgecast.exporter.micro.tflm import run_tflm
from edgecast.exporter.oplist import tflite_ops
from edgecast.exporter.parity import TOLERANCE
from edgecast_runtime.contract import BUILTIN_TFLITE_FILE as BUILTIN_FILE

MICRO_FILES = {"model_data.cc", "model_data.h", "op_resolver.h", "main.cc", "micro.json"}


@pytest.fixture(scope="module")
def micro_bundle(trained_bundle: Path, tmp_path_factory) -> Path:
    bundle = tmp_path_factory.mktemp("micro") / "hourly"
    shutil.copytree(trained_bundle, bundle)
    result = run_cli("export", bundle, "--target", "mcu")
    assert result.returncode == 0, result.stderr
    assert "microcontroller build" in result.stdout
    return bundle


def micro_record(bundle: Path) -> dict:
    return json.loads((bundle / "micro" / "micro.json").read_text())


def test_target_mcu_writes_the_micro_folder_whole(micro_bundle: Path):
    record = micro_record(micro_bundle)
    folder = micro_bundle / "micro"
    assert {path.name for path in folder.iterdir()} == MICRO_FILES | {record["model_file"]}
    assert record["model_file"] in (INT8_FILE, BUILTIN_FILE)
    assert (folder / record["model_file"]).read_bytes() == (micro_bundle / record["model_file"]).read_bytes()
    manifest = json.loads((micro_bundle / "manifest.json").read_text())
    assert manifest["micro"]["files"] == record["files"]
    assert manifest["micro"]["arena"] == record["arena"]
    assert not [p for p in micro_bundle.iterdir() if p.name.startswith(".micro")]  # no staging or old folder left
    # The choice follows the stated budget at every lead on TFLM's own forecasts of the
    # int8 file, its collapse check and its agreement with LiteRT per lead.
    int8 = record["verification"][INT8_FILE]
    changes = int8["rmse_change_pct_per_lead"]
    assert len(changes) == len(int8["max_abs_vs_litert_per_lead"]) == 2  # horizon 2
    gates = max(changes) <= ERROR_BUDGET_PCT and not int8["collapsed"] and int8["passed"]
    assert (record["model_file"] == INT8_FILE) == gates
    assert f"{max(changes):+.2f}%" in record["reason"] or not gates
    assert all(value <= int8["litert_max_abs"] for value in int8["max_abs_vs_litert_per_lead"])


def test_generated_model_source_compiles(micro_bundle: Path, tmp_path: Path):
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("g++ is not installed: the generated model source cannot be compiled here")
    folder = micro_bundle / "micro"
    result = subprocess.run(
        [compiler, "-std=c++17", "-Wall", "-Wextra", "-Werror", "-c", str(folder / "model_data.cc"), "-o",
         str(tmp_path / "model_data.o")], capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    record = micro_record(micro_bundle)
    symbols = subprocess.run(["nm", "-S", str(tmp_path / "model_data.o")], capture_output=True, text=True).stdout
    array = next(line for line in symbols.splitlines() if line.endswith(" g_edgecast_model"))
    assert int(array.split()[1], 16) == (folder / record["model_file"]).stat().st_size
    assert "alignas(16) const unsigned char g_edgecast_model[]" in (folder / "model_data.cc").read_text()


def test_op_resolver_is_the_files_op_list(micro_bundle: Path):
    record = micro_record(micro_bundle)
    folder = micro_bundle / "micro"
    ops = sorted({op["op"] for op in tflite_ops(folder / record["model_file"])})
    header = (folder / "op_resolver.h").read_text()
    assert f"tflite::MicroMutableOpResolver<{len(ops)}>" in header
    assert [line.split("resolver.")[1].split("(")[0] for line in header.splitlines() if "resolver.Add" in line] == [
        RESOLVER_METHODS[op] for op in ops
    ]
    main = (folder / "main.cc").read_text()
    assert f"kTensorArenaSize = {record['arena']['bytes']};" in main
    assert "interpreter.Reset();" in main and record["tflm_release"] in main
    assert "$" not in main  # every template field filled


def test_tflm_parity_and_int8_accuracy(micro_bundle: Path):
    """The chosen file passed in TFLM at export; the int8 file agrees with LiteRT, rerun now."""
    from edgecast.exporter.parity import tflite_forecast

    record = micro_record(micro_bundle)
    assert record["verification"][record["model_file"]]["passed"]
    builtin = record["verification"][BUILTIN_FILE]  # checked whichever file is chosen
    assert builtin["max_abs_vs_keras"] <= TOLERANCE and builtin["passed"]
    int8 = record["verification"][INT8_FILE]
    assert int8["passed"] and max(int8["max_abs_vs_litert_per_lead"]) <= int8["litert_max_abs"]
    assert max(int8["mean_abs_vs_litert_per_lead"]) <= int8["litert_mean_abs"]
    assert np.isfinite(int8["rmse_change_pct"]) and 0 < int8["identical_share"] <= 1
    x = np.load(micro_bundle / "windows.npz")["test_x"].astype(np.float32)
    tflm = run_tflm(micro_bundle / INT8_FILE, 256 * 1024, x)
    assert tflm.ran, tflm.stderr
    litert = tflite_forecast(micro_bundle / INT8_FILE, x)
    step = int8["output_step"]
    assert np.all(np.abs(tflm.forecasts - litert).max(axis=0) <= LITERT_MAX_STEPS * step)
    assert np.all(np.abs(tflm.forecasts - litert).mean(axis=0) <= LITERT_MEAN_STEPS * step)


def test_builtin_file_matches_keras_in_tflm(micro_bundle: Path):
    """Whatever was chosen, the float32 builtin-ops file runs in TFLM within the parity tolerance."""
    from edgecast.exporter.parity import reference_forecast
    from edgecast.trainer.bundle import read_bundle

    bundle = read_bundle(micro_bundle)
    x = bundle.windows()["test_x"].astype(np.float32)
    run = run_tflm(micro_bundle / BUILTIN_FILE, 256 * 1024, x)
    assert run.ran, run.stderr
    assert np.max(np.abs(run.forecasts - reference_forecast(bundle.load_model(), bundle.spec, x))) <= TOLERANCE


def test_arena_measured_size_works_and_ten_percent_less_does_not(micro_bundle: Path):
    record = micro_record(micro_bundle)
    model = micro_bundle / "micro" / record["model_file"]
    arena = record["arena"]
    x = np.load(micro_bundle / "windows.npz")["test_x"][:4].astype(np.float32)
    smallest = run_tflm(model, arena["min_bytes"], x)
    assert smallest.ran, smallest.stderr
    padded = run_tflm(model, arena["bytes"], np.concatenate([x[:1], x[:1]]))
    assert padded.ran and np.array_equal(padded.forecasts[0], padded.forecasts[1])  # state reset between windows
    short = run_tflm(model, int(arena["min_bytes"] * 0.9), x)
    assert short.returncode != 0 and short.forecasts is None  # aborted, crashed or refused: never a forecast
    assert arena["ninety_percent_fails"] and arena["bytes"] >= arena["min_bytes"] * 1.1
    assert arena["bytes"] % 1024 == 0


def test_figures_are_recorded(micro_bundle: Path):
    record = micro_record(micro_bundle)
    flash = record["flash"]
    assert flash["model_bytes"] == (micro_bundle / "micro" / record["model_file"]).stat().st_size
    assert flash["total_estimate_bytes"] == flash["model_bytes"] + flash["interpreter_estimate_bytes"]
    assert set(flash["kernel_bytes"]) == set(record["ops"]["counts"])
    assert record["timing"]["tflm_us"] > 0 and record["timing"]["litert_us"] > 0


def test_verify_shows_the_micro_build_and_catches_a_changed_file(micro_bundle: Path, tmp_path: Path):
    result = run_cli("verify", micro_bundle)
    assert result.returncode == 0, result.stderr
    assert "microcontroller build" in result.stdout and "passed" in result.stdout
    tampered = tmp_path / "hourly"
    shutil.copytree(micro_bundle, tampered)
    source = tampered / "micro" / "model_data.cc"
    source.write_text(source.read_text().replace("0x", "0X", 1))
    report = verify_micro(tampered)
    assert not report["passed"]
    assert report["problems"] == [f"{source}: sha256 differs from the manifest"]


def test_choice_and_its_reason():
    def int8(leads: list[float], **changes: object) -> dict:
        return {INT8_FILE: {"rmse_change_pct": float(np.mean(leads)), "rmse_change_pct_per_lead": leads,
                            "collapsed": False, "passed": True, "failure": "TFLM differs", **changes}}

    within = int8([ERROR_BUDGET_PCT - 0.5, 0.0])
    assert choose(within, None)[0] == INT8_FILE
    chosen, reason = choose(int8([ERROR_BUDGET_PCT + 0.5, 0.0]), None)
    assert chosen == BUILTIN_FILE and "over the 3% budget per lead" in reason and "at lead 1" in reason
    # Pooled within the budget, one lead over it: the float32 file (issue 27 case 7).
    chosen, reason = choose(int8([-2.0, ERROR_BUDGET_PCT + 1.0]), None)
    assert chosen == BUILTIN_FILE and "at lead 2" in reason
    chosen, reason = choose(int8([0.0, 0.0], collapsed=True, collapse="90% of windows flat"), None)
    assert chosen == BUILTIN_FILE and "collapse: 90% of windows flat" in reason
    chosen, reason = choose(int8([0.0, 0.0], passed=False), None)
    assert chosen == BUILTIN_FILE and "TFLM differs" in reason
    chosen, reason = choose({}, "the converter refused")
    assert chosen == BUILTIN_FILE and "tflite-int8 was refused (the converter refused)" in reason


def test_unknown_target_is_a_usage_error(trained_bundle: Path):
    result = run_cli("export", trained_bundle, "--target", "fpga")
    assert result.returncode == 2
    assert "'fpga' is not one of hub, mcu" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("fails", [False, True], ids=["built", "build-fails"])
def test_the_micro_build_is_a_pipeline_step_before_the_one_manifest_write(trained_bundle, tmp_path, monkeypatch,
                                                                           fails):
    """The pipeline makes the files the build chooses between, runs the build (replaced
    here by a stand-in) before it writes the manifest, and writes the manifest once; a
    failed build leaves a manifest that describes the artifacts on disk, without "micro"."""
    from edgecast import base
    from edgecast.exporter.errors import MicroError
    from edgecast.exporter.manifest import integrity_problems, read_manifest
    from edgecast.exporter.micro import build
    from edgecast.exporter.pipeline import export_bundle
    from edgecast.trainer.bundle import read_bundle

    bundle = tmp_path / "hourly"
    shutil.copytree(trained_bundle, bundle)
    written = []
    atomic_write = base.atomic_write
    monkeypatch.setattr(base, "atomic_write", lambda path, data: (written.append(Path(path).name),
                                                                  atomic_write(path, data))[1])
    stand_in = build.MicroResult(bundle / "micro", BUILTIN_FILE, "float32", "a stand-in", ERROR_BUDGET_PCT,
                                 "tflite-micro test", {}, {}, {"bytes": 1024}, {}, {}, {})
    seen = {}

    def build_micro(model_bundle, model, artifacts, int8_refused, progress):
        seen.update(artifacts=set(artifacts), refused=int8_refused, manifest_writes=written.count("manifest.json"))
        if fails:
            raise MicroError("the stand-in build failed")
        return stand_in

    monkeypatch.setattr(build, "build_micro", build_micro)
    if fails:
        with pytest.raises(MicroError, match="the stand-in build failed"):
            export_bundle(bundle, target="mcu", progress=lambda line: None)
    else:
        result = export_bundle(bundle, target="mcu", progress=lambda line: None)
        assert result.micro is stand_in and result.refused == {}
    assert seen["manifest_writes"] == 0 and written.count("manifest.json") == 1
    assert {BUILTIN_FILE, INT8_FILE} <= seen["artifacts"] or seen["refused"]
    manifest = read_manifest(bundle)
    assert set(manifest["artifacts"]) == seen["artifacts"]
    assert integrity_problems(read_bundle(bundle), manifest) == []
    if fails:
        assert "micro" not in manifest
    else:
        assert manifest["micro"] == stand_in.manifest_entry() and manifest["micro"]["folder"] == "micro"
