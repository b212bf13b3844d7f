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
from edgecast.cli_options import Settings, SinceOption, UntilOption, with_options
from edgecast.trainer.settings import MODELS_DIR

from .settings import DEFAULT_FLEET_NAME, DEFAULT_GLOBAL, DEFAULT_LEADS

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
@with_options(*opt.FLEET)
def train_command(
    data: Annotated[list[str], typer.Argument(help="Station CSV/CSV.gz files, folders of them, or globs; STATION=FILE names a file's station; "
                                                   "an archive folder (edgecast collect): its stations' readings.")],
    settings: Settings,
    station_column: Annotated[Optional[str], typer.Option(help="Column holding the station id, in any case (default: from the file name). Ids are lower-cased.")] = None,
    name: Annotated[str, typer.Option(help="Fleet name: bundles go to MODELS_DIR/NAME/STATION.")] = DEFAULT_FLEET_NAME,
    models_dir: Annotated[Path, typer.Option(help="Where fleets live.")] = MODELS_DIR,
    export: Annotated[bool, typer.Option(help="Also export (ONNX, TFLite) and verify each bundle in its task, with the "
                                         "other options of this panel.", rich_help_panel=opt.EXPORT)] = False,
    address: Annotated[Optional[str], typer.Option(help="Join a Ray cluster: auto, HOST:PORT or ray://HOST:PORT (default: a local one).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Stations trained at once (default: the cluster's CPUs / --cpus-per-task).")] = None,
    cpus_per_task: Annotated[int, typer.Option(help="CPUs per station task; TensorFlow and BLAS use that many threads.")] = 1,
    force: Annotated[bool, typer.Option(help="Retrain stations whose data and settings are unchanged.")] = False,
    neighbours: Annotated[Optional[str], typer.Option(
        help="Other stations' readings as inputs: 'all', or K for the K whose target correlates most (training split).",
        rich_help_panel=opt.NEIGHBOURS)] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    global_model: Annotated[bool, typer.Option(
        "--global/--local", help="One network for every station (each still gets its own bundle, its identity and "
        "scaling inside; the fleet keeps the network for new stations: train --from), or one per station.")
    ] = DEFAULT_GLOBAL,
) -> None:
    """Train one bundle per station as Ray tasks; skip stations that are up to date.

    Every training and reading option of `edgecast train` applies to each station. The
    exit code is the number of stations that failed (at most 100).
    """
    from edgecast import fleet

    changed = [o.cli_flag for o in opt.EXPORT_OPTIONS if not o.is_default(settings[o.name])]
    if changed and not export:
        raise typer.BadParameter(f"{' and '.join(changed)} need{'s' if len(changed) == 1 else ''} --export")
    with FleetProgress() as progress:
        result = fleet.train(data, station_column=station_column, name=name, models_dir=models_dir, export=export,
                             address=address, workers=workers, cpus_per_task=cpus_per_task, force=force,
                             neighbours=neighbours, since=since, until=until, global_model=global_model,
                             on_event=progress.on_event, **settings)
    for station in result.stations:
        for notice in station.notices or ():
            err.print(f"{station.station}: note: {notice}", markup=False, soft_wrap=True)
    for station in result.failed:
        err.print(f"{station.station}: {opt.as_flags(station.error, station.error_settings)}", markup=False,
                  soft_wrap=True)
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
