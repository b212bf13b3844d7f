"""The `edgecast` command: a thin typer layer over the Python API (edgecast/api.py).

Each command parses its options, calls the API function of the same name and prints
its typed result (tables in edgecast/tables.py). The options of `train` and `export`
come from the option table (edgecast/options.py) the API takes its keywords from; other
defaults from the settings the API uses. Heavy imports (TensorFlow, tf2onnx) happen
inside the API functions, so `--help` is quick. Every EdgecastError reaches the user as
one line and exit code 2, the settings it names said as flags (`max_gap` as `--max-gap`).
"""
from __future__ import annotations

import inspect
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from edgecast import options as opt
from edgecast import tables
from edgecast.api import evaluate as api_evaluate
from edgecast.archive.cli import collect
from edgecast.base import EdgecastError
from edgecast.cli_options import Settings, SinceOption, UntilOption, with_options
from edgecast.exporter.settings import TARGETS
from edgecast.fleet.cli import app as fleet_app
from edgecast.plots import size_text
from edgecast.release.cli import fleet_promote, fleet_status, keys_app, release, sign
from edgecast.release.retrain_cli import fleet_retrain
from edgecast.trainer.settings import DEFAULTS, MODELS_DIR
from edgecast.tutorial import DEMO_NAME
from edgecast_runtime.contract import SIGNATURE_NAME

if TYPE_CHECKING:
    from edgecast.api import TrainResult
    from edgecast.exporter.reports import ExportResult

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

app = typer.Typer(
    help="Train a Keras LSTM forecaster on a sensor series, export it with its scaler to ONNX and TFLite, prove parity.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = tables.console()
err = tables.console(stderr=True)
# Options of `evaluate` not held in a settings object: the API function's own defaults.
EVALUATE_DEFAULTS = {name: p.default for name, p in inspect.signature(api_evaluate).parameters.items()}
app.add_typer(fleet_app, name="fleet")  # fleet train, fleet report (edgecast/fleet/cli.py)
# Signed releases (edgecast/release/cli.py): keys new, sign, release, fleet status and fleet promote.
app.add_typer(keys_app, name="keys")
app.command("sign")(sign)
app.command("release")(release)
fleet_app.command("status")(fleet_status)
fleet_app.command("promote")(fleet_promote)
fleet_app.command("retrain")(fleet_retrain)  # archive -> train -> sign -> shadow -> promote (release/retrain.py)

BundleArg = Annotated[Path, typer.Argument(help="Model bundle folder, e.g. models/NAME.")]

app.command("collect")(collect)  # the readings archive (edgecast/archive/cli.py)


def main() -> None:
    # standalone_mode=False: usage errors reach us instead of typer's boxed panel, so
    # they read like every other error, on one line.
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        err.print("edgecast: aborted", markup=False)
        sys.exit(130)
    except EdgecastError as exc:
        err.print(f"edgecast: error: {opt.as_flags(str(exc), exc.settings)}", markup=False, soft_wrap=True)
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


NEW_STATION = "A new station"  # the --help panel of train --from and --station


@app.command()
@with_options(*opt.TRAIN_COMMAND)
def train(
    data: Annotated[Optional[list[Path]], typer.Argument(
        help="CSV with a timestamp column or year,month,day,hour columns; several files of one station (yearly "
             "exports) are joined in time order. With --from and --station: none, for a station with no history.",
        show_default=False)] = None,
    *,
    settings: Settings,
    name: Annotated[Optional[str], typer.Option(help="Bundle name (default: from the first CSV file's name).")] = None,
    models_dir: Annotated[Path, typer.Option(help="Where bundles live.")] = MODELS_DIR,
    neighbours: Annotated[list[Path], typer.Option(
        help="Neighbouring stations' files (repeat): their readings become inputs FEATURE@STATION, aligned by "
        "timestamp.", rich_help_panel=opt.NEIGHBOURS)] = [],
    neighbour_count: Annotated[Optional[int], typer.Option(
        help="Keep the K neighbours whose target correlates most with this one on the training split.",
        rich_help_panel=opt.NEIGHBOURS)] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    from_fleet: Annotated[Optional[Path], typer.Option(
        "--from", help="Start from this fleet's global model (fleet train --global): fine-tuned on the file's "
        "history where it allows, else the model for an unknown station.", rich_help_panel=NEW_STATION)] = None,
    station: Annotated[Optional[str], typer.Option(
        help="With --from: the new station's name (and bundle name); without a file, it has no history yet.",
        rich_help_panel=NEW_STATION)] = None,
) -> None:
    """Train an LSTM forecaster on a CSV (or an archive's station folder ARCHIVE/station=ID) and write the
    bundle models/NAME.

    --features takes numeric columns, compass wind directions (N ... NNW, calm `cv`) and
    the calendar features hour_of_day and day_of_week, derived from the timestamps.
    """
    from edgecast import api

    data = data or []
    if from_fleet is not None:
        unused = [flag for flag, value in (("--neighbours", neighbours), ("--neighbour-count", neighbour_count),
                                           ("--since", since), ("--until", until)) if value]
        if unused:  # a global model reads no neighbours, and --from reads a station file, not an archive
            raise typer.BadParameter(f"{', '.join(unused)} cannot go with --from", param_hint="'--from'")
        _start_from(from_fleet, data, station, name, models_dir, settings)
        return
    if station is not None:
        raise typer.BadParameter("names a new station of a global model: give --from FLEET too", param_hint="'--station'")
    if settings["target"] is None:  # optional in the table for --from only
        raise _MissingTarget("")
    if not data:
        raise typer.BadParameter("give a data file (or --from FLEET --station NAME for a station with no history)",
                                 param_hint="'DATA'")
    with EpochBar(settings["epochs"]) as bar:
        result = api.train(data[0] if len(data) == 1 else data, name=name, models_dir=models_dir, neighbours=neighbours,
                           neighbour_count=neighbour_count, since=since, until=until, progress=bar.line, on_epoch=bar.epoch, **settings)
    _print_training_summary(result)


class _MissingTarget(typer.BadParameter):
    """typer's own usage error (its private click's MissingParameter is not public), so the
    message names `edgecast train --help` like click's own "Missing option"."""

    def format_message(self) -> str:
        return "Missing option '--target' (or --from FLEET, whose global model decides it)."


# What `train --from` reads: how the file is written. The model's settings are the fleet's.
_READ_WITH_FROM = {o.name for o in opt.READING_OPTIONS}


def _start_from(fleet: Path, data: list[Path], station: Optional[str], name: Optional[str], models_dir: Path,
                settings: dict) -> None:
    from edgecast.starting import start_from
    from edgecast.trainer.newcomer import FINE_TUNE_EPOCHS

    changed = [o.cli_flag for o in opt.TRAIN_COMMAND if o.name not in _READ_WITH_FROM
               and not o.is_default(settings[o.name])]
    if changed:
        raise typer.BadParameter(f"the fleet's global model decides {', '.join(changed)}; leave "
                                 f"{'it' if len(changed) == 1 else 'them'} out with --from", param_hint="'--from'")
    with EpochBar(FINE_TUNE_EPOCHS) as bar:
        result = start_from(fleet, data[0] if len(data) == 1 else (data or None), station=station, name=name,
                            models_dir=models_dir, progress=bar.line, on_epoch=bar.epoch,
                            **{key: value for key, value in settings.items() if key in _READ_WITH_FROM})
    out.print(f"wrote {result.bundle}: {result.how}", markup=False, soft_wrap=True)
    out.print(tables.metrics_table(result.metrics))


class EpochBar:
    """The epoch progress bar on stderr. The first progress line (the data and settings were
    checked, so a bad input stays a one-line error) opens it; lines before the first epoch
    (the reader's notes, "training on ...") print above it; a line after an epoch (export,
    once training is over) closes it first."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self.progress = None
        self.task = None
        self.epochs_seen = False

    def __enter__(self) -> EpochBar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._close()

    def line(self, text: str) -> None:
        if self.epochs_seen:
            self._close()
        err.print(text, markup=False)  # above the bar while it is live
        if not self.epochs_seen:
            self._open()

    def epoch(self, epoch: int, logs: dict) -> None:
        self._open()
        self.epochs_seen = True
        self.progress.update(self.task, completed=epoch,
                             description=f"loss {logs.get('loss', 0):.5f}  val {logs.get('val_loss', 0):.5f}")

    def _open(self) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        if self.progress is not None:
            return
        self.progress = Progress(
            TextColumn("epoch {task.completed}/{task.total}"), BarColumn(), TextColumn("{task.description}"),
            TimeElapsedColumn(), console=err, transient=False,
        )
        self.task = self.progress.add_task("", total=self.epochs)
        self.progress.start()

    def _close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _print_training_summary(result: TrainResult) -> None:
    windows = result.windows
    out.print(
        f"wrote {result.bundle}: {result.epochs_run} epochs (best {result.best_epoch}), "
        f"{result.training_seconds:.1f} s; windows train/val/test {windows['train']}/{windows['val']}/{windows['test']}"
    )
    out.print(tables.metrics_table(result.metrics))


@app.command()
@with_options(*opt.EXPORT_COMMAND)
def export(bundle: BundleArg, settings: Settings) -> None:
    """Export ONNX and TFLite with the scaler in the graph; fail unless parity holds."""
    from edgecast import api
    from edgecast.exporter.errors import ParityError
    from edgecast.exporter.quantize import QuantizationError

    if settings["target"] not in TARGETS:
        raise typer.BadParameter(f"'{settings['target']}' is not one of {', '.join(TARGETS)}", param_hint="'--target'")
    try:
        result = api.export(bundle, progress=_progress_line, **settings)
    except ParityError as exc:
        out.print(tables.parity_table(exc.report))
        raise
    _print_export(result)
    if result.refused:
        raise QuantizationError(f"{len(result.refused)} --quantize mode(s) refused, the other artifacts were written: "
                                + "; ".join(result.refused.values()))


def _print_export(result: ExportResult) -> None:
    out.print(tables.parity_table(result.parity))
    if result.accuracy is not None:
        out.print(tables.accuracy_table(result.accuracy))
    for artifact in result.artifacts.values():
        out.print(f"{artifact.path}  {artifact.bytes} bytes  sha256 {artifact.sha256[:16]}…", markup=False)
    if result.micro is not None:
        out.print(tables.micro_table(result.micro.to_dict()))
        out.print(f"wrote {result.micro.folder}/ ({', '.join(result.micro.files)}, micro.json)", markup=False)
    for path in result.removed:
        why = ("it signed the earlier export's files: run edgecast sign again" if path.name == SIGNATURE_NAME
               else "written by an earlier export, not requested this time")
        out.print(f"removed {path} ({why})", markup=False)
    out.print(f"wrote {result.manifest_path}", markup=False)


def _progress_line(line: str) -> None:
    err.print(line, markup=False)


@app.command()
def verify(
    bundle: BundleArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Recompute parity of the exported artifacts against scaler + Keras + inverse."""
    from edgecast import api

    result = api.verify(bundle)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        out.print(tables.parity_table(result.parity))
        out.print(tables.accuracy_table(result.accuracy))
        for line in tables.op_lines(result.accuracy):
            out.print(line, markup=False)
        for problem in result.integrity.problems:
            err.print(f"integrity: {problem}", markup=False, soft_wrap=True)
        if result.micro is not None:
            out.print(tables.micro_table(result.micro))
            for problem in result.micro["problems"]:
                err.print(f"micro: {problem}", markup=False, soft_wrap=True)
    if not result.passed:
        raise typer.Exit(1)


@app.command()
def evaluate(
    bundle: BundleArg,
    data: Annotated[Path, typer.Argument(help="CSV to evaluate on (split with the training fractions).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    backtest: Annotated[int, typer.Option(help="Also score K consecutive blocks of the test split (rolling origins).")] = EVALUATE_DEFAULTS["backtest"],
    artifact: Annotated[Optional[Path], typer.Option(help="Score this exported file (e.g. BUNDLE/model.onnx) instead of the Keras model: the forecasts a hub makes (the backtest keeps Keras).")] = EVALUATE_DEFAULTS["artifact"],
    plot: Annotated[Optional[Path], typer.Option(help="Write an image: forecast vs actual, error by horizon step (a model with intervals or alerts adds its interval fan and reliability diagrams); PNG, SVG or PDF by the file's suffix.")] = EVALUATE_DEFAULTS["plot"],
    plot_size: Annotated[str, typer.Option(help="Image size in pixels, WIDTHxHEIGHT.")] = size_text(EVALUATE_DEFAULTS["plot_size"]),
    plot_start: Annotated[Optional[int], typer.Option(help="First test window of the forecast-vs-actual stretch (default: the first one without a gap).")] = EVALUATE_DEFAULTS["plot_start"],
    plot_steps: Annotated[int, typer.Option(help="Length of that stretch in steps.")] = EVALUATE_DEFAULTS["plot_steps"],
    neighbours: Annotated[list[Path], typer.Option(help="Neighbours' files of a model that reads neighbours (default: those it was trained on).")] = [],
) -> None:
    """RMSE and MAE per horizon step on the test split: model, persistence, seasonal persistence, ridge
    (and a model reading neighbours with every neighbour missing, a clipped model unclipped); with intervals or
    alerts, their coverage, width, interval score, CRPS, Brier skill, precision and recall too."""
    from edgecast import api

    result = api.evaluate(bundle, data, backtest=backtest, plot=plot, plot_size=plot_size, plot_start=plot_start,
                          plot_steps=plot_steps, artifact=artifact, neighbours=neighbours)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
        return
    out.print(tables.metrics_table(result.metrics))
    if result.evaluation.intervals is not None:
        for table in tables.probabilistic_tables(result.evaluation.intervals, result.metrics.horizon_steps):
            out.print(table)
    if result.backtest is not None:
        out.print(tables.backtest_table(result.backtest))
    if not result.data.same_as_training:
        err.print(f"note: {data} is not the file the model was trained on (sha256 differs)", markup=False)
    if result.plot is not None:
        out.print(f"wrote {result.plot}", markup=False)


@app.command()
def report(
    bundle: BundleArg,
    output: Annotated[Optional[Path], typer.Option("--out", help="Markdown file (default: BUNDLE/report.md).")] = None,
) -> None:
    """Write a Markdown model card: data, features, split, settings, metrics vs baselines, parity, sizes, plots."""
    from edgecast.report import write_report

    path = write_report(bundle, output)
    out.print(f"wrote {path}", markup=False)


@app.command()
def demo(
    models_dir: Annotated[Path, typer.Option(help="Where to write the bundle.")] = MODELS_DIR,
    name: Annotated[str, typer.Option(help="Bundle name.")] = DEMO_NAME,
    seed: Annotated[int, typer.Option(help="Training seed.")] = DEFAULTS.seed,
) -> None:
    """Train the tutorial's model on the embedded series, export, verify, and forecast 70 72 75 80."""
    from edgecast import api
    from edgecast.tutorial import TUTORIAL_FORECAST, config

    with EpochBar(config(seed).epochs) as bar:
        result = api.demo(models_dir, name=name, seed=seed, progress=bar.line, on_epoch=bar.epoch)
    _print_training_summary(result.train)
    _print_export(result.export)
    out.print(tables.forecasts_table(result.window, result.forecasts, TUTORIAL_FORECAST))
    out.print(f"largest difference between backends: {result.spread:.2e} "
              f"({'within' if result.agree else 'OUTSIDE'} {result.tolerance:g})")
    if not result.agree:
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



if __name__ == "__main__":
    main()
