"""The typer options that `edgecast train` and `edgecast fleet train` share: each option's
name, type and help written once (their defaults come from the trainer's DEFAULTS)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

Target = Annotated[str, typer.Option(help="Column to forecast.")]
Features = Annotated[list[str], typer.Option(help="Extra input columns (repeat, or comma-separated).")]
TimeColumn = Annotated[Optional[str], typer.Option(
    help="Time column(s): one name, date,time, or year,month,day,hour (default: detected).")]
Clock = Annotated[Optional[str], typer.Option(
    help="Clock of timestamps without a zone (UTC, +08:00, Asia/Shanghai); recorded for the runtime's calendar features.")]
LookBack = Annotated[int, typer.Option(help="Input steps per window.")]
Horizon = Annotated[int, typer.Option(help="Steps predicted at once.")]
Units = Annotated[int, typer.Option(help="LSTM units.")]
Layers = Annotated[int, typer.Option(help="Stacked LSTM layers.")]
Dropout = Annotated[float, typer.Option(help="Dropout after each LSTM layer (training only).")]
Formulation = Annotated[str, typer.Option(help="What the network predicts: change_from_last or level.")]
LinearSkip = Annotated[bool, typer.Option(help="Add a ridge-initialised linear map of the window to the LSTM's output.")]
QuadraticSkip = Annotated[bool, typer.Option(
    help="The linear map also reads products of recent readings, changes and means.")]
LinearFitWithVal = Annotated[bool, typer.Option(
    help="Fit the linear map on training and validation windows (the test split stays unseen).")]
TargetUnits = Annotated[Optional[str], typer.Option(help="Units of the target for tables and plots, e.g. µg/m³.")]
Epochs = Annotated[int, typer.Option(help="Most epochs; early stopping may end sooner.")]
BatchSize = Annotated[int, typer.Option(help="Training batch size.")]
Patience = Annotated[int, typer.Option(help="Epochs without validation improvement before stopping.")]
LearningRate = Annotated[float, typer.Option(help="Adam learning rate.")]
Seed = Annotated[int, typer.Option(help="Same seed, same data, same numbers.")]
MaxGap = Annotated[int, typer.Option(help="Longest run of missing steps to interpolate.")]
Split = Annotated[str, typer.Option(help="Train,validation,test fractions (chronological).")]
ModelsDir = Annotated[Path, typer.Option(help="Where bundles live.")]
Opset = Annotated[int, typer.Option(help="ONNX opset.")]


def split_list(values: list[str]) -> list[str]:
    """Repeated and comma-separated values as one list."""
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def split_fractions(text: str) -> tuple[float, float, float]:
    """`--split` as three fractions, or typer's one-line usage error."""
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"'{text}' is not three comma-separated numbers", param_hint="'--split'") from None
    if len(parts) != 3:
        raise typer.BadParameter(f"'{text}' is not three comma-separated numbers", param_hint="'--split'")
    return parts
