"""The `edgecast` command: a thin typer layer over trainer/ and export/.

Heavy imports (TensorFlow, tf2onnx) happen inside the commands, so `--help` is quick.
Every EdgecastError reaches the user as one line and exit code 2.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from edgecast.trainer.errors import EdgecastError
from edgecast.trainer.settings import DEFAULTS

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

app = typer.Typer(
    help="Train a Keras LSTM forecaster on a sensor series, export it with its scaler to ONNX and TFLite, prove parity.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

BundleArg = Annotated[Path, typer.Argument(help="Model bundle folder, e.g. models/NAME.")]


def main() -> None:
    # standalone_mode=False: usage errors reach us instead of typer's boxed panel, so
    # they read like every other error, on one line.
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        err.print("edgecast: aborted", markup=False)
        sys.exit(130)
    except EdgecastError as exc:
        err.print(f"edgecast: error: {exc}", markup=False, soft_wrap=True)
        sys.exit(2)
    except OSError as exc:
        err.print(f"edgecast: error: {exc}", markup=False, soft_wrap=True)
        sys.exit(1)
    except Exception as exc:
        if not _is_kind(exc, "UsageError"):
            raise
        if _is_kind(exc, "NoArgsIsHelpError"):  # bare `edgecast`: the help, as before
            err.print(exc.ctx.get_help(), markup=False)
        else:
            command = exc.ctx.command_path if exc.ctx else "edgecast"
            err.print(f"edgecast: error: {exc.format_message()} (see `{command} --help`)",
                      markup=False, soft_wrap=True)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)  # typer.Exit(n) comes back as n


def _is_kind(exc: Exception, name: str) -> bool:
    """By class name: typer bundles its own private copy of click's exceptions."""
    return any(cls.__name__ == name for cls in type(exc).__mro__)


def _split_list(values: list[str]) -> list[str]:
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def _split_fractions(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"'{text}' is not three comma-separated numbers", param_hint="'--split'") from None
    if len(parts) != 3:
        raise typer.BadParameter(f"'{text}' is not three comma-separated numbers", param_hint="'--split'")
    return parts


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="CSV with a timestamp column or year,month,day,hour columns.")],
    target: Annotated[str, typer.Option(help="Column to forecast.")],
    features: Annotated[list[str], typer.Option(help="Extra input columns (repeat, or comma-separated).")] = [],
    time_column: Annotated[Optional[str], typer.Option(help="Timestamp column (default: detected).")] = None,
    clock: Annotated[Optional[str], typer.Option(help="Clock of timestamps without a zone (UTC, +08:00, Asia/Shanghai); recorded for the runtime's calendar features.")] = None,
    look_back: Annotated[int, typer.Option(help="Input steps per window.")] = 24,
    horizon: Annotated[int, typer.Option(help="Steps predicted at once.")] = 1,
    units: Annotated[int, typer.Option(help="LSTM units.")] = DEFAULTS.units,
    layers: Annotated[int, typer.Option(help="Stacked LSTM layers.")] = DEFAULTS.layers,
    dropout: Annotated[float, typer.Option(help="Dropout after each LSTM layer (training only).")] = DEFAULTS.dropout,
    formulation: Annotated[str, typer.Option(help="What the network predicts: change_from_last or level.")] = DEFAULTS.formulation,
    linear_skip: Annotated[bool, typer.Option(help="Add a ridge-initialised linear map of the window to the LSTM's output.")] = DEFAULTS.linear_skip,
    quadratic_skip: Annotated[bool, typer.Option(help="The linear map also reads products of recent readings, changes and means.")] = DEFAULTS.quadratic_skip,
    linear_fit_with_val: Annotated[bool, typer.Option(help="Fit the linear map on training and validation windows (the test split stays unseen).")] = DEFAULTS.linear_fit_with_val,
    target_units: Annotated[Optional[str], typer.Option(help="Units of the target for tables and plots, e.g. µg/m³.")] = None,
    epochs: Annotated[int, typer.Option(help="Most epochs; early stopping may end sooner.")] = DEFAULTS.epochs,
    batch_size: Annotated[int, typer.Option(help="Training batch size.")] = DEFAULTS.batch_size,
    patience: Annotated[int, typer.Option(help="Epochs without validation improvement before stopping.")] = DEFAULTS.patience,
    learning_rate: Annotated[float, typer.Option(help="Adam learning rate.")] = DEFAULTS.learning_rate,
    seed: Annotated[int, typer.Option(help="Same seed, same data, same numbers.")] = 0,
    max_gap: Annotated[int, typer.Option(help="Longest run of missing steps to interpolate.")] = 6,
    split: Annotated[str, typer.Option(help="Train,validation,test fractions (chronological).")] = "0.7,0.15,0.15",
    name: Annotated[Optional[str], typer.Option(help="Bundle name (default: from the CSV file name).")] = None,
    models_dir: Annotated[Path, typer.Option(help="Where bundles live.")] = Path("models"),
) -> None:
    """Train an LSTM forecaster on a CSV and write the bundle models/NAME.

    --features takes numeric columns, compass wind directions (N ... NNW, calm `cv`) and
    the calendar features hour_of_day and day_of_week, derived from the timestamps.
    """
    from edgecast.trainer.data import load_csv
    from edgecast.trainer.pipeline import TrainConfig

    config = TrainConfig(
        look_back=look_back, horizon=horizon, units=units, epochs=epochs, batch_size=batch_size,
        patience=patience, learning_rate=learning_rate, seed=seed, max_gap=max_gap,
        split=_split_fractions(split), layers=layers, dropout=dropout, formulation=formulation,
        linear_skip=linear_skip, quadratic_skip=quadratic_skip, linear_fit_with_val=linear_fit_with_val,
        target_units=target_units,
    )
    series = load_csv(data, target, _split_list(features), time_column, max_gap, clock=clock)
    bundle_name = name or _slug(data.stem)
    _train_and_report(series, config, models_dir / bundle_name)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-") or "model"


def _train_and_report(series, config, out_dir: Path):
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from edgecast.trainer.pipeline import prepare
    from edgecast.trainer.pipeline import train as run_training

    data = prepare(series, config)  # fails on bad settings before TensorFlow loads
    err.print(
        f"training on {series.source}: {len(series.frame)} steps, features {', '.join(series.features)}, "
        f"{series.values_interpolated} values interpolated, {series.values_missing} left missing"
    )
    with Progress(
        TextColumn("epoch {task.completed}/{task.total}"), BarColumn(), TextColumn("{task.description}"),
        TimeElapsedColumn(), console=err, transient=False,
    ) as progress:
        task = progress.add_task("", total=config.epochs)

        def on_epoch(epoch: int, logs: dict) -> None:
            progress.update(task, completed=epoch, description=f"loss {logs.get('loss', 0):.5f}  val {logs.get('val_loss', 0):.5f}")

        result = run_training(series, config, out_dir, on_epoch, data)
    _print_training_summary(result)
    return result


def _print_training_summary(result) -> None:
    history, split = result.training["history"], result.training["split"]
    out.print(
        f"wrote {result.path}: {history['epochs_run']} epochs (best {history['best_epoch']}), "
        f"{result.training['train_seconds']:.1f} s; windows train/val/test "
        f"{split['windows']['train']}/{split['windows']['val']}/{split['windows']['test']}"
    )
    out.print(metrics_table(result.metrics))


def metrics_table(metrics: dict) -> Table:
    table = Table(title=f"test split ({metrics['windows']} windows), {metrics['units']}")
    table.add_column("step")
    names = [name for name in ("model", "persistence", "seasonal_persistence", "ridge") if name in metrics]
    for name in names:
        table.add_column(f"{name} RMSE", justify="right")
        table.add_column(f"{name} MAE", justify="right")
    for i, step in enumerate(metrics["horizon_steps"]):
        cells = [f"+{step}"]
        for name in names:
            cells += [f"{metrics[name]['rmse'][i]:.3f}", f"{metrics[name]['mae'][i]:.3f}"]
        table.add_row(*cells)
    return table


@app.command()
def export(
    bundle: BundleArg,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 17,
    tflite: Annotated[bool, typer.Option(help="Also export TFLite float32 (static batch 1).")] = True,
    quantize: Annotated[list[str], typer.Option(
        help="Also write a quantized artifact (repeat, or comma-separated): onnx-int8, tflite-fp16, "
        "tflite-dynamic-int8, tflite-int8, tflite-int16x8.")] = [],
    builtin_ops: Annotated[bool, typer.Option(
        help="Also write model.builtin.tflite: builtin ops only, LSTM unrolled (no Flex ops, control flow or "
        "variables), for TFLite Micro and minimal interpreters.")] = False,
) -> None:
    """Export ONNX and TFLite with the scaler in the graph; fail unless parity holds."""
    from edgecast.export.errors import ParityError
    from edgecast.export.pipeline import export_bundle
    from edgecast.export.quantize import QuantizationError

    try:
        manifest = export_bundle(
            bundle, opset=opset, tflite=tflite, progress=lambda m: err.print(m, markup=False),
            quantize=_split_list(quantize), builtin_ops=builtin_ops,
        )
    except ParityError as exc:
        out.print(parity_table(exc.report))
        raise
    out.print(parity_table(manifest["parity"]))
    if "quantization" in manifest:
        out.print(accuracy_table(manifest["quantization"]["accuracy"]))
    for name, entry in manifest["artifacts"].items():
        out.print(f"{bundle / name}  {entry['bytes']} bytes  sha256 {entry['sha256'][:16]}…")
    out.print(f"wrote {bundle / 'manifest.json'}")
    refused = manifest.get("quantization", {}).get("refused", {})
    if refused:
        raise QuantizationError(f"{len(refused)} --quantize mode(s) refused, the other artifacts were written: "
                                + "; ".join(refused.values()))


@app.command()
def verify(
    bundle: BundleArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Recompute parity of the exported artifacts against scaler + Keras + inverse."""
    from edgecast.export.pipeline import verify_bundle

    report = verify_bundle(bundle)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        out.print(parity_table(report))
        out.print(accuracy_table(report["accuracy"]))
        for name, row in report["accuracy"]["artifacts"].items():
            out.print(f"{name} ops: {_op_counts(row['ops'])}{_float_ops_note(row)}", markup=False)
        for problem in report["integrity"]["problems"]:
            err.print(f"integrity: {problem}", markup=False)
    if not report["passed"]:
        raise typer.Exit(1)


def accuracy_table(report: dict) -> Table:
    """Size and test-split error of every artifact next to the float (Keras) model."""
    reference = report["float_model"]
    table = Table(title=(
        f"{report['split']} split ({report['windows']} windows), {report['units']}; "
        f"float model (Keras): RMSE {reference['rmse']:.3f}, MAE {reference['mae']:.3f}"
    ))
    for column in ("artifact", "bytes", "of float32", "RMSE", "MAE", "RMSE change", "max abs dev from float"):
        table.add_column(column, justify="left" if column == "artifact" else "right", no_wrap=column == "artifact")
    for name, row in report["artifacts"].items():
        ratio = f"{100 * row['size_vs_float32']:.1f}%" if row.get("size_vs_float32") else "-"
        table.add_row(
            name, str(row["bytes"]), ratio, f"{row['rmse']:.3f}", f"{row['mae']:.3f}",
            f"{row['rmse_change_pct']:+.2f}%", f"{row['max_abs_deviation']:.3g}",
        )
    return table


def _op_counts(ops: dict) -> str:
    return ", ".join(f"{op}×{count}" for op, count in sorted(ops.items()))


def _float_ops_note(row: dict) -> str:
    if "float_ops" in row:
        return f" (computing in float: {_op_counts(row['float_ops']) or 'none'})"
    if "quantized_ops" in row and row["quantized_ops"]:
        return f" (integer: {_op_counts(row['quantized_ops'])})"
    return ""


def parity_table(report: dict) -> Table:
    verdict = "passed" if report["passed"] else "FAILED"
    table = Table(title=f"parity against {report['reference']}: {verdict} (tolerance {report['tolerance_abs']:g} {report['units']})")
    for column in ("artifact", "windows", "n", "batch", "max abs error", "max rel error", "ok"):
        table.add_column(column, justify="right" if column not in ("artifact", "windows") else "left")
    for check in report["checks"]:
        table.add_row(
            check["artifact"], check["windows"], str(check["n"]), str(check["batch"]),
            f"{check['max_abs']:.3e}", f"{check['max_rel']:.3e}", "yes" if check["passed"] else "NO",
        )
    return table


@app.command()
def evaluate(
    bundle: BundleArg,
    data: Annotated[Path, typer.Argument(help="CSV to evaluate on (split with the training fractions).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    backtest: Annotated[int, typer.Option(help="Also score K consecutive blocks of the test split (rolling origins).")] = 0,
    artifact: Annotated[Optional[Path], typer.Option(help="Score this exported file (e.g. BUNDLE/model.onnx) instead of the Keras model: the forecasts a hub makes (the backtest keeps Keras).")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Write a PNG: forecast vs actual, error by horizon step.")] = None,
    plot_size: Annotated[str, typer.Option(help="PNG size in pixels, WIDTHxHEIGHT.")] = "1200x800",
    plot_start: Annotated[Optional[int], typer.Option(help="First test window of the forecast-vs-actual stretch (default: the first one without a gap).")] = None,
    plot_steps: Annotated[int, typer.Option(help="Length of that stretch in steps.")] = 168,
) -> None:
    """RMSE and MAE per horizon step on the test split: model, persistence, seasonal persistence, ridge."""
    from edgecast.plots import draw_evaluation, first_unbroken_start, forecast_stretch, parse_size
    from edgecast.trainer.bundle import read_bundle
    from edgecast.trainer.evaluation import evaluate_bundle_on_csv

    try:
        size = parse_size(plot_size) if plot else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    model_bundle = read_bundle(bundle)
    result = evaluate_bundle_on_csv(model_bundle, data, backtest, artifact)
    report = {key: result[key] for key in ("data", "metrics", "backtest") if key in result}
    if plot:
        times = result["times"]
        test = result["test"]
        if plot_start is None:
            plot_start = first_unbroken_start(test.end, plot_steps)
        if not 0 <= plot_start < len(test):
            raise typer.BadParameter(f"--plot-start must be in 0..{len(test) - 1}")
        stretch = forecast_stretch(
            test.end, test.y, result["model_forecast"], plot_start, plot_steps,
            (lambda row: times[row]) if times else (lambda row: row),
        )
        spec = model_bundle.spec
        draw_evaluation(plot, result["metrics"], stretch, spec["target"], f"{model_bundle.name} on {data.name}", size)
        report["plot"] = str(plot)
    if as_json:
        print(json.dumps(report, indent=2, default=str))
        return
    out.print(metrics_table(result["metrics"]))
    if "backtest" in report:
        out.print(backtest_table(report["backtest"]))
    if not result["data"]["same_as_training"]:
        err.print(f"note: {data} is not the file the model was trained on (sha256 differs)")
    if plot:
        out.print(f"wrote {plot}")


def backtest_table(backtest: dict) -> Table:
    """RMSE per fold and method at the first, a middle and the last horizon step."""
    first = backtest["results"][0]
    count = len(first["horizon_steps"])
    steps = sorted({0, min(5, count - 1), count - 1})
    methods = [m for m in ("model", "persistence", "seasonal_persistence", "ridge") if m in first]
    table = Table(title=f"backtest: {backtest['folds']} rolling origins in the test split, RMSE ({first['units']}); "
                        f"ridge {backtest['ridge']}")
    for column in ("origin row", "windows", "method"):
        table.add_column(column)
    for i in steps:
        table.add_column(f"+{first['horizon_steps'][i]}", justify="right")
    for fold in backtest["results"] + [{"first_target_row": "mean", "windows": "", **backtest["mean"]}]:
        for k, method in enumerate(methods):
            head = [str(fold["first_target_row"]), str(fold["windows"])] if k == 0 else ["", ""]
            table.add_row(*head, method, *(f"{fold[method]['rmse'][i]:.3f}" for i in steps), end_section=k == len(methods) - 1)
    return table


@app.command()
def report(
    bundle: BundleArg,
    output: Annotated[Optional[Path], typer.Option("--out", help="Markdown file (default: BUNDLE/report.md).")] = None,
) -> None:
    """Write a Markdown model card: data, features, split, settings, metrics vs baselines, parity, sizes, plots."""
    from edgecast.report import write_report

    path = write_report(bundle, output)
    out.print(f"wrote {path}")


@app.command()
def demo(
    models_dir: Annotated[Path, typer.Option(help="Where to write the bundle.")] = Path("models"),
    name: Annotated[str, typer.Option(help="Bundle name.")] = "demo",
    seed: Annotated[int, typer.Option(help="Training seed.")] = 0,
) -> None:
    """Train the tutorial's model on the embedded series, export, verify, and forecast 70 72 75 80."""
    from edgecast import tutorial
    from edgecast.trainer.data import series_from_values
    from edgecast.trainer.pipeline import TrainConfig

    series = series_from_values(
        tutorial.series_values(), tutorial.SERIES_NAME, "edgecast/data/tutorial_series.txt", tutorial.series_sha256()
    )
    config = TrainConfig(
        look_back=4, horizon=1, units=4, epochs=200, batch_size=1, patience=50, learning_rate=0.01, seed=seed, max_gap=0,
        layers=1, dropout=0.0, formulation="level", linear_skip=False, standardise=False,  # the tutorial's model, whatever the defaults
    )
    out_dir = models_dir / name
    _train_and_report(series, config, out_dir)
    export(out_dir)
    _print_demo_forecasts(out_dir, tutorial.DEMO_WINDOW)


def _print_demo_forecasts(bundle_dir: Path, window: list[float]) -> None:
    import numpy as np

    from edgecast.export.parity import reference_forecast, tflite_forecast
    from edgecast.trainer.bundle import read_bundle
    from edgecast.tutorial import TUTORIAL_FORECAST
    from edgecast_runtime import Forecaster

    bundle = read_bundle(bundle_dir)
    x = np.asarray(window, np.float32).reshape(1, len(window), 1)
    forecasts = {
        "Keras (scaler + model + inverse)": float(reference_forecast(bundle.load_model(), bundle.spec, x)[0, 0]),
        "ONNX Runtime (edgecast-runtime)": float(Forecaster(bundle_dir / "model.onnx").predict(window)[0]),
        "TFLite (LiteRT)": float(tflite_forecast(bundle_dir / "model.tflite", x)[0, 0]),
    }
    table = Table(title=f"forecast for the window {' '.join(f'{v:g}' for v in window)} (tutorial reported about {TUTORIAL_FORECAST})")
    table.add_column("backend")
    table.add_column("forecast", justify="right")
    for backend, value in forecasts.items():
        table.add_row(backend, f"{value:.6f}")
    out.print(table)
    spread = max(forecasts.values()) - min(forecasts.values())
    out.print(f"largest difference between backends: {spread:.2e} ({'within' if spread <= 1e-3 else 'OUTSIDE'} 1e-3)")
    if spread > 1e-3:
        raise typer.Exit(1)


@app.command()
def bench(
    bundles: Annotated[list[Path], typer.Argument(help="Exported model bundle folder(s), e.g. models/NAME.")],
    out_file: Annotated[Optional[Path], typer.Option("--out", help="Write the JSON report here.")] = None,
    quick: Annotated[bool, typer.Option(help="Tiny counts: checks that everything runs, the figures mean little.")] = False,
    runtime_python: Annotated[Optional[Path], typer.Option(help="Interpreter of the runtime-only environment (default: .venv-runtime when present).")] = None,
) -> None:
    """Runtime vs bare onnxruntime vs LiteRT vs Keras predict/call: latency, throughput, cold start, memory, size."""
    from edgecast import benchmarking

    report = benchmarking.run(bundles, quick=quick, runtime_python=runtime_python,
                              progress=lambda m: err.print(m, markup=False))
    out.print(benchmarking.markdown(report), markup=False, soft_wrap=True)
    if out_file is not None:
        benchmarking.write_report(out_file, report.to_json())
        out.print(f"wrote {out_file}")


# Signed releases (edgecast/release/): `edgecast keys new DIR`, `edgecast sign models/NAME --key KEY.pem`.
from edgecast.release.cli import keys_app, sign  # noqa: E402

app.add_typer(keys_app, name="keys")
app.command("sign")(sign)


if __name__ == "__main__":
    main()
