"""The toolkit as Python functions: `train`, `export`, `verify`, `evaluate` (and `demo`).

They take the `edgecast` command's options as keyword arguments, with the same defaults
(trainer/settings.py, export/settings.py, edgecast/plots.py), and return typed results;
the command is a thin layer that parses options, calls these and prints. Errors are the
toolkit's typed `EdgecastError`s, each one clear line. TensorFlow loads only when a
function needs it, so `import edgecast` stays quick.

    import edgecast

    trained = edgecast.train("station.csv", target="PM2.5", epochs=5)
    exported = edgecast.export(trained.bundle)
    edgecast.verify(trained.bundle).passed
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecast import options
from edgecast.exporter.reports import ExportResult, VerifyResult
from edgecast.plots import DEFAULT_SIZE, STRETCH_STEPS, DistributionPanels
from edgecast.trainer.reports import Backtest, DataRecord, Evaluation, Metrics
from edgecast.trainer.settings import DEFAULTS, MODELS_DIR, TrainConfig

if TYPE_CHECKING:
    import numpy as np

    from edgecast.trainer.data import ReadOptions, Series
    from edgecast_runtime.spec import Spec

Progress = Callable[[str], object]  # receives one line of progress at a time
EpochHook = Callable[[int, dict], object]  # (epoch number from 1, Keras logs: loss, val_loss)

# Suffixes a data file's name loses in its default bundle name: `station.csv.gz` -> `station`.
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zip")
TABLE_SUFFIXES = (".csv", ".tsv", ".txt")
DEFAULT_NAME = "model"


@dataclass(frozen=True)
class DataSummary:
    """The series a model was trained on, after loading and gap handling."""

    source: str
    sha256: str
    rows_read: int
    steps: int  # rows on the regular time grid
    features: list[str]  # target first
    values_interpolated: int
    values_missing: int  # left missing: inside gaps longer than max_gap
    interval_seconds: float | None


@dataclass(frozen=True)
class TrainResult:
    bundle: Path
    data: DataSummary
    metrics: Metrics  # the held-out test split: the model and every baseline, per horizon step
    training_seconds: float
    epochs_run: int
    best_epoch: int
    windows: dict[str, int]  # windows in the train, val and test splits
    training: dict[str, Any]  # training.json as written: settings, split, history


@dataclass(frozen=True)
class EvaluateResult:
    bundle: Path
    evaluation: Evaluation  # also the test windows' actual values, forecasts and times
    plot: Path | None = None

    @property
    def data(self) -> DataRecord:
        return self.evaluation.data

    @property
    def metrics(self) -> Metrics:
        return self.evaluation.metrics

    @property
    def backtest(self) -> Backtest | None:
        return self.evaluation.backtest

    def to_dict(self) -> dict[str, Any]:
        """The `edgecast evaluate --json` form."""
        return self.evaluation.to_dict(self.plot)


@dataclass(frozen=True)
class DemoResult:
    train: TrainResult
    export: ExportResult
    window: list[float]
    forecasts: dict[str, float]  # backend -> forecast of `window`
    tolerance: float  # the parity tolerance the backends must agree within

    @property
    def spread(self) -> float:
        """Largest difference between the backends' forecasts."""
        return max(self.forecasts.values()) - min(self.forecasts.values())

    @property
    def agree(self) -> bool:
        return self.spread <= self.tolerance


def default_bundle_name(data: str | Path) -> str:
    """The bundle name a data file gives: its name without table and compression suffixes,
    lower case, other characters than letters and digits as dashes."""
    name = Path(data).name
    for suffixes in (COMPRESSED_SUFFIXES, TABLE_SUFFIXES):
        for suffix in suffixes:
            if name.lower().endswith(suffix) and len(name) > len(suffix):
                name = name[: -len(suffix)]
                break
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-") or DEFAULT_NAME


@options.keywords(*options.TRAIN)
def train(
    data: str | Path | Sequence[str | Path],
    target: str,
    *,
    name: str | None = None,
    models_dir: str | Path = MODELS_DIR,
    neighbours: Sequence[str | Path] = (),
    neighbour_count: int | None = None,
    since: str | None = None,
    until: str | None = None,
    progress: Progress | None = None,
    on_epoch: EpochHook | None = None,
    **settings: Any,
) -> TrainResult:
    """Train an LSTM forecaster on a CSV and write the bundle `models_dir/name`.

    `data`: a file, or several files of one station (yearly exports), joined in time order
    (overlapping rows must be identical; a conflicting one is refused, naming both files).

    Every option of `edgecast train` is a keyword here, with the same default (the option
    table, edgecast/options.py; the signature lists them). `features`: extra input columns
    (numeric, compass wind directions, or the calendar features hour_of_day and
    day_of_week). `name` defaults to the file's name (default_bundle_name). How the file
    is written (`time_column` such as `date,time`, `time_unit`, `time_format`, `dayfirst`,
    `clock`, `delimiter`, `decimal`) is detected when not given; `valid_ranges` maps a
    column to (min, max), either bound None, or is a list of `COLUMN=MIN,MAX` texts. Bad
    data or settings fail before TensorFlow loads.

    `neighbours`: other stations' files (station id from the file name), read the same
    way and aligned on this file's timestamps; their `neighbour_features` (default: the
    target) become inputs named FEATURE@STATION that may be missing on the hub (the model
    is trained with them silenced at random unless `neighbour_masking` is False).
    `neighbour_count` keeps the K whose target correlates most with this one on the
    training split. With `neighbour_fallback` the same network is also trained on the
    station's own inputs, and the graph uses it when no neighbour's reading is in the
    window. Forecasts are clipped at `target_min` (default: 0 when the training
    split has no negative target; `clip_target=False`: never).

    `data` may be an archive's station folder (ARCHIVE/station=ID, `edgecast collect`):
    its readings from `since` (inclusive) to `until` (exclusive), written to
    models_dir/.archive/ID.csv and read like a station file.
    """
    from edgecast.archive.reading import station_file
    from edgecast.archive.settings import EXPORT_FOLDER
    from edgecast.trainer.data import load_csv
    from edgecast.trainer.neighbours import add_neighbours

    given = options.values({**settings, "target": target}, options.TRAIN)
    read = read_options(given)
    config = options.train_config(given)
    options.check_folder_name(name)
    data = station_file(data, Path(models_dir) / EXPORT_FOLDER, since, until)
    series = load_csv(data, target, list(given["features"]), max_gap=config.max_gap, options=read)
    if neighbours:
        series, _ = add_neighbours(series, list(neighbours), list(given["neighbour_features"]), read, config.max_gap,
                                   config.split, neighbour_count)
    first = data if isinstance(data, (str, Path)) else next(iter(data), "")
    out_dir = Path(models_dir) / (name or default_bundle_name(first))
    return train_series(series, config, out_dir, progress, on_epoch)


def read_options(given: Mapping[str, Any]) -> ReadOptions:
    """edgecast.trainer.data.ReadOptions from the reading options (`valid_ranges` as a
    mapping or as `COLUMN=MIN,MAX` texts)."""
    from edgecast.trainer.data import ReadOptions
    from edgecast.trainer.validity import parse_range

    ranges = given.get("valid_ranges", ())
    ranges = dict(ranges) if isinstance(ranges, Mapping) else dict(map(parse_range, ranges))
    names = {f.name for f in fields(ReadOptions)} - {"valid_ranges"}
    return ReadOptions(valid_ranges=ranges, **{key: value for key, value in given.items() if key in names})


def train_series(series: Series, config: TrainConfig, out_dir: Path, progress: Progress | None = None,
                 on_epoch: EpochHook | None = None) -> TrainResult:
    """Train on a loaded series (edgecast.trainer.data.Series) with a full TrainConfig."""
    from edgecast.trainer.pipeline import prepare
    from edgecast.trainer.pipeline import train as run_training

    windows = prepare(series, config)  # fails on bad settings before TensorFlow loads
    summary = DataSummary(series.source, series.sha256, series.rows_read, len(series.frame), series.features,
                          series.values_interpolated, series.values_missing, series.interval_seconds)
    for note in series.notes():
        _say(progress, f"note: {note}")
    _say(progress, f"training on {summary.source}: {summary.steps} steps, features {', '.join(summary.features)}, "
                   f"{summary.values_interpolated} values interpolated, {summary.values_missing} left missing")
    result = run_training(series, config, out_dir, on_epoch, windows)
    history = result.training["history"]
    return TrainResult(
        bundle=result.path, data=summary, metrics=Metrics.from_dict(result.metrics),
        training_seconds=result.training["train_seconds"], epochs_run=history["epochs_run"],
        best_epoch=history["best_epoch"], windows=dict(result.training["split"]["windows"]),
        training=result.training,
    )


@options.keywords(*options.EXPORT_COMMAND)
def export(bundle: str | Path, *, progress: Progress | None = None, **settings: Any) -> ExportResult:
    """Export ONNX (and TFLite, quantized variants) with the scaler in the graph.

    Raises ParityError (carrying its report) and writes nothing when an artifact does not
    give Keras's numbers within 1e-3; a quantized mode that cannot be made is listed in
    `refused` and the rest is written. Files an earlier export wrote and this one did
    not are deleted and listed in `removed`. `target="mcu"` also writes BUNDLE/micro/, a
    TensorFlow Lite Micro build verified in TFLM (`ExportResult.micro`); it makes the two
    files it chooses between, so a refused `tflite-int8` it asked for itself is no error.
    """
    from edgecast.exporter.pipeline import export_bundle

    given = options.values(settings, options.EXPORT_COMMAND)
    quantize = given["quantize"]
    modes = [quantize] if isinstance(quantize, str) else list(quantize)
    return export_bundle(Path(bundle), opset=given["opset"], tflite=given["tflite"], progress=progress or _silent,
                         quantize=modes, builtin_ops=given["builtin_ops"], target=given["target"],
                         max_rmse_change=given["max_rmse_change"])


def verify(bundle: str | Path) -> VerifyResult:
    """Recompute parity of the exported artifacts against scaler + Keras + inverse, measure
    every artifact on the test split, check the files against the manifest, and run a
    microcontroller build the manifest records in TFLM again."""
    from edgecast.exporter.pipeline import verify_bundle

    return verify_bundle(Path(bundle))


def evaluate(
    bundle: str | Path,
    data: str | Path,
    *,
    backtest: int = 0,
    plot: str | Path | None = None,
    plot_size: tuple[int, int] | str = DEFAULT_SIZE,
    plot_start: int | None = None,
    plot_steps: int = STRETCH_STEPS,
    artifact: str | Path | None = None,
    neighbours: Sequence[str | Path] = (),
) -> EvaluateResult:
    """RMSE and MAE per horizon step on the CSV's test split (split with the training
    fractions): the model, persistence, seasonal persistence and ridge.

    `backtest`: also score that many consecutive blocks of the test split. `plot`: write
    forecast-vs-actual and error-by-step as PNG, SVG or PDF (by the file's suffix) of
    `plot_size` pixels; the stretch starts at test window `plot_start` (default: the
    first one without a gap) and runs `plot_steps` steps. `artifact`: score this exported
    file (e.g. the bundle's model.onnx) one window per call, as a hub does, instead of
    the Keras model (the backtest keeps Keras). A model that reads neighbours reads them
    from `neighbours` (default: the files it was trained on); it is scored as trained and
    with every neighbour missing.
    """
    from edgecast.plots import (
        PlotError,
        draw_evaluation,
        first_unbroken_start,
        forecast_stretch,
        parse_size,
        plot_format,
    )
    from edgecast.trainer.bundle import read_bundle
    from edgecast.trainer.evaluation import evaluate_bundle_on_csv

    if plot is not None:  # refused before minutes of work
        plot_format(Path(plot))
        if not Path(plot).parent.is_dir():
            raise PlotError(f"{plot}: the folder {Path(plot).parent} does not exist")
        if plot_steps < 1:
            raise PlotError(f"plot_steps must be at least 1, got {plot_steps}", settings=("plot_steps",))
        try:
            size = parse_size(plot_size) if isinstance(plot_size, str) else parse_size(f"{plot_size[0]}x{plot_size[1]}")
        except ValueError as exc:
            raise PlotError(str(exc)) from None
    model_bundle = read_bundle(bundle)
    if artifact is not None:
        from edgecast.exporter.backends import check_artifact

        check_artifact(Path(artifact), model_bundle.spec)
    evaluation = evaluate_bundle_on_csv(model_bundle, Path(data), backtest,
                                        _artifact_outputs(Path(artifact), model_bundle.spec) if artifact is not None
                                        else None,
                                        list(neighbours))
    if plot is None:
        return EvaluateResult(model_bundle.path, evaluation)
    test_windows = len(evaluation.test_end)
    start = first_unbroken_start(evaluation.test_end, plot_steps) if plot_start is None else plot_start
    if not 0 <= start < test_windows:
        raise PlotError(f"plot_start must be in 0..{test_windows - 1}, got {start}", settings=("plot_start",))
    times = evaluation.times
    stretch = forecast_stretch(evaluation.test_end, evaluation.test_y, evaluation.model_forecast, start, plot_steps,
                               (lambda row: times[row]) if times else (lambda row: row))
    title = f"{model_bundle.name} on {Path(data).name}"
    written = draw_evaluation(Path(plot), evaluation.metrics, stretch, model_bundle.spec.target, title, size,
                              _distribution(evaluation, model_bundle.spec, times))
    return EvaluateResult(model_bundle.path, evaluation, written)


def demo(models_dir: str | Path = MODELS_DIR, *, name: str | None = None, seed: int = DEFAULTS.seed,
         progress: Progress | None = None, on_epoch: EpochHook | None = None) -> DemoResult:
    """The tutorial's model on the embedded 25-value series: train, export, and forecast
    the tutorial's window through Keras, the runtime (ONNX) and LiteRT (TFLite)."""
    from edgecast import tutorial
    from edgecast.exporter.parity import TOLERANCE

    options.check_folder_name(name)
    trained = train_series(tutorial.series(), tutorial.config(seed), Path(models_dir) / (name or tutorial.DEMO_NAME),
                           progress, on_epoch)
    exported = export(trained.bundle, progress=progress)
    forecasts = _backend_forecasts(trained.bundle, tutorial.DEMO_WINDOW)
    return DemoResult(trained, exported, tutorial.DEMO_WINDOW, forecasts, TOLERANCE)


def _backend_forecasts(bundle_dir: Path, window: list[float]) -> dict[str, float]:
    import numpy as np

    from edgecast.exporter.parity import reference_forecast, tflite_forecast
    from edgecast.trainer.bundle import read_bundle
    from edgecast_runtime import Forecaster
    from edgecast_runtime.contract import ONNX_FILE, TFLITE_FILE

    bundle = read_bundle(bundle_dir)
    x = np.asarray(window, np.float32).reshape(1, len(window), 1)
    return {
        "Keras (scaler + model + inverse)": float(reference_forecast(bundle.load_model(), bundle.spec, x)[0, 0]),
        "ONNX Runtime (edgecast-runtime)": float(Forecaster(bundle_dir / ONNX_FILE).predict(window)[0]),
        "TFLite (LiteRT)": float(tflite_forecast(bundle_dir / TFLITE_FILE, x)[0, 0]),
    }


def _distribution(evaluation: Evaluation, spec: Spec, times: list | None) -> DistributionPanels | None:
    """A schema-4 model's fan (at the test split's highest episode) and reliability panels."""
    from edgecast.plots import distribution_panels, fan_at_peak

    if evaluation.intervals is None:
        return None
    fan = None
    if evaluation.model_quantiles is not None:
        fan = fan_at_peak(evaluation.test_end, evaluation.test_y, evaluation.model_forecast, evaluation.model_quantiles,
                          evaluation.test_history, spec.probabilistic.quantiles,
                          (lambda row: times[row]) if times else (lambda row: row))
    return distribution_panels(evaluation.intervals["model"], fan)


def _artifact_outputs(path: Path, spec: Spec) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """The exported file's outputs for raw windows (its forecast, and a schema-4 file's own
    quantiles and probabilities), one window per call as the hub's stream predicts (a batch
    can move float32 results); the file is opened on the first call."""

    def outputs(x: np.ndarray) -> dict[str, np.ndarray]:
        from edgecast.exporter.backends import open_artifact
        from edgecast.exporter.distribution import output_runner

        if spec.probabilistic is None:
            return {"forecast": open_artifact(path).forecast(x, 1)}
        return output_runner(path, spec)(x, 1)

    return outputs


def _say(progress: Progress | None, line: str) -> None:
    if progress is not None:
        progress(line)


def _silent(_: str) -> None:
    """Progress nobody asked for."""
