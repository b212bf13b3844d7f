"""Issue 27 case 7, measured: the microcontroller's int8 file before and after the fix on a
horizon-6 Changping PM2.5 model. Writes results/micro_collapse.json and .md.

    .venv/bin/python scripts/micro_collapse_results.py [--data-dir ../shared/data] [--work-dir build/micro-collapse] [--epochs 3] [--markdown-only]

The model (look-back 24, LSTM(16), at most --epochs epochs, the whole file) is trained and
exported with the real CLI (`edgecast train`, `edgecast export --target mcu`). "Before" is
the int8 file converted from the graph as it was (change_from_last's step scale as an
elementwise MUL), "after" the file the export wrote (a MatMul by diag(step_scale)); both
are checked by the build's own measure (export/micro/checks.py `check_int8`) on every test
window, TFLM in child processes. The data are never copied into the project.
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
HORIZON = 6


def old_int8_file(bundle: Path, target: Path) -> None:
    """The int8 file as the export made it before the fix (MUL by the step scale)."""
    import edgecast.exporter.fused_lstm as fused
    from edgecast.exporter.quantize import MODES, quantize
    from edgecast.trainer.bundle import read_bundle

    original = fused.raw_units_function
    fused.raw_units_function = lambda model, spec, batch, diagonal_step=False: original(model, spec, batch)
    try:
        loaded = read_bundle(bundle)
        target.write_bytes(quantize(MODES["tflite-int8"], loaded.load_model(), loaded.spec, bundle / "model.onnx",
                                    loaded.windows()["calibration_x"]))
    finally:
        fused.raw_units_function = original


def measure(bundle: Path, int8_file: Path) -> dict:
    import numpy as np

    from edgecast.exporter.micro.checks import check_int8, choose, public
    from edgecast.exporter.parity import reference_forecast
    from edgecast.trainer.bundle import read_bundle
    from edgecast_runtime.contract import BUILTIN_TFLITE_FILE

    loaded = read_bundle(bundle)
    windows = loaded.windows()
    x, y = windows["test_x"].astype(np.float32), windows["test_y"]
    reference = reference_forecast(loaded.load_model(), loaded.spec, x)
    check = check_int8(int8_file, x, y, reference)
    chosen, reason = choose({BUILTIN_TFLITE_FILE: {"passed": True}, "model.int8.tflite": check}, None)
    return {**public(check), "float_first_forecast": reference[0].tolist(), "first_forecast": check["first_forecast"],
            "one_value_windows": int(round(check["flat_share"] * len(x))),
            "fewer_distinct_windows": int(round(check["fewer_distinct_share"] * len(x))),
            "gate_chooses": chosen, "gate_reason": reason}


def lead_cells(values: list[float], form: str) -> str:
    return " / ".join(form.format(value) for value in values)


def markdown(payload: dict) -> str:
    before, after = payload["before"], payload["after"]
    n = before["windows"]
    rows = [
        ("test windows whose six leads are one value", f"{before['one_value_windows']} of {n}",
         f"{after['one_value_windows']} of {n}"),
        ("windows with fewer than 6 distinct values (float on the int8 step: "
         f"{before['reference_fewer_distinct_share']:.1%})", f"{before['fewer_distinct_share']:.1%}",
         f"{after['fewer_distinct_share']:.1%}"),
        ("mean distinct values per window (float on the int8 step: "
         f"{before['reference_mean_distinct']:.2f})", f"{before['mean_distinct']:.2f}", f"{after['mean_distinct']:.2f}"),
        ("test RMSE per lead, float", lead_cells(before["float_rmse_per_lead"], "{:.2f}"),
         lead_cells(after["float_rmse_per_lead"], "{:.2f}")),
        ("test RMSE per lead, int8 in TFLM", lead_cells(before["rmse_per_lead"], "{:.2f}"),
         lead_cells(after["rmse_per_lead"], "{:.2f}")),
        ("RMSE change per lead (pooled)", lead_cells(before["rmse_change_pct_per_lead"], "{:+.2f}%")
         + f" ({before['rmse_change_pct']:+.2f}%)", lead_cells(after["rmse_change_pct_per_lead"], "{:+.2f}%")
         + f" ({after['rmse_change_pct']:+.2f}%)"),
        ("mean abs int8 - float per lead", lead_cells(before["mean_abs_vs_float_per_lead"], "{:.2f}"),
         lead_cells(after["mean_abs_vs_float_per_lead"], "{:.2f}")),
        ("max abs int8 - float per lead", lead_cells(before["max_abs_vs_float_per_lead"], "{:.1f}"),
         lead_cells(after["max_abs_vs_float_per_lead"], "{:.1f}")),
        (f"max abs TFLM - LiteRT per lead (allowed {after['litert_max_abs']:.2f} = 3 output steps)",
         lead_cells(before["max_abs_vs_litert_per_lead"], "{:.2f}"), lead_cells(after["max_abs_vs_litert_per_lead"], "{:.2f}")),
        ("main.cc's expected line (first test window)", " ".join(f"{v:.4f}" for v in before["first_forecast"]),
         " ".join(f"{v:.4f}" for v in after["first_forecast"])),
        ("the build's choice", f"{before['gate_chooses']}: {before['gate_reason']}",
         f"{after['gate_chooses']}: {after['gate_reason']}"),
    ]
    float_line = " ".join(f"{v:.2f}" for v in after["float_first_forecast"])
    lines = [
        "# The microcontroller's int8 file: flat forecasts (issue 27 case 7), before and after",
        "",
        f"Written by `scripts/micro_collapse_results.py` on {payload['written']}: {payload['model']}. "
        f"Output step of the int8 file: {before['output_step']:.3f} (before), {after['output_step']:.3f} (after) µg/m³. "
        f"The float model's forecast for the first test window: {float_line}.",
        "",
        "| figure | before (MUL by the step scale) | after (MatMul by its diagonal) |",
        "| --- | --- | --- |",
        *[f"| {what} | {old} | {new} |" for what, old, new in rows],
        "",
        "Cause: in the int8 file the network's output (the change from the last reading divided by the per-lead "
        "step scale, range about 4) carried the quantization scale of the raw change after the MUL (about 0.83 per "
        "step), so most changes rounded to zero and the forecast was the last reading at every lead; one step of it "
        "was 0.83 x the step scale (17 to 40 µg/m³), which is also how far TFLM and LiteRT could differ. The fused "
        "graph now multiplies by diag(step scale) (a FULLY_CONNECTED whose input keeps its own scale, 0.017).",
        "",
        "Left: the largest int8 - float differences are at the top of the range (a window ending at 500-660 µg/m³, "
        "or one holding such a peak), where the raw change leaves the range calibrated on 512 training windows "
        "and 16 constant ones and is clipped; on the model above 0.6% of test windows differ from float by more "
        "than 10 µg/m³ at some lead.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "build" / "micro-collapse")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--markdown-only", action="store_true", help="rewrite the .md from the recorded .json")
    args = parser.parse_args()
    if args.markdown_only:
        (ROOT / "results" / "micro_collapse.md").write_text(
            markdown(json.loads((ROOT / "results" / "micro_collapse.json").read_text())))
        return
    csv = args.data_dir / CSV_NAME
    if not csv.is_file():
        raise SystemExit(f"{csv} is absent: the Beijing data live in ../shared/data beside the repo")
    shutil.rmtree(args.work_dir, ignore_errors=True)
    args.work_dir.mkdir(parents=True)
    edgecast("train", str(csv), "--target", "PM2.5", "--horizon", str(HORIZON), "--look-back", "24", "--units", "16",
             "--epochs", str(args.epochs), "--name", "changping-h6", "--models-dir", str(args.work_dir))
    bundle = args.work_dir / "changping-h6"
    edgecast("export", str(bundle), "--target", "mcu")
    old = args.work_dir / "model.int8.before.tflite"
    old_int8_file(bundle, old)
    payload = {
        "written": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "model": f"Changping PM2.5, horizon {HORIZON}, look-back 24, LSTM(16), at most {args.epochs} epochs",
        "before": measure(bundle, old), "after": measure(bundle, bundle / "model.int8.tflite"),
        "micro_json_choice": json.loads((bundle / "micro" / "micro.json").read_text())["reason"],
    }
    out = ROOT / "results"
    (out / "micro_collapse.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / "micro_collapse.md").write_text(markdown(payload))
    print(markdown(payload))


if __name__ == "__main__":
    main()
