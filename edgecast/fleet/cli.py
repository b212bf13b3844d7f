"""`edgecast fleet train` and `edgecast fleet report`: a thin typer layer over edgecast.fleet.

Exit code of `fleet train`: the number of stations that failed (at most 100); 0 when all
were trained or skipped. An error before any station runs (no data, bad option, no
cluster) is one line and exit code 2, as everywhere in edgecast.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from edgecast import options as opt
from edgecast.export.settings import EXPORT_DEFAULTS
from edgecast.trainer.settings import DEFAULTS, MODELS_DIR, split_text

from .settings import DEFAULT_FLEET_NAME, DEFAULT_LEADS

MAX_EXIT_CODE = 100

app = typer.Typer(help="One model per station: train, export and verify a fleet on Ray; report on it.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def _numbers(text: str, option: str, kind: Callable[[str], object] = float) -> tuple:
    try:
        return tuple(kind(p) for p in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"'{text}' is not comma-separated numbers", param_hint=f"'{option}'") from None


@app.command("train")
def train_command(
    data: Annotated[list[str], typer.Argument(help="Station CSV/CSV.gz files, folders of them, or globs; STATION=FILE names a file's station.")],
    target: opt.Target,
    features: opt.Features = [],
    time_column: opt.TimeColumn = None,
    clock: opt.Clock = None,
    station_column: Annotated[Optional[str], typer.Option(help="Column holding the station id, in any case (default: from the file name). Ids are lower-cased.")] = None,
    look_back: opt.LookBack = DEFAULTS.look_back,
    horizon: opt.Horizon = DEFAULTS.horizon,
    units: opt.Units = DEFAULTS.units,
    layers: opt.Layers = DEFAULTS.layers,
    dropout: opt.Dropout = DEFAULTS.dropout,
    formulation: opt.Formulation = DEFAULTS.formulation,
    linear_skip: opt.LinearSkip = DEFAULTS.linear_skip,
    quadratic_skip: opt.QuadraticSkip = DEFAULTS.quadratic_skip,
    linear_fit_with_val: opt.LinearFitWithVal = DEFAULTS.linear_fit_with_val,
    target_units: opt.TargetUnits = DEFAULTS.target_units,
    epochs: opt.Epochs = DEFAULTS.epochs,
    batch_size: opt.BatchSize = DEFAULTS.batch_size,
    patience: opt.Patience = DEFAULTS.patience,
    learning_rate: opt.LearningRate = DEFAULTS.learning_rate,
    seed: opt.Seed = DEFAULTS.seed,
    max_gap: opt.MaxGap = DEFAULTS.max_gap,
    split: opt.Split = split_text(DEFAULTS.split),
    name: Annotated[str, typer.Option(help="Fleet name: bundles go to MODELS_DIR/NAME/STATION.")] = DEFAULT_FLEET_NAME,
    models_dir: Annotated[Path, typer.Option(help="Where fleets live.")] = MODELS_DIR,
    export: Annotated[bool, typer.Option(help="Also export (ONNX, TFLite) and verify each bundle in its task.")] = False,
    quantize: Annotated[list[str], typer.Option(help="With --export: quantized artifacts too (as `edgecast export --quantize`).")] = [],
    builtin_ops: Annotated[bool, typer.Option(help="With --export: also model.builtin.tflite (builtin ops only).")] = False,
    opset: opt.Opset = EXPORT_DEFAULTS.opset,
    address: Annotated[Optional[str], typer.Option(help="Join a Ray cluster: auto, HOST:PORT or ray://HOST:PORT (default: a local one).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Stations trained at once (default: the cluster's CPUs / --cpus-per-task).")] = None,
    cpus_per_task: Annotated[int, typer.Option(help="CPUs per station task; TensorFlow and BLAS use that many threads.")] = 1,
    force: Annotated[bool, typer.Option(help="Retrain stations whose data and settings are unchanged.")] = False,
    neighbours: Annotated[Optional[str], typer.Option(help="Other stations' readings as inputs: 'all', or K for the K whose target correlates most (training split).")] = None,
    neighbour_features: Annotated[list[str], typer.Option(help="The neighbours' columns to read (default: the target).")] = [],
) -> None:
    """Train one bundle per station as Ray tasks; skip stations that are up to date.

    The exit code is the number of stations that failed (at most 100).
    """
    from edgecast import fleet
    from edgecast.trainer.settings import TrainConfig

    if (quantize or builtin_ops) and not export:
        raise typer.BadParameter("--quantize and --builtin-ops need --export")
    config = TrainConfig(
        look_back=look_back, horizon=horizon, units=units, epochs=epochs, batch_size=batch_size,
        patience=patience, learning_rate=learning_rate, seed=seed, max_gap=max_gap,
        split=opt.split_fractions(split), layers=layers, dropout=dropout, formulation=formulation,
        linear_skip=linear_skip, quadratic_skip=quadratic_skip, linear_fit_with_val=linear_fit_with_val,
        target_units=target_units,
    )
    with FleetProgress() as progress:
        result = fleet.train(
            data, target, features=opt.split_list(features), time_column=time_column, clock=clock, config=config,
            station_column=station_column, name=name, models_dir=models_dir, export=export,
            quantize=opt.split_list(quantize), builtin_ops=builtin_ops, opset=opset, address=address,
            workers=workers, cpus_per_task=cpus_per_task, force=force, neighbours=neighbours,
            neighbour_features=opt.split_list(neighbour_features), on_event=progress.on_event,
        )
    for station in result.stations:
        for notice in station.notices or ():
            err.print(f"{station.station}: note: {notice}", markup=False, soft_wrap=True)
    for station in result.failed:
        err.print(f"{station.station}: {station.error}", markup=False, soft_wrap=True)
    out.print(result.summary_line(), markup=False, soft_wrap=True)
    if result.failed:
        raise typer.Exit(min(len(result.failed), MAX_EXIT_CODE))


@app.command("report")
def report_command(
    fleet_dir: Annotated[Path, typer.Argument(help="Fleet folder, e.g. models/fleet.")],
    leads: Annotated[str, typer.Option(help="Forecast leads (steps) to tabulate, comma-separated.")] = ",".join(map(str, DEFAULT_LEADS)),
    without: Annotated[Optional[Path], typer.Option(help="A fleet trained with the same settings without neighbours: its RMSE is shown as 'own history'.")] = None,
) -> None:
    """Write FLEET/fleet.md and fleet.json (RMSE vs baselines per station and lead) and fleet-skill.png."""
    from edgecast import fleet

    written = fleet.report(fleet_dir, _numbers(leads, "--leads", int), without=without)
    for path in (written.markdown, written.json, written.plot):
        if path is not None:
            out.print(f"wrote {path}", markup=False)


class RemainingColumn(ProgressColumn):
    """Time left from the stations actually run (skipped ones take no time and would skew it)."""

    def render(self, task: Task) -> Text:
        ran, to_run = task.fields.get("ran", 0), task.fields.get("to_run", 0)
        if not ran or task.elapsed is None or ran >= to_run:
            return Text("ETA -:--:--" if ran < to_run else "", style="progress.remaining")
        left = int((task.elapsed - task.fields["started_after"]) / ran * (to_run - ran))
        return Text(f"ETA {left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}", style="progress.remaining")


class FleetProgress:
    """A live bar of stations trained, failed and skipped; it shows once the stations are known."""

    def __init__(self):
        self.progress = Progress(
            TextColumn("stations"), BarColumn(), MofNCompleteColumn(),
            TextColumn("trained {task.fields[trained]}  failed {task.fields[failed]}  skipped {task.fields[skipped]}"),
            TimeElapsedColumn(), RemainingColumn(), console=err, transient=False,
        )
        self.task = None
        self.decided = 0  # skipped or unnamed stations, reported right after "start"

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def on_event(self, kind: str, payload: object) -> None:
        if kind == "start":
            total, self.decided = payload
            self.task = self.progress.add_task("", total=total, trained=0, failed=0, skipped=0, ran=0,
                                               to_run=total - self.decided, started_after=0.0)
            return
        fields = self.progress.tasks[self.task].fields
        counts = {key: fields[key] for key in ("trained", "failed", "skipped")}
        counts[payload.status] += 1
        ran = fields["ran"] + (self.decided == 0)
        self.decided = max(0, self.decided - 1)
        self.progress.update(self.task, advance=1, ran=ran, **counts)
