"""The one table of training, reading and export options.

Each option is written once here: its name (the keyword of the Python API, the field of
TrainConfig, ReadOptions or ExportOptions, and the name library errors use), its type,
default and help. The commands `edgecast train`, `edgecast fleet train` and `edgecast
export` get their typer options from it (edgecast/cli_options.py), and `edgecast.train`,
`edgecast.fleet.train` and `edgecast.export` their keywords and defaults (`keywords`
below), so the four cannot drift apart. Training defaults are TrainConfig's (DEFAULTS),
export defaults ExportOptions' (EXPORT_DEFAULTS).

Library errors name a setting (`max_gap`) and list it in the error's `settings`; the
command line says it as its flag (`--max-gap`) through `as_flags`. Importable without
typer, pandas or TensorFlow.
"""
from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Optional, TypeVar, Union

from edgecast.exporter.settings import EXPORT_DEFAULTS, TARGETS
from edgecast.trainer.settings import CHANGE, DEFAULTS, LEVEL, TrainConfig, split_text

# The panels of --help the options are shown in.
READING, MODEL, NEIGHBOURS, EXPORT = "Reading the file", "Model and training", "Neighbours", "Export"
REQUIRED = inspect.Parameter.empty  # an option without a default must be given


@dataclass(frozen=True)
class Option:
    name: str  # the setting: API keyword, field name, the name errors use
    type: type  # of one value: str, int, float, bool (the command line reads str when `text` is set)
    default: Any  # the Python API's default; REQUIRED: must be given
    help: str
    panel: str
    many: bool = False  # repeatable; a tuple (or any sequence) in Python
    commas: bool = False  # with `many`: comma-separated values are split too
    optional: bool = False  # None is a value: "detected", "not set"
    flag: str | None = None  # when not --name-with-dashes; a bool with a flag has no --no- form
    # A value the command line writes as text: (text -> value, raising ValueError; value -> text).
    text: tuple[Callable[[str], Any], Callable[[Any], str]] | None = None
    python: Any = None  # the Python API's type when not the one `annotation` derives

    @property
    def cli_flag(self) -> str:
        return self.flag or flag_of(self.name)

    def is_default(self, value: Any) -> bool:
        return list(value) == list(self.default) if self.many else value == self.default

    def annotation(self) -> Any:
        """The Python API's type of the value."""
        if self.python is not None:
            return self.python
        kind = tuple[self.type, ...] if self.many else self.type
        return Optional[kind] if self.optional else kind


def flag_of(name: str) -> str:
    """A setting's command-line flag: from the table, else --name-with-dashes."""
    option = _BY_NAME.get(name)
    return option.flag if option is not None and option.flag else "--" + name.replace("_", "-")


def as_flags(message: str, settings: Iterable[str]) -> str:
    """A library message with the settings it names said as flags (`max_gap` -> `--max-gap`)."""
    for name in settings:  # the word alone: not inside a path or file name (models/retrain.plan.json)
        message = re.sub(rf"(?<![\w./-]){re.escape(name)}(?![\w/-])(?!\.\w)", flag_of(name), message)
    return message


def check_folder_name(name: str | None, setting: str = "name") -> None:
    """A bundle's or fleet's name given by hand is one folder: '' would silently mean the
    default, and a path ('../x', 'a/b') would put it outside models_dir."""
    from edgecast.trainer.errors import DataError

    if name is not None and (name.strip() in ("", ".", "..") or "/" in name or "\\" in name):
        raise DataError(f"{setting} {name!r} names a folder in models_dir: give one folder, no '/', not empty, "
                        f"'.' or '..'", settings=(setting,))


def split_list(values: Iterable[str]) -> list[str]:
    """Repeated and comma-separated values as one list."""
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def split_fractions(text: str) -> tuple[float, float, float]:
    """`0.7,0.15,0.15` as three fractions; ValueError otherwise."""
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3:
        raise ValueError(f"'{text}' is not three comma-separated numbers")
    return parts


def split_levels(text: str) -> tuple[float, ...]:
    """`0.05,0.5,0.95` as levels (an empty text: none); ValueError otherwise."""
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"'{text}' is not comma-separated numbers") from None


def _trained(name: str, help: str, panel: str = MODEL, **more: Any) -> Option:
    """A TrainConfig field: its type and default are the dataclass's."""
    default = getattr(DEFAULTS, name)
    kind = type(default) if default is not None else more.pop("type")
    return Option(name, kind, default, help, panel, **more)


READING_OPTIONS = (
    Option("target", str, REQUIRED, "Column to forecast.", READING),
    Option("features", str, (), "Extra input columns (repeat, or comma-separated).", READING, many=True, commas=True),
    Option("time_column", str, None, "Time column(s): one name, date,time, or year,month,day,hour (default: detected).",
           READING, optional=True),
    Option("clock", str, None, "Clock of timestamps without a zone (UTC, +08:00, Asia/Shanghai); recorded for the "
           "runtime's calendar features.", READING, optional=True),
    Option("time_unit", str, None, "Unit of epoch-number times: s or ms (default: by magnitude).", READING, optional=True),
    Option("time_format", str, None, "strptime format of the times, e.g. '%d.%m.%Y %H:%M' (date,time joined by a space).",
           READING, optional=True),
    Option("dayfirst", bool, False, "Numeric dates are day-first (13/03/2013).", READING, flag="--dayfirst"),
    Option("delimiter", str, None, "Field delimiter, e.g. ';' or tab (default: sniffed).", READING, optional=True),
    Option("decimal", str, None, "Decimal mark, '.' or ',' (default: sniffed).", READING, optional=True),
    Option("valid_ranges", str, (), "COLUMN=MIN,MAX: other readings are missing (repeat; a bound may be empty). "
           "Concentrations default to MIN 0.", READING, many=True, flag="--valid-range",
           python=Union[Mapping[str, tuple[Optional[float], Optional[float]]], Sequence[str]]),
    _trained("max_gap", "Longest run of missing steps to interpolate.", READING),
)
TRAINING_OPTIONS = (
    _trained("look_back", "Input steps per window."),
    _trained("horizon", "Steps predicted at once."),
    _trained("units", "LSTM units."),
    _trained("layers", "Stacked LSTM layers."),
    _trained("dropout", "Dropout after each LSTM layer (training only)."),
    _trained("formulation", f"What the network predicts: {CHANGE} or {LEVEL}."),
    _trained("linear_skip", "Add a ridge-initialised linear map of the window to the LSTM's output."),
    _trained("quadratic_skip", "The linear map also reads products of recent readings, changes and means."),
    _trained("linear_fit_with_val", "Fit the linear map on training and validation windows (the test split stays unseen)."),
    _trained("target_units", "Units of the target for tables and plots, e.g. µg/m³.", type=str, optional=True),
    _trained("target_min", "Clip forecasts below this in the graph (default: 0 when no training target is negative).",
             type=float, optional=True),
    _trained("clip_target", "Clip forecasts at --target-min (or 0 for a never-negative target)."),
    _trained("epochs", "Most epochs; early stopping may end sooner."),
    _trained("batch_size", "Training batch size."),
    _trained("patience", "Epochs without validation improvement before stopping."),
    _trained("learning_rate", "Adam learning rate."),
    _trained("seed", "Same seed, same data, same numbers."),
    Option("split", tuple, DEFAULTS.split, "Train,validation,test fractions (chronological).", MODEL,
           text=(split_fractions, split_text)),
)
INTERVALS = "Intervals and alerts"
INTERVAL_OPTIONS = (
    _trained("interval", "Also give a central interval of this coverage per lead (e.g. 0.9), conformalized on the "
             "validation split.", INTERVALS, type=float, optional=True),
    Option("quantiles", tuple, DEFAULTS.quantiles, "Also give these quantile levels per lead (comma-separated, "
           "e.g. 0.05,0.5,0.95).", INTERVALS, text=(lambda text: split_levels(text), lambda levels: ",".join(
               f"{level:g}" for level in levels)), python=tuple[float, ...]),
    Option("alerts", str, DEFAULTS.alerts, "Also give the probability per lead that the target passes a "
           "threshold: TARGET>VALUE or TARGET<VALUE, e.g. 'PM2.5>75' (repeat).", INTERVALS, many=True,
           flag="--alert"),
)
NEIGHBOUR_OPTIONS = (
    Option("neighbour_features", str, (), "The neighbours' columns to read (default: the target).", NEIGHBOURS,
           many=True, commas=True),
    _trained("neighbour_masking", "Silence neighbours at random in training, so the model forecasts without them.",
             NEIGHBOURS),
    _trained("neighbour_fallback", "Also train on the station's own inputs; the graph uses that network when no "
             "neighbour's reading is in the window.", NEIGHBOURS),
)
EXPORT_OPTIONS = (
    Option("opset", int, EXPORT_DEFAULTS.opset, "ONNX opset.", EXPORT),
    Option("tflite", bool, EXPORT_DEFAULTS.tflite, "Also export TFLite float32 (static batch 1).", EXPORT),
    Option("quantize", str, EXPORT_DEFAULTS.quantize, "Also write a quantized artifact (repeat, or comma-separated): "
           "onnx-int8, onnx-static-int8, tflite-fp16, tflite-dynamic-int8, tflite-int8, tflite-int16x8; or auto: "
           "per backend the smallest batch-independent file within --max-rmse-change.", EXPORT, many=True, commas=True),
    Option("builtin_ops", bool, EXPORT_DEFAULTS.builtin_ops, "Also write model.builtin.tflite: builtin ops only, LSTM "
           "unrolled (no Flex ops, control flow or variables), for TFLite Micro and minimal interpreters.", EXPORT),
)
# `edgecast export --max-rmse-change`: the fleet exports with the default budget.
MAX_RMSE_CHANGE = Option("max_rmse_change", float, EXPORT_DEFAULTS.max_rmse_change, "With --quantize auto: the "
                         "largest test-RMSE change a quantized file may cost, percent of the float model's (1%).",
                         EXPORT, text=(lambda text: _percent(text), lambda value: f"{value:g}%"))


def _percent(text: str) -> float:
    """`1%` or `1` as 1.0; ValueError otherwise."""
    try:
        return float(text.strip().removesuffix("%"))
    except ValueError:
        raise ValueError(f"'{text}' is not a percentage such as 1%") from None


# `edgecast export --target`: not shared with the fleet, whose --target is the column to forecast.
EXPORT_TARGET = Option("target", str, EXPORT_DEFAULTS.target, f"{' or '.join(TARGETS)}. hub: the artifacts above. "
                       "mcu: also BUNDLE/micro/, a TensorFlow Lite Micro build (int8 when it keeps test RMSE within 3%, "
                       "else float32 builtin ops) as C++ sources, verified in TFLM with its arena measured.", EXPORT)

# What `edgecast train` and `edgecast.train` take from the table; the fleet takes all of it
# and the export options shared with `edgecast export`.
TRAIN = READING_OPTIONS + TRAINING_OPTIONS + INTERVAL_OPTIONS + NEIGHBOUR_OPTIONS
FLEET = TRAIN + EXPORT_OPTIONS
# `fleet retrain`: its challengers are the archive's stations, each on its own readings.
RETRAIN = READING_OPTIONS + TRAINING_OPTIONS + INTERVAL_OPTIONS + EXPORT_OPTIONS
EXPORT_COMMAND = EXPORT_OPTIONS + (MAX_RMSE_CHANGE, EXPORT_TARGET)
TRAIN_CONFIG_FIELDS = frozenset(f.name for f in fields(TrainConfig))

# A new station started from a fleet's global model (`train --from`, edgecast.start_from):
# the fleet decides the target, so it may be left out. `edgecast train`'s --target is
# therefore optional on the command line and required there without --from.
_TARGET_FROM_FLEET = replace(READING_OPTIONS[0], default=None, optional=True,
                             help="Column to forecast (required, except with --from: the fleet's).")
START_FROM = (_TARGET_FROM_FLEET,) + READING_OPTIONS[1:]
TRAIN_COMMAND = START_FROM + TRAIN[len(READING_OPTIONS):]
_BY_NAME = {option.name: option for option in FLEET}


def values(given: Mapping[str, Any], options: Iterable[Option]) -> dict[str, Any]:
    """Every option's value: as given, else its default."""
    return {option.name: given.get(option.name, option.default) for option in options}


def train_config(given: Mapping[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """TrainConfig from the training options given; the others from `base` (default: DEFAULTS)."""
    from dataclasses import replace

    chosen = {name: value for name, value in given.items() if name in TRAIN_CONFIG_FIELDS}
    for name in ("split", "quantiles", "alerts"):
        if name in chosen:
            chosen[name] = tuple(chosen[name])
    return replace(base or TrainConfig(), **chosen)


F = TypeVar("F", bound=Callable[..., Any])


def keywords(*options: Option) -> Callable[[F], F]:
    """A Python API function taking `**options`: its signature shows every option of the
    table with its default (help(), inspect), and a keyword that is neither one of them
    nor a parameter of the function is a TypeError, as for any function."""
    def decorate(function: F) -> F:
        own = inspect.signature(function)
        params = [p for p in own.parameters.values() if p.kind is not p.VAR_KEYWORD]
        explicit = {p.name for p in params}
        known = explicit | {option.name for option in options}
        table = [inspect.Parameter(option.name, inspect.Parameter.KEYWORD_ONLY, default=option.default,
                                   annotation=option.annotation())
                 for option in options if option.name not in explicit]
        first_keyword = next((i for i, p in enumerate(params) if p.kind is p.KEYWORD_ONLY), len(params))
        params[first_keyword:first_keyword] = table  # after the positional parameters

        @functools.wraps(function)
        def checked(*args: Any, **kwargs: Any) -> Any:
            for name in kwargs:
                if name not in known:
                    raise TypeError(f"{function.__name__}() got an unexpected keyword argument {name!r}")
            return function(*args, **kwargs)

        checked.__signature__ = own.replace(parameters=params)
        return checked  # type: ignore[return-value]

    return decorate
