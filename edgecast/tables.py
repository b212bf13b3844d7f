"""The tables `edgecast` prints: metrics against baselines, parity, accuracy, backtests, forecasts.

They are drawn from the typed results of the Python API (edgecast/api.py). When stdout
is not a terminal (a pipe, a file, CI logs) no width is imposed: a table is as wide as
its cells, so no number loses digits to an ellipsis.
"""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from edgecast.exporter.reports import (
    QUANTILE_TOLERANCE_NOTE,
    AccuracyReport,
    ArtifactAccuracy,
    ParityReport,
    held_to_tolerance,
)
from edgecast.trainer.reports import Backtest, Metrics
from edgecast.trainer.settings import SHOWN_METHODS as METHODS

# Wide enough for any table edgecast draws; rich sizes a table to its content within it.
UNBOUNDED_WIDTH = 100_000
BACKTEST_MIDDLE_STEP = 6  # besides the first and the last step, the backtest shows +6 (or the last)


def console(stderr: bool = False) -> Console:
    """A console that wraps and cuts at the terminal's width, or nowhere when not a terminal."""
    printer = Console(stderr=stderr, highlight=False)
    if not printer.is_terminal:
        printer.width = UNBOUNDED_WIDTH
    return printer


def metrics_table(metrics: Metrics) -> Table:
    table = Table(title=f"{metrics.split} split ({metrics.windows} windows), {metrics.units}")
    table.add_column("step")
    names = [name for name in METHODS if name in metrics.methods]
    for name in names:
        table.add_column(f"{name} RMSE", justify="right")
        table.add_column(f"{name} MAE", justify="right")
    for i, step in enumerate(metrics.horizon_steps):
        cells = [f"+{step}"]
        for name in names:
            scores = metrics.methods[name]
            cells += [f"{scores.rmse[i]:.3f}", f"{scores.mae[i]:.3f}"]
        table.add_row(*cells)
    return table


CRPS_NOTE = ("CRPS: of the calibrated distribution the probabilities are read from (100 quantile levels, not "
             "only the model's own), in the target's units; lower is better.")


def interval_grid(model: dict, baselines: dict, steps: list[int]) -> tuple[list[str], list[list[str]]] | None:
    """A schema-4 model's central interval and CRPS per step (metrics.json `intervals`),
    beside the baselines' interval scores ({method: interval_metrics}, conformalized the
    same way): header and rows, None without an interval. `edgecast evaluate` draws them
    here, the model card (edgecast/report.py) in Markdown. Without an interval (quantile
    levels or alerts alone), the CRPS alone."""
    found = model.get("interval")
    if found is None:
        if "crps_by_lead" not in model:
            return None
        return ["step", "CRPS"], [[f"+{step}", _number(model["crps_by_lead"][step - 1])] for step in steps]
    others = [name for name in ("persistence", "ridge") if name in baselines]
    above = [key for key in found if key.startswith("coverage_above_")]
    crps = ["CRPS"] if "crps_by_lead" in model else []
    header = ["step", "coverage", *[key.removesuffix("_by_lead").replace("_", " ") for key in above], "width",
              "interval score", *[f"{name} interval score" for name in others], *crps]
    rows = []
    for step in steps:
        lead = step - 1
        cells = [found["coverage_by_lead"][lead], *[found[key][lead] for key in above], found["mean_width_by_lead"][lead],
                 found["interval_score_by_lead"][lead],
                 *[baselines[name]["interval"]["interval_score_by_lead"][lead] for name in others],
                 *([model["crps_by_lead"][lead]] if crps else [])]
        rows.append([f"+{step}", *[_number(cell) for cell in cells]])
    return header, rows


def alert_grids(model: dict, baselines: dict, steps: list[int]) -> list[tuple[str, dict, list[str], list[list[str]]]]:
    """Per alert (name, its scores, header, rows): per step the probability's Brier score and
    skill against climatology beside the baselines', and the alert's precision and recall."""
    others = [name for name in ("persistence", "ridge") if name in baselines]
    grids = []
    for name, found in model.get("alerts", {}).items():
        header = ["step", "Brier", "Brier skill", *[f"{other} skill" for other in others], "precision", "recall"]
        rows = []
        for step in steps:
            lead = step - 1
            cells = [found["brier_by_lead"][lead], found["brier_skill_by_lead"][lead],
                     *[baselines[other]["alerts"][name]["brier_skill_by_lead"][lead] for other in others],
                     found["precision_by_lead"][lead], found["recall_by_lead"][lead]]
            rows.append([f"+{step}", *[_number(cell) for cell in cells]])
        grids.append((name, found, header, rows))
    return grids


def probabilistic_tables(intervals: dict, steps: list[int]) -> list[Table]:
    """`edgecast evaluate`'s interval and alert tables ({"model": ..., baselines...})."""
    model, tables = intervals["model"], []
    grid = interval_grid(model, intervals, steps)
    if grid is not None:
        what = f"{model['interval']['coverage']:.0%} interval" if "interval" in model else "CRPS"
        tables.append(_table(f"{what} on the test split ({model['test_windows']} windows), conformalized on "
                             f"{model['calibration_windows']} validation windows", *grid, caption=CRPS_NOTE))
    for name, found, header, rows in alert_grids(model, intervals, steps):
        tables.append(_table(f"P({name}) on the test split: climatology {found['climatology']:g}, "
                             f"alert raised at P >= {found['alert_level']:g}", header, rows))
    return tables


def _table(title: str, header: list[str], rows: list[list[str]], caption: str | None = None) -> Table:
    # At least as wide as its title: rich wraps a title to a narrow table's width (the
    # CRPS-only table has two columns), which read as a column of broken words.
    table = Table(title=title, caption=caption, min_width=min(len(title), 120))
    for column in header:
        table.add_column(column, justify="left" if column == "step" else "right")
    for row in rows:
        table.add_row(*row)
    return table


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def parity_table(report: ParityReport) -> Table:
    verdict = "passed" if report.passed else "FAILED"
    carried = any(not held_to_tolerance(check.artifact) for check in report.checks)
    table = Table(title=f"parity against {report.reference}: {verdict} (tolerance {report.tolerance_abs:g} {report.units})",
                  caption=QUANTILE_TOLERANCE_NOTE if carried else None)
    for column in ("artifact", "windows", "n", "batch", "max abs error", "max rel error", "ok"):
        table.add_column(column, justify="right" if column not in ("artifact", "windows") else "left")
    for check in report.checks:
        table.add_row(
            check.artifact, check.windows, str(check.n), str(check.batch),
            f"{check.max_abs:.3e}", f"{check.max_rel:.3e}", "yes" if check.passed else "NO",
        )
    return table


def accuracy_table(report: AccuracyReport) -> Table:
    """Size and test-split error of every artifact next to the float (Keras) model."""
    reference = report.float_model
    table = Table(title=(
        f"{report.split} split ({report.windows} windows), {report.units}; "
        f"float model (Keras): RMSE {reference['rmse']:.3f}, MAE {reference['mae']:.3f}"
    ))
    # A schema-4 model's files: how far their quantiles and probabilities moved from the float model's.
    quantiles = any(row.quantiles_max_abs_deviation is not None for row in report.artifacts.values())
    probabilities = any(row.exceedance_max_abs_deviation is not None for row in report.artifacts.values())
    columns = ["artifact", "bytes", "of float32", "RMSE", "MAE", "RMSE change", "max abs dev from float",
               *(["quantiles max dev"] if quantiles else []), *(["probabilities max dev"] if probabilities else [])]
    for column in columns:
        table.add_column(column, justify="left" if column == "artifact" else "right", no_wrap=column == "artifact")
    for name, row in report.artifacts.items():
        ratio = f"{100 * row.size_vs_float32:.1f}%" if row.size_vs_float32 else "-"
        extra = [*([_deviation(row.quantiles_max_abs_deviation)] if quantiles else []),
                 *([_deviation(row.exceedance_max_abs_deviation)] if probabilities else [])]
        table.add_row(
            name, str(row.bytes), ratio, f"{row.rmse:.3f}", f"{row.mae:.3f}",
            f"{row.rmse_change_pct:+.2f}%", f"{row.max_abs_deviation:.3g}", *extra,
        )
    return table


def _deviation(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def op_lines(report: AccuracyReport) -> list[str]:
    """One line per artifact: its op counts, and what computes in float or in integer."""
    return [f"{name} ops: {_op_counts(row.ops)}{_float_ops_note(row)}" for name, row in report.artifacts.items()]


def _op_counts(ops: dict[str, int]) -> str:
    return ", ".join(f"{op}×{count}" for op, count in sorted(ops.items()))


def _float_ops_note(row: ArtifactAccuracy) -> str:
    if row.float_ops is not None:
        return f" (computing in float: {_op_counts(row.float_ops) or 'none'})"
    if row.quantized_ops:
        return f" (integer: {_op_counts(row.quantized_ops)})"
    return ""


def backtest_table(backtest: Backtest) -> Table:
    """RMSE per fold and method at the first, a middle and the last horizon step."""
    first = backtest.results[0].metrics
    count = len(first.horizon_steps)
    steps = sorted({0, min(BACKTEST_MIDDLE_STEP - 1, count - 1), count - 1})
    methods = [m for m in METHODS if m in first.methods]
    table = Table(title=f"backtest: {backtest.folds} rolling origins in the test split, RMSE ({first.units}); "
                        f"ridge {backtest.ridge}")
    for column in ("origin row", "windows", "method"):
        table.add_column(column)
    for i in steps:
        table.add_column(f"+{first.horizon_steps[i]}", justify="right")
    rows = [(str(fold.first_target_row), str(fold.metrics.windows), fold.metrics.methods) for fold in backtest.results]
    rows.append(("mean", "", backtest.mean))
    for origin, windows, scores in rows:
        for k, method in enumerate(methods):
            head = [origin, windows] if k == 0 else ["", ""]
            table.add_row(*head, method, *(f"{scores[method].rmse[i]:.3f}" for i in steps),
                          end_section=k == len(methods) - 1)
    return table


def forecasts_table(window: list[float], forecasts: dict[str, float], reported: float) -> Table:
    """One forecast of the same window per backend, beside what the tutorial reported."""
    table = Table(title=f"forecast for the window {' '.join(f'{v:g}' for v in window)} (tutorial reported about {reported})")
    table.add_column("backend")
    table.add_column("forecast", justify="right")
    for backend, value in forecasts.items():
        table.add_row(backend, f"{value:.6f}")
    return table


def micro_table(micro: dict) -> Table:
    """The microcontroller build: chosen file, its check in TFLM, arena, flash, time per forecast."""
    check = micro.get("now") or micro["verification"][micro["model_file"]]
    agreement = (f"max |TFLM-LiteRT| per lead {' '.join(f'{v:.3g}' for v in check['max_abs_vs_litert_per_lead'])}"
                 f" (allowed {check['litert_max_abs']:.3g})"
                 if "max_abs_vs_litert_per_lead" in check else f"max |TFLM-Keras| {check['max_abs_vs_keras']:.2e}" + "".join(
                     f", {label} {check[key]:.2e}" for key, label in (("quantiles_max_abs_vs_keras", "quantiles"),
                                                                     ("exceedance_max_abs_vs_keras", "probabilities"))
                     if key in check))
    arena, flash, timing = micro["arena"], micro["flash"], micro["timing"]
    table = Table(title=f"microcontroller build ({micro['tflm_release']}): {micro['reason']}")
    for column in ("file", "TFLM check", "RMSE change per lead", "arena (min)", "flash est. (model + code)", "µs TFLM / LiteRT"):
        table.add_column(column, justify="left" if column in ("file", "TFLM check") else "right")
    table.add_row(
        micro["model_file"], f"{agreement}: {'passed' if check['passed'] else 'FAILED'}",
        " ".join(f"{v:+.2f}%" for v in check.get("rmse_change_pct_per_lead", [check["rmse_change_pct"]])),
        f"{arena['bytes']} ({arena['min_bytes']})",
        f"{flash['total_estimate_bytes']} ({flash['model_bytes']} + {flash['interpreter_estimate_bytes']})",
        f"{timing['tflm_us']:.1f} / {timing['litert_us']:.1f}",
    )
    return table
