"""`edgecast report`: a Markdown model card from a bundle alone (no CSV needed).

It reads what the trainer and export recorded (preprocessing.json, training.json,
metrics.json, manifest.json) and draws the evaluation picture from the held-out
windows kept in the bundle.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from edgecast.exporter.reports import QUANTILE_TOLERANCE_NOTE, held_to_tolerance
from edgecast.trainer.bundle import Bundle, read_bundle, read_json
from edgecast.trainer.forecast import predict_raw
from edgecast.trainer.reports import Metrics
from edgecast.trainer.settings import SHOWN_METHODS as METHODS
from edgecast_runtime.contract import MANIFEST_NAME, REPORT_FILE, REPORT_PLOT_FILE
from edgecast_runtime.durable import atomic_write

from .escaping import escape
from .plots import (
    LABELS,
    STRETCH_STEPS,
    DistributionPanels,
    Stretch,
    distribution_panels,
    draw_evaluation,
    fan_at_peak,
    first_unbroken_start,
    forecast_stretch,
)

if TYPE_CHECKING:
    import numpy as np

    from edgecast_runtime.spec import Spec

STRETCH_DAYS = 7
def write_report(bundle_dir: Path, out: Path | None = None) -> Path:
    bundle = read_bundle(bundle_dir)
    out = Path(out) if out is not None else bundle.path / REPORT_FILE
    plot = out.with_suffix(".png") if out.name != REPORT_FILE else bundle.path / REPORT_PLOT_FILE
    windows = bundle.windows()
    predicted = predict_raw(bundle.load_model(), bundle.spec, windows["test_x"]) if "test_end" in windows else None
    distribution = _distribution(bundle, windows, predicted)
    draw_evaluation(plot, Metrics.from_dict(bundle.metrics), _stretch(bundle, windows, predicted), bundle.spec.target,
                    f"{bundle.name}: test split", distribution=distribution)
    manifest_path = bundle.path / MANIFEST_NAME
    manifest = read_json(manifest_path) if manifest_path.is_file() else None
    text = "\n".join(_sections(bundle, manifest, _relative(plot, out.parent), _pictured(distribution)))
    atomic_write(out, text.encode())
    return out


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(path.resolve().relative_to(folder.resolve()))
    except ValueError:
        return str(path.resolve())


def _stretch(bundle: Bundle, windows: dict, predicted: np.ndarray | None) -> Stretch | None:
    """The first unbroken week (or 168 steps) of the test split, from the windows kept in the
    bundle (`predicted`: the model's forecasts of them; None for bundles from before the row
    index was kept)."""
    if predicted is None:
        return None
    interval = bundle.spec.interval_seconds
    length = int(STRETCH_DAYS * 86400 // interval) if interval else STRETCH_STEPS
    start = first_unbroken_start(windows["test_end"], length)
    return forecast_stretch(windows["test_end"], windows["test_y"], predicted, start, length, _row_clock(bundle))


def _distribution(bundle: Bundle, windows: dict, predicted: np.ndarray | None) -> DistributionPanels | None:
    """A schema-4 model's fan at its highest test episode (its calibration's quantiles of the
    held-out windows, which parity holds to the exported outputs) and the reliability bins
    metrics.json keeps."""
    from edgecast.trainer.intervals import quantiles, read_calibration

    if bundle.spec.probabilistic is None:
        return None
    calibration, fan = read_calibration(bundle.path), None
    if predicted is not None and calibration is not None and bundle.spec.probabilistic.quantiles:
        fan = fan_at_peak(windows["test_end"], windows["test_y"], predicted,
                          quantiles(calibration, predicted, bundle.spec.target_min), windows["test_x"][:, :, 0],
                          bundle.spec.probabilistic.quantiles, _row_clock(bundle))
    return distribution_panels(bundle.metrics.get("intervals"), fan)


def _row_clock(bundle: Bundle) -> Callable[[int], pd.Timestamp | int]:
    split, interval = bundle.training["split"], bundle.spec.interval_seconds
    if not interval:
        return lambda row: row
    first_row, first_time = split["first_test_row"], pd.Timestamp(split["first_test_time"])
    return lambda row: first_time + pd.Timedelta(seconds=interval * (row - first_row))


def _pictured(distribution: DistributionPanels | None) -> str:
    """What the picture shows besides the forecast panels, for its alt text."""
    if distribution is None:
        return ""
    shown = ["interval fan"] * (distribution.fan is not None) + \
        ["reliability of the alert probabilities"] * bool(distribution.reliability)
    return "".join(f", {what}" for what in shown)


def _sections(bundle: Bundle, manifest: dict | None, plot: str, pictured: str = "") -> list[str]:
    spec, training, metrics = bundle.spec, bundle.training, bundle.metrics
    return [
        f"# Model card: {escape(bundle.name)}",
        "",
        f"Forecasts **{escape(spec.target)}** {spec.horizon} step(s) ahead from the last {spec.look_back} "
        f"readings (interval {_interval(spec)}). Created {training['created']}.",
        "",
        *_data_section(training),
        *_features_section(spec),
        *_split_section(training),
        *_settings_section(training, spec),
        *_metrics_section(metrics),
        *_intervals_section(metrics),
        *_parity_section(manifest),
        *_artifacts_section(bundle.path),
        "## Plots",
        "",
        f"![forecast against actual and error by horizon step{pictured}]({plot})",
        "",
    ]


def _interval(spec: Spec) -> str:
    seconds = spec.interval_seconds
    return f"{seconds:g} s" if seconds else "unknown (no timestamps)"


def _data_section(training: dict) -> list[str]:
    data = training["data"]
    return [
        "## Data",
        "",
        f"- source: {escape(data['source'])}",
        f"- sha256: `{data['sha256']}`",
        f"- rows read {data['rows_read']}, on the regular grid {data['rows_regular']}; "
        f"{data['values_interpolated']} values filled, {data['values_missing']} left missing (long gaps)",
        "",
    ]


def _features_section(spec: Spec) -> list[str]:
    lines = ["## Features (the raw inputs a hub sends, in this order)", "", "| # | feature | kind | raw input | model columns |",
             "| --- | --- | --- | --- | --- |"]
    for index, encoding in enumerate(spec.feature_encodings):
        raw = encoding.raw if encoding.raw is not None else "the reading in its own units"
        lines.append(f"| {index} | {escape(encoding.feature)} | {encoding.kind} | {escape(raw)} "
                     f"| {escape(', '.join(encoding.columns))} |")
    formulation = spec.formulation.kind
    return lines + ["", f"Target formulation: `{formulation}`; schema version {spec.schema_version}.", ""]


def _split_section(training: dict) -> list[str]:
    split = training["split"]
    windows = split["windows"]
    return [
        "## Split (chronological, by each window's last target)",
        "",
        f"- fractions train/validation/test: {'/'.join(f'{f:g}' for f in split['fractions'])}",
        f"- validation from {split['first_val_time']}, test from {split['first_test_time']}",
        f"- windows: train {windows['train']}, validation {windows['val']}, test {windows['test']}",
        "",
    ]


def _settings_section(training: dict, spec: Spec) -> list[str]:
    config, history = training["config"], training["history"]
    shown = ", ".join(f"{key} {value}" for key, value in config.items() if key not in ("split", "target_units"))
    return [
        "## Training settings",
        "",
        f"- {shown}",
        f"- {history['epochs_run']} epochs run, best epoch {history['best_epoch']} "
        f"(validation loss {history['best_val_loss']:.5f}), {training['train_seconds']:.1f} s",
        "",
    ]


def _metrics_section(metrics: dict) -> list[str]:
    methods = [m for m in METHODS if m in metrics]
    hours = metrics.get("step_hours")
    header = ["step", "lead"] + [f"{LABELS[m]} {measure}" for m in methods for measure in ("RMSE", "MAE")]
    lines = [
        f"## Metrics against baselines (test split, {metrics['windows']} windows, {escape(metrics['units'])})",
        "",
        "Metrics: RMSE (root mean squared error) and MAE (mean absolute error) per horizon step, for "
        + ", ".join(LABELS[m] for m in methods) + "."
        + ("" if "seasonal_persistence" in metrics else
           " Seasonal persistence needs a sampling interval that divides a day; this data has none."),
        "",
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
    ]
    for i, step in enumerate(metrics["horizon_steps"]):
        lead = f"{hours[i]:g} h" if hours else f"{step} step{'s' if step > 1 else ''}"
        cells = [f"+{step}", lead] + [f"{metrics[m][measure][i]:.3f}" for m in methods for measure in ("rmse", "mae")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _intervals_section(metrics: dict) -> list[str]:
    """A schema-4 model's interval and alert scores per step (metrics.json `intervals`),
    beside persistence's and ridge's conformalized the same way (`interval_baselines`):
    the tables `edgecast evaluate` prints (edgecast/tables.py), in Markdown."""
    from .tables import CRPS_NOTE, alert_grids, interval_grid

    found = metrics.get("intervals")
    if not found:
        return []
    baselines, steps, lines = metrics.get("interval_baselines", {}), metrics["horizon_steps"], []
    grid = interval_grid(found, baselines, steps)
    if grid is not None:
        what = f"{found['interval']['coverage']:.0%} interval" if "interval" in found else "CRPS"
        lines += [f"## {what} (test split, conformalized on {found['calibration_windows']} validation windows)", "",
                  *(["Interval score: the width plus 2/α times each miss (Winkler); lower is better."]
                    if "interval" in found else []),
                  CRPS_NOTE, "", *_markdown_table(*grid)]
    for name, alert, header, rows in alert_grids(found, baselines, steps):
        lines += [f"## P({escape(name)}) (test split; skill against climatology {alert['climatology']:g}, "
                  f"alert raised at P ≥ {alert['alert_level']:g})", "", *_markdown_table(header, rows)]
    return lines


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |",
            *["| " + " | ".join(row) + " |" for row in rows], ""]


def _parity_section(manifest: dict | None) -> list[str]:
    if manifest is None:
        return ["## Parity", "", "Not exported yet: run `edgecast export` for ONNX/TFLite parity figures.", ""]
    parity = manifest["parity"]
    carried = any(not held_to_tolerance(check["artifact"]) for check in parity["checks"])
    lines = [
        "## Parity",
        "",
        f"Against {parity['reference']}: **{'passed' if parity['passed'] else 'FAILED'}** "
        f"(tolerance {parity['tolerance_abs']:g} {escape(parity['units'])})"
        + (f"; {escape(QUANTILE_TOLERANCE_NOTE)}." if carried else "."),
        "",
        "| artifact | windows | n | batch | max abs error | max rel error |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for check in parity["checks"]:
        lines.append(
            f"| {check['artifact']} | {check['windows']} | {check['n']} | {check['batch']} "
            f"| {check['max_abs']:.2e} | {check['max_rel']:.2e} |"
        )
    return lines + [""]


def _artifacts_section(folder: Path) -> list[str]:
    lines = ["## Artifact sizes", "", "| file | bytes |", "| --- | --- |"]
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        if path.name not in (REPORT_FILE, REPORT_PLOT_FILE):
            lines.append(f"| {escape(path.name)} | {path.stat().st_size} |")
    return lines + [""]

