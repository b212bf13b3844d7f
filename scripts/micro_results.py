"""Microcontroller builds of two models, verified in TensorFlow Lite Micro, with their RAM
and flash: writes results/micro.json and results/micro.md.

    .venv/bin/python scripts/micro_results.py [--data-dir ../shared/data] [--work-dir build/micro-results] [--epochs 5]

Models: the tutorial model (the committed models/pm25-seed, look-back 4, LSTM(4),
exported from a copy) and a Changping PM2.5 model with look-back 24 and small settings
(LSTM(16), at most --epochs epochs), trained into --work-dir. Each goes through the real
CLI, `edgecast export --target mcu`; then, for the file the export did NOT choose, the
same arena search and timing are run, so both files of each model are in the table.
The data are never copied into the project; without them the script stops with the reason.
"""
from __future__ import annotations

import argparse
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from edgecast_cli import edgecast  # noqa: E402  (scripts/ is on sys.path when run)

CSV_NAME = "PRSA_Data_Changping_20130301-20170228.csv"
LOOK_BACK = 24
UNITS = 16

# Published figures for scale, found with the project's search tool (docs/pages corpora).
# Only what those pages state in text; the keyword-spotting comparison in Edge Impulse's
# EON announcement is in images there, so it is not quoted.
PUBLISHED = [
    {"what": "Edge Impulse, 'Continuous gestures' tutorial model: spectral-analysis DSP block, a 33x20x10x4 "
             "fully connected network (int8, EON compiler) and an anomaly block; bare metal, release build",
     "ram": "6.4 KB", "rom": "42.5 KB",
     "source": "https://docs.edgeimpulse.com/docs/tips-and-tricks/inference-performance-metrics"},
    {"what": "Edge Impulse's EON compiler against TensorFlow Lite Micro on the same models (their claim)",
     "ram": "25-55% less", "rom": "up to 35% less",
     "source": "https://edgeimpulse.com/blog/introducing-eon/"},
    {"what": "TensorFlow Lite Micro core runtime on an Arm Cortex-M3 (the basis of our interpreter estimate); "
             "22 KB with the operations of the speech keyword example",
     "ram": "-", "rom": "16 KB",
     "source": "https://www.tensorflow.org/lite/microcontrollers (core runtime); "
               "https://tensorflow.org/lite/microcontrollers/overview?hl=zh-cn (22 KB with the keyword model's ops)"},
]


def export_mcu(bundle: Path) -> dict:
    edgecast("export", str(bundle), "--target", "mcu")
    verified = json.loads(edgecast("verify", str(bundle), "--json"))
    if not verified["passed"]:
        raise SystemExit(f"edgecast verify {bundle} did not pass")
    return json.loads((bundle / "micro" / "micro.json").read_text())


def other_file(bundle: Path, micro: dict) -> dict:
    """Arena and timing of the file the export did not choose, measured the same way."""
    import numpy as np

    from edgecast.exporter.micro.checks import INT8_FILE
    from edgecast.exporter.micro.flash import flash_estimate
    from edgecast.exporter.micro.tflm import PROBE_WINDOWS, run_tflm, smallest_arena, timing
    from edgecast.exporter.oplist import tflite_ops
    from edgecast_runtime.contract import BUILTIN_TFLITE_FILE as BUILTIN_FILE

    name = BUILTIN_FILE if micro["model_file"] == INT8_FILE else INT8_FILE
    path = bundle / name
    x = np.load(bundle / "windows.npz")["test_x"].astype(np.float32)
    arena = smallest_arena(path, x[:PROBE_WINDOWS])
    arena["ninety_percent_bytes"] = int(arena["min_bytes"] * 0.9)
    arena["ninety_percent_fails"] = not run_tflm(path, arena["ninety_percent_bytes"], x[:PROBE_WINDOWS]).ran
    ops = sorted({op["op"] for op in tflite_ops(path)})
    return {"file": name, "arena": arena, "flash": flash_estimate(path.stat().st_size, ops),
            "timing": timing(path, arena["bytes"], x), "verification": micro["verification"].get(name)}


def row(model: str, chosen: bool, file: str, arena: dict, flash: dict, timing: dict, check: dict | None) -> dict:
    return {
        "model": model, "file": file, "chosen": chosen,
        "arena_min_bytes": arena["min_bytes"], "arena_bytes": arena["bytes"],
        "flash_model_bytes": flash["model_bytes"], "flash_code_estimate_bytes": flash["interpreter_estimate_bytes"],
        "flash_total_estimate_bytes": flash["total_estimate_bytes"], "ninety_percent_fails": arena["ninety_percent_fails"],
        "tflm_us": timing["tflm_us"], "litert_us": timing["litert_us"],
        "rmse_change_pct": check["rmse_change_pct"] if check else None,
        "tflm_check": _check_text(check),
    }


def _check_text(check: dict | None) -> str:
    if not check:
        return "not run in TFLM on the test split (not a candidate)"
    if "max_abs_vs_keras" in check:
        return f"max abs vs Keras {check['max_abs_vs_keras']:.2e}"
    per_lead = " ".join(f"{value:.3g}" for value in check.get("max_abs_vs_litert_per_lead", []))
    return (f"vs LiteRT int8: mean |diff| {check['litert_agreement']:.3%} of mean |forecast|, "
            f"{check['identical_share']:.1%} identical, largest {check['max_abs_vs_litert']:.3g} "
            f"({check['max_steps_vs_litert']:.2f} output steps; per lead {per_lead})")


def run(data_dir: Path, work_dir: Path, epochs: int) -> dict:
    csv = data_dir / CSV_NAME
    if not csv.is_file():
        raise SystemExit(f"{csv} not found: the Changping station lives in ../shared/data beside the repo")
    if work_dir.exists():
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)
    tutorial = work_dir / "pm25-seed"
    shutil.copytree(ROOT / "models" / "pm25-seed", tutorial)
    changping = work_dir / "changping-lb24"
    edgecast("train", str(csv), "--target", "PM2.5", "--look-back", str(LOOK_BACK), "--units", str(UNITS),
             "--epochs", str(epochs), "--name", changping.name, "--models-dir", str(work_dir))
    models, rows = {}, []
    for label, bundle in (("tutorial (pm25-seed, look-back 4, LSTM(4))", tutorial),
                          (f"Changping PM2.5 (look-back {LOOK_BACK}, LSTM({UNITS}))", changping)):
        micro = export_mcu(bundle)
        other = other_file(bundle, micro)
        models[label] = {"micro": micro, "other_file": other,
                         "test_windows": micro["verification"][micro["model_file"]]["windows"]}
        rows.append(row(label, True, micro["model_file"], micro["arena"], micro["flash"], micro["timing"],
                        micro["verification"][micro["model_file"]]))
        rows.append(row(label, False, other["file"], other["arena"], other["flash"], other["timing"],
                        other["verification"]))
    return {
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tflm_release": next(iter(models.values()))["micro"]["tflm_release"],
        "settings": {"look_back": LOOK_BACK, "units": UNITS, "epochs": epochs, "data": CSV_NAME},
        "rows": rows, "models": models, "published_for_scale": PUBLISHED,
    }


def markdown(results: dict) -> str:
    lines = [
        "# Microcontroller builds, verified in TensorFlow Lite Micro",
        "",
        f"Written by `scripts/micro_results.py` on {results['created']} with {results['tflm_release']}; "
        "`edgecast export --target mcu` on each model, then the same measurements on the file it did not choose.",
        "",
        "| model | file | chosen | arena bytes (smallest working) | flash bytes: model + code estimate = total "
        "| µs per forecast TFLM / LiteRT | test RMSE change in TFLM | TFLM check |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results["rows"]:
        change = f"{r['rmse_change_pct']:+.2f}%" if r["rmse_change_pct"] is not None else "-"
        lines.append(
            f"| {r['model']} | {r['file']} | {'yes' if r['chosen'] else 'no'} | {r['arena_bytes']} ({r['arena_min_bytes']}) "
            f"| {r['flash_model_bytes']} + {r['flash_code_estimate_bytes']} = {r['flash_total_estimate_bytes']} "
            f"| {r['tflm_us']:.1f} / {r['litert_us']:.1f} | {change} | {r['tflm_check'].replace('|', chr(92) + '|')} |"
        )
    first = next(iter(results["models"].values()))["micro"]
    lines += [
        "",
        "How each figure is measured:",
        "",
        f"- **Choice**: int8 (fused LSTM) when, from TFLM's own forecasts, its test RMSE is within "
        f"{first['error_budget_pct']:g}% of the float model's at every lead, its forecasts do not collapse and TFLM "
        "agrees with LiteRT per lead (export/micro/checks.py; results/micro_collapse.md); otherwise the float32 "
        "builtin-ops file.",
        f"- **Arena**: the smallest `arena_size` with which TFLM's interpreter runs the file and reproduces a "
        f"generous run's forecasts bit for bit, found by bisection to 16 bytes, every probe in its own process "
        f"(a too-small arena can crash the process, not only raise); the arena used is {first['arena']['margin']}. "
        f"90% of the smallest arena fails for {sum(r['ninety_percent_fails'] for r in results['rows'])} of the "
        f"{len(results['rows'])} files.",
        "- **Flash**: the model array is exact. The code is an estimate: TFLM's published 16 KB core runtime "
        "(Cortex-M3) plus, per op, the x86-64 machine code of that kernel in the tflite-micro wheel "
        "(`export/micro/tflm_kernel_sizes.json`, from `scripts/tflm_kernel_sizes.py`). x86-64 code is larger than "
        "Thumb-2 and every dtype is instantiated there, so the code part leans high.",
        "- **µs per forecast**: median over 500 forecasts (reset state, set the window, invoke, read the output) through "
        "each interpreter's Python binding, one thread, TFLM and LiteRT in the same process on this machine "
        "(2 shared x86 cores), not on a microcontroller.",
        "- **TFLM check** and RMSE change: every test window of the bundle ("
        + ", ".join(f"{m['test_windows']} for {label.split(' (')[0]}" for label, m in results["models"].items())
        + "), LSTM state reset before each. float32 against the Keras pipeline (parity tolerance 1e-3); int8 against "
        "LiteRT's int8 on the same file: max |TFLM - LiteRT| at most 3 output steps at each lead and mean "
        "|TFLM - LiteRT| at most 0.5% of mean |LiteRT forecast|. Their integer "
        "LSTM kernels round differently, so single forecasts differ by whole steps of the int8 output.",
        "",
        "## Published figures, for scale",
        "",
        "| what | RAM | ROM / flash | source |",
        "| --- | --- | --- | --- |",
    ]
    for item in results["published_for_scale"]:
        lines.append(f"| {item['what']} | {item['ram']} | {item['rom']} | {item['source']} |")
    lines += ["", "Edge Impulse's figures are for its EON-compiled code, which it states needs less RAM and flash "
              "than TFLM; ours are TFLM's interpreter. They are quoted for scale, not as a like-for-like comparison.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "build" / "micro-results")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    results = run(args.data_dir, args.work_dir, args.epochs)
    from edgecast.base import write_json_atomic
    from edgecast_runtime.durable import atomic_write

    write_json_atomic(ROOT / "results" / "micro.json", results)
    atomic_write(ROOT / "results" / "micro.md", markdown(results).encode())
    print(markdown(results))


if __name__ == "__main__":
    main()
