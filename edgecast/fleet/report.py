"""`edgecast fleet report`: one table for a whole fleet folder (fleet.md, fleet.json) and
a picture of each station's skill over persistence at chosen leads (fleet-skill.png)."""
from __future__ import annotations

import io
import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgecast.base import write_json_atomic
from edgecast.escaping import escape
from edgecast.exporter.reports import held_to_tolerance
from edgecast_runtime.contract import MANIFEST_NAME, METRICS_FILE, TRAINING_FILE
from edgecast_runtime.durable import atomic_write

from .run import RUN_RECORD, FleetError
from .settings import DEFAULT_LEADS
from .stations import STATION_RECORD

METHODS = ("model", "persistence", "ridge")
# Shown beside them when there is something to show: the same settings without
# neighbours (a fleet given with `without`), and the model with every neighbour missing.
OWN_HISTORY, NEIGHBOURS_MISSING = "own_history", "model_neighbours_missing"
PLOT_FILE = "fleet-skill.png"
DPI = 100


@dataclass
class FleetReport:
    markdown: Path
    json: Path
    plot: Path | None
    stations: list[dict]


def report(fleet_dir: str | Path, leads: Sequence[int] = DEFAULT_LEADS, without: str | Path | None = None) -> FleetReport:
    """Read every station bundle (and the last run's failures) and write the fleet report.

    `without`: a fleet trained with the same settings but no neighbours; its model's RMSE
    is shown per station as "own history"."""
    fleet_dir = Path(fleet_dir)
    leads = _check_leads(leads)
    if not fleet_dir.is_dir():
        raise FleetError(f"{fleet_dir}: no such fleet folder")
    last_run = _last_run(fleet_dir)
    names = sorted({p.parent.name for p in fleet_dir.glob(f"*/{METRICS_FILE}") if not p.parent.name.startswith(".")}
                   | set(last_run))
    if not names:
        raise FleetError(f"{fleet_dir}: no station bundle and no {RUN_RECORD}; run `edgecast fleet train` first")
    if without is not None and not Path(without).is_dir():
        raise FleetError(f"{without}: no such fleet folder (without)", settings=("without",))
    rows = [_station_row(fleet_dir / name, name, leads, last_run.get(name, {})) for name in names]
    _check_leads_reached(leads, rows)
    for row in rows:
        _add_comparisons(row, fleet_dir / row["station"], Path(without) / row["station"] if without else None, leads)
    _flag_median_and_worst(rows)
    plot = _draw_skill(fleet_dir / PLOT_FILE, rows, leads)
    summary = {"fleet": str(fleet_dir), "leads": leads, "stations": rows, "plot": plot.name if plot else None,
               "median_station": _flagged(rows, "median"), "worst_station": _flagged(rows, "worst")}
    write_json_atomic(fleet_dir / "fleet.json", summary)
    atomic_write(fleet_dir / "fleet.md", _markdown(summary).encode())
    return FleetReport(fleet_dir / "fleet.md", fleet_dir / "fleet.json", plot, rows)


def _check_leads(leads: Iterable[int | str]) -> list[int]:
    leads = sorted({int(lead) for lead in leads})
    if not leads or leads[0] < 1:
        raise FleetError(f"leads must be steps of 1 or more, got {','.join(map(str, leads)) or 'none'}", settings=("leads",))
    return leads


def _last_run(fleet_dir: Path) -> dict[str, dict]:
    try:
        record = json.loads((fleet_dir / RUN_RECORD).read_text())
        return {s["station"]: s for s in record["stations"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _check_leads_reached(leads: list[int], rows: list[dict]) -> None:
    """A lead no station forecasts would give a report of empty columns and no median."""
    horizons = [row["horizon"] for row in rows if row.get("horizon")]
    beyond = [lead for lead in leads if horizons and lead > max(horizons)]
    if beyond:
        raise FleetError(f"leads {','.join(map(str, beyond))} lie beyond every station's horizon (the longest is "
                         f"{max(horizons)} steps)", settings=("leads",))


def _station_row(bundle: Path, name: str, leads: list[int], run: dict) -> dict:
    row = {"station": name, "status": run.get("status", "bundle"), "error": run.get("error"), "flags": []}
    metrics = _read(bundle / METRICS_FILE)
    if metrics is None:
        return row
    steps = metrics.get("horizon_steps", [])
    row["horizon"] = max(steps, default=None)
    row["units"] = metrics.get("units")
    row["rmse"] = {method: {str(lead): _at(metrics.get(method, {}).get("rmse"), steps, lead) for lead in leads}
                   for method in METHODS}
    row["ratio_to_persistence"] = {
        str(lead): _ratio(row["rmse"]["model"][str(lead)], row["rmse"]["persistence"][str(lead)]) for lead in leads
    }
    training = _read(bundle / TRAINING_FILE) or {}
    row["train_seconds"] = training.get("train_seconds")
    row["data"] = _data_summary(training)
    record = _read(bundle / STATION_RECORD) or {}
    row["data_sha256"] = record.get("data", {}).get("sha256") or training.get("data", {}).get("sha256")
    manifest = _read(bundle / MANIFEST_NAME)
    if manifest:
        parity = manifest.get("parity", {})
        row["parity"] = {"passed": parity.get("passed"), "tolerance_abs": parity.get("tolerance_abs"),
                         "max_abs": max((c["max_abs"] for c in parity.get("checks", [])
                                         if held_to_tolerance(c["artifact"])), default=None)}
        row["artifact_bytes"] = {artifact: entry.get("bytes") for artifact, entry in manifest.get("artifacts", {}).items()
                                 if entry.get("kind") in ("onnx", "tflite")}
    return row


def _data_summary(training: dict) -> dict:
    """What the station was trained and tested on: the test period, the interval (or none
    detected: trained in file order), gaps, invalid values and sentinels, its neighbours."""
    data = training.get("data") if isinstance(training.get("data"), dict) else {}
    split = training.get("split") if isinstance(training.get("split"), dict) else {}
    neighbours = training.get("neighbours") if isinstance(training.get("neighbours"), dict) else {}
    interval, rows = data.get("interval_seconds"), data.get("rows_regular")
    first_row, first_time = split.get("first_test_row"), split.get("first_test_time")
    test_period = None
    if interval and first_time and isinstance(rows, int) and isinstance(first_row, int):
        import pandas as pd

        last = pd.Timestamp(first_time) + pd.Timedelta(seconds=interval * (rows - 1 - first_row))
        test_period = [str(first_time), str(last)]
    elif isinstance(rows, int) and isinstance(first_row, int):
        test_period = [f"row {first_row}", f"row {rows - 1}"]
    invalid = data.get("values_invalid") if isinstance(data.get("values_invalid"), dict) else {}
    return {
        "test_period": test_period,
        "interval_seconds": interval,
        "rows_read": data.get("rows_read"),
        "rows_regular": rows,
        "values_interpolated": data.get("values_interpolated"),
        "values_missing": data.get("values_missing"),
        "values_invalid": {name: sum(counts.values()) for name, counts in invalid.items() if isinstance(counts, dict)},
        "neighbours": list(neighbours.get("stations", [])),
        "neighbour_correlations": {s: neighbours.get("correlations", {}).get(s) for s in neighbours.get("stations", [])},
        "neighbours_left_out": dict(neighbours.get("dropped", {})),
    }


def _add_comparisons(row: dict, bundle: Path, own_bundle: Path | None, leads: list[int]) -> None:
    metrics = _read(bundle / METRICS_FILE) or {}
    own = _read(own_bundle / METRICS_FILE) if own_bundle is not None else None
    for method, source, key in ((NEIGHBOURS_MISSING, metrics, NEIGHBOURS_MISSING), (OWN_HISTORY, own, "model")):
        if source and key in source and "rmse" in row:
            steps = source.get("horizon_steps", [])
            row["rmse"][method] = {str(lead): _at(source[key].get("rmse"), steps, lead) for lead in leads}


def _read(path: Path) -> dict | None:
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return payload if isinstance(payload, dict) else None


def _at(values: Sequence[float] | None, steps: list[int], lead: int) -> float | None:
    return float(values[steps.index(lead)]) if values and lead in steps else None


def _ratio(model: float | None, persistence: float | None) -> float | None:
    return round(model / persistence, 4) if model is not None and persistence else None


def _score(row: dict) -> float | None:
    """The mean ratio to persistence over the leads the station forecasts (lower is better)."""
    ratios = [r for r in row.get("ratio_to_persistence", {}).values() if r is not None]
    return statistics.fmean(ratios) if ratios else None


def _flag_median_and_worst(rows: list[dict]) -> None:
    scored = sorted((r for r in rows if _score(r) is not None), key=_score)
    for row in rows:
        row["mean_ratio"] = round(_score(row), 4) if _score(row) is not None else None
    if scored:
        scored[(len(scored) - 1) // 2]["flags"].append("median")
        scored[-1]["flags"].append("worst")


def _flagged(rows: list[dict], flag: str) -> str | None:
    return next((r["station"] for r in rows if flag in r["flags"]), None)


def _draw_skill(path: Path, rows: list[dict], leads: list[int]) -> Path | None:
    """Grouped bars: skill (1 - model/persistence RMSE, %) per station, one bar per lead."""
    import numpy as np
    from matplotlib.figure import Figure

    scored = [r for r in rows if r.get("mean_ratio") is not None]
    if not scored:
        return None
    width = 0.8 / len(leads)
    figure = Figure(figsize=(max(8, 0.9 * len(scored) + 3), 5), dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    positions = np.arange(len(scored))
    for k, lead in enumerate(leads):
        skill = [100 * (1 - r["ratio_to_persistence"][str(lead)]) if r["ratio_to_persistence"][str(lead)] is not None
                 else np.nan for r in scored]
        axes.bar(positions + (k - (len(leads) - 1) / 2) * width, skill, width, label=f"+{lead} steps")
    axes.axhline(0, color="black", linewidth=0.8)
    axes.set_xticks(positions, [r["station"] + "".join(f"\n({f})" for f in r["flags"]) for r in scored],
                    rotation=30, ha="right")
    axes.set_ylabel("skill over persistence, % (1 - RMSE ratio)")
    axes.set_title("Forecast skill per station and lead (test split)")
    axes.legend()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    atomic_write(path, buffer.getvalue())
    return path


def _markdown(summary: dict) -> str:
    leads, rows = summary["leads"], summary["stations"]
    units = escape(next((r["units"] for r in rows if r.get("units")), "raw target units"))
    lines = [f"# Fleet report: {escape(summary['fleet'])}", "",
             f"{len(rows)} stations; test-split RMSE ({units}) at leads {', '.join(f'+{lead}' for lead in leads)}; "
             "ratio = model RMSE / persistence RMSE (below 1 beats persistence). "
             f"Median station: **{escape(summary['median_station'])}**; worst: **{escape(summary['worst_station'])}** "
             "(by the mean ratio over the leads).", ""]
    shown = list(METHODS)
    for extra, position in ((OWN_HISTORY, 1), (NEIGHBOURS_MISSING, 2)):
        if any(extra in row.get("rmse", {}) for row in rows):
            shown.insert(min(position, len(shown)), extra)
    names = {"model": "model", "persistence": "persistence", "ridge": "ridge", OWN_HISTORY: "own history",
             NEIGHBOURS_MISSING: "neighbours missing"}
    header = ["station", "status"]
    for lead in leads:
        header += [f"{names[m]} +{lead}" for m in shown] + [f"ratio +{lead}"]
    header += ["parity max abs", "artifacts (bytes)", "train s", "flag"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [escape(row["station"]), escape(row["status"] + (f": {row['error']}" if row.get("error") else ""))]
        for lead in leads:
            rmse = row.get("rmse", {})
            cells += [_num(rmse.get(m, {}).get(str(lead))) for m in shown]
            cells.append(_num(row.get("ratio_to_persistence", {}).get(str(lead)), 3))
        parity = row.get("parity")
        cells.append("-" if not parity else f"{parity['max_abs']:.2e} ({'ok' if parity['passed'] else 'FAILED'})")
        cells.append(escape(", ".join(f"{k} {v}" for k, v in row.get("artifact_bytes", {}).items()) or "-"))
        cells.append(_num(row.get("train_seconds"), 1))
        cells.append(", ".join(row["flags"]))
        lines.append("| " + " | ".join(cells) + " |")
    lines += _data_table(rows)
    if summary["plot"]:
        lines += ["", f"![skill per station and lead]({summary['plot']})"]
    return "\n".join(lines) + "\n"


def _data_table(rows: list[dict]) -> list[str]:
    """Per station: test period, interval, data quality, neighbours and units."""
    lines = ["", "## Data per station", "",
             "| station | test period | interval | rows read / on the grid | filled / left missing "
             "| invalid or sentinel | neighbours (training correlation) | units |", "|" + "---|" * 8]
    for row in rows:
        data = row.get("data")
        if not data:
            lines.append(f"| {escape(row['station'])} |" + " - |" * 7)
            continue
        period = " to ".join(data["test_period"]) if data["test_period"] else "-"
        interval = f"{data['interval_seconds']:g} s" if data["interval_seconds"] else "none detected (file order)"
        invalid = ", ".join(f"{name} {count}" for name, count in data["values_invalid"].items()) or "none"
        neighbours = ", ".join(f"{s} ({_num(c)})" for s, c in data["neighbour_correlations"].items()) or "none"
        if data["neighbours_left_out"]:
            neighbours += "; left out: " + ", ".join(f"{s} ({why})" for s, why in data["neighbours_left_out"].items())
        cells = [row["station"], period, interval, f"{data['rows_read']} / {data['rows_regular']}",
                 f"{data['values_interpolated']} / {data['values_missing']}", invalid, neighbours,
                 row.get("units") or "-"]
        lines.append("| " + " | ".join(escape(c) for c in cells) + " |")
    return lines


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
