"""Every export file of a schema-4 model on real data (issue 23): Changping trained as
scripts/interval_results.py trains every station (the defaults plus `--horizon 24`,
weather, `--interval 0.9`, seven quantile levels, `--alert 'PM2.5>75'`), exported with
`--builtin-ops`, every `--quantize` mode and `--target mcu`, and what the manifest
records of each file on all the test windows: parity of the float files on every output,
and for each quantized file its size, its test RMSE change and how far its forecast,
quantiles and probabilities moved from the float model's; the microcontroller build's
TFLM check of every output. Writes results/interval_exports.json and .md.

    .venv/bin/python scripts/interval_exports.py [--data-dir ../shared/data] [--bundle build/interval-results/changping]

A bundle that exists (interval_results.py's) is exported again, not retrained. The
export's exit status 2 (some modes refused, the others written) is expected: a refused
mode is listed with its reason.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from interval_results import ALERT, COVERAGE, HORIZON, LEVELS, WEATHER  # noqa: E402  (scripts/ is on sys.path)

from edgecast.base import write_json_atomic
from edgecast_runtime.durable import atomic_write

ROOT = Path(__file__).resolve().parents[1]
MODES = ("onnx-int8", "onnx-static-int8", "tflite-fp16", "tflite-dynamic-int8", "tflite-int8", "tflite-int16x8")
OUTPUTS = ("forecast", "quantiles", "exceedance")


def edgecast(*args: str, allowed: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "edgecast.cli", *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode not in allowed:
        raise SystemExit(f"edgecast {' '.join(args)} failed (exit {done.returncode}):\n{done.stderr.strip()}")
    return done


def trained(bundle: Path, data_dir: Path) -> Path:
    if (bundle / "intervals.json").is_file():
        return bundle
    csv = data_dir / "PRSA_Data_Changping_20130301-20170228.csv"
    if not csv.is_file():
        raise SystemExit(f"{csv}: not found (the shared data of ../shared/data)")
    edgecast("train", str(csv), "--target", "PM2.5", "--features", WEATHER, "--horizon", str(HORIZON),
             "--clock", "+08:00", "--interval", str(COVERAGE), "--quantiles", LEVELS, "--alert", ALERT.name,
             "--name", bundle.name, "--models-dir", str(bundle.parent))
    return bundle


def worst_parity(checks: list[dict]) -> dict[str, dict[str, float]]:
    """file -> output -> the largest |error| over its parity checks (both window sets, every batch)."""
    worst: dict[str, dict[str, float]] = {}
    for check in checks:
        file, _, output = check["artifact"].partition(" ")
        found = worst.setdefault(file, {})
        found[output or "forecast"] = max(found.get(output or "forecast", 0.0), check["max_abs"])
    return worst


def summary(manifest: dict, seconds: float) -> dict:
    quantization, micro = manifest.get("quantization", {}), manifest["micro"]
    chosen = micro["verification"][micro["model_file"]]
    return {
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"), "export_seconds": round(seconds, 1),
        "parity_tolerance": manifest["parity"]["tolerance_abs"],
        "float_parity": worst_parity(manifest["parity"]["checks"]),
        "quantized": {name: {key: entry.get(key) for key in (
            "bytes", "size_vs_float32", "rmse_change_pct", "max_abs_deviation", "p99_abs_deviation",
            "quantiles_max_abs_deviation", "exceedance_max_abs_deviation")}
            for name, entry in quantization.get("accuracy", {}).get("artifacts", {}).items()},
        "refused": quantization.get("refused", {}),
        "micro": {"model_file": micro["model_file"], "reason": micro["reason"], "windows": chosen["windows"],
                  "max_abs_vs_keras": {output: chosen.get(key) for output, key in (
                      ("forecast", "max_abs_vs_keras"), ("quantiles", "quantiles_max_abs_vs_keras"),
                      ("exceedance", "exceedance_max_abs_vs_keras"))},
                  "passed": chosen["passed"], "arena_bytes": micro["arena"]["bytes"],
                  "flash_estimate_bytes": micro["flash"]["total_estimate_bytes"], "tflm_us": micro["timing"]["tflm_us"]},
    }


def markdown(found: dict) -> str:
    lines = ["# Every export file of a schema-4 model (Changping)", "",
             f"Generated {found['generated']} by `scripts/interval_exports.py` (the export took "
             f"{found['export_seconds']:.0f} s). Changping trained as in `results/intervals.md` (horizon 24, weather, "
             f"90 % interval, seven quantile levels, P(PM2.5 > 75)); every figure is over the file's checks on "
             f"held-out and random windows (parity) or on all test windows (the change of each file), in µg/m³ "
             f"(probabilities: absolute). A refused mode is listed with its reason.", "",
             f"## Float files: largest |error| against the reference (tolerance {found['parity_tolerance']:g}; "
             "quantiles are held to it carried through the transform)", "",
             "| file | forecast | quantiles | probabilities |", "| --- | --- | --- | --- |"]
    for file, worst in found["float_parity"].items():
        lines.append(f"| {file} | " + " | ".join(f"{worst.get(output, float('nan')):.2e}" for output in OUTPUTS) + " |")
    lines += ["", "## Every file: change from the float model (Keras) on all test windows", "",
              "| file | bytes (× float32) | test RMSE change | forecast max (p99) | quantiles max | probabilities max |",
              "| --- | --- | --- | --- | --- | --- |"]
    for file, row in found["quantized"].items():
        lines.append(f"| {file} | {row['bytes']} ({row['size_vs_float32']:.2f}×) | {row['rmse_change_pct']:+.2f} % | "
                     f"{row['max_abs_deviation']:.3g} ({row['p99_abs_deviation']:.3g}) | "
                     f"{row['quantiles_max_abs_deviation']:.3g} | {row['exceedance_max_abs_deviation']:.3g} |")
    for mode, why in found["refused"].items():
        lines.append(f"| {mode} | refused: {why} | | | | |")
    micro = found["micro"]
    errors = micro["max_abs_vs_keras"]
    lines += ["", "## Microcontroller build", "",
              f"`{micro['model_file']}` ({micro['reason']}). In TFLM on {micro['windows']} test windows, largest "
              f"|error| against the reference: forecast {errors['forecast']:.2e}, quantiles {errors['quantiles']:.2e}, "
              f"probabilities {errors['exceedance']:.2e} ({'passed' if micro['passed'] else 'FAILED'}); arena "
              f"{micro['arena_bytes']} bytes, flash about {micro['flash_estimate_bytes']} bytes, "
              f"{micro['tflm_us']:.0f} µs per forecast on this machine.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--bundle", type=Path, default=ROOT / "build" / "interval-results" / "changping")
    options = parser.parse_args()
    bundle = trained(options.bundle.resolve(), options.data_dir)
    started = time.perf_counter()
    quantize = [part for mode in MODES for part in ("--quantize", mode)]
    edgecast("export", str(bundle), "--builtin-ops", *quantize, "--target", "mcu", allowed=(0, 2))
    manifest = json.loads((bundle / "manifest.json").read_text())
    found = summary(manifest, time.perf_counter() - started)
    write_json_atomic(ROOT / "results" / "interval_exports.json", found)
    atomic_write(ROOT / "results" / "interval_exports.md", markdown(found).encode())
    print(markdown(found))


if __name__ == "__main__":
    main()
