"""Spec.from_dict: the preprocessing spec's JSON checked and read into a Spec.

Every check the runtime makes before it trusts a model's spec is here, in the order a
reader meets the problems, so the first message names the first problem. A SpecError
carries the problem alone ("has 'look_back' 0, ..."); the caller says where it was
(the runtime: "MODEL: edgecast.spec has ...", the toolkit: "BUNDLE/preprocessing.json: ...").

The bounds below are the runtime's: trial.py, which runs in a child process
without this package, keeps copies (tests/runtime/test_spec.py holds them equal).
"""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any, List, NoReturn, Optional

from .clock import UNITS, ClockError, parse_clock
from .contract import (
    CALENDAR_PERIODS,
    CALM_DEGREES,
    CYCLIC,
    DIRECTION,
    KINDS,
    MASKED,
    NEIGHBOUR_SCHEMA_VERSION,
    NUMERIC,
    SUPPORTED_SCHEMA_VERSIONS,
)
from .spec import (
    Encoding,
    Fill,
    Formulation,
    GapPolicy,
    Neighbour,
    Scaler,
    Spec,
    SpecError,
    SpecTimeFormat,
    TensorInfo,
    ValidRange,
    freeze,
)
from .spec_outputs import read_probabilistic

# Bounds on what a model's metadata may ask for. The fixtures and real exports are far
# below them (look_back 4-168, a few features).
MAX_LOOK_BACK = 10_000
MAX_HORIZON = 10_000
MAX_FEATURES = 1_000
MAX_WINDOW_VALUES = 100_000  # look_back x features: the buffer, the state file, each request
TIME_FORMAT = "time_format"
# The keys of the spec this runtime knows; others are kept as they are (Spec.extras).
SPEC_KEYS = ("schema_version", "target", "features", "look_back", "horizon", "interval_seconds", "time_columns",
             "scaler", "gap_policy", "input", "output", "encodings", "encoded_features", "target_formulation",
             "target_units", "clock", "valid_ranges", TIME_FORMAT, "target_min", "neighbours", "probabilistic")


def fail(problem: str, setting: str | tuple[str, ...] = ()) -> NoReturn:
    raise SpecError(problem, setting=setting)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(name, str) for name in value)


def _parts(data: dict, known: tuple) -> dict:
    """key_order and extras of a part read from `data`."""
    return {"key_order": tuple(data),
            "extras": MappingProxyType({key: freeze(value) for key, value in data.items() if key not in known})}


def _tuple(value: Any) -> Any:
    return freeze(value) if isinstance(value, list) else value


def read_spec(data: object, version: Optional[str]) -> Spec:
    """Spec.from_dict (see Spec): SpecError names the first problem found."""
    if not isinstance(data, dict):
        fail("is not a JSON object")
    if version is None:
        _check_bundle_spec(data)
        version = str(data["schema_version"])
    features = data.get("features")
    if not isinstance(features, list) or not features or not all(isinstance(f, str) and f for f in features):
        fail("needs 'features', a non-empty list of names")
    if "target" in data and data["target"] != features[0]:
        fail(f"has target {data['target']!r} but features[0] is {features[0]!r}")
    for key, most in (("look_back", MAX_LOOK_BACK), ("horizon", MAX_HORIZON)):
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            fail(f"needs '{key}', a positive integer (got {_short(value)})")
        if value > most:
            fail(f"has '{key}' {value}, more than the {most} this runtime accepts")
    look_back, horizon = data["look_back"], data["horizon"]
    if len(features) > MAX_FEATURES or look_back * len(features) > MAX_WINDOW_VALUES:
        fail(f"asks for a window of {look_back} x {len(features)} values; this runtime "
             f"accepts at most {MAX_FEATURES} features and {MAX_WINDOW_VALUES} values")
    interval = data.get("interval_seconds")
    if interval is not None and (not _is_number(interval) or not math.isfinite(interval) or interval <= 0):
        fail(f"has 'interval_seconds' {interval!r}; expected a positive number or null")
    for role in ("input", "output"):
        block = data.get(role, {})
        if not isinstance(block, dict) or not isinstance(block.get("name", ""), str):
            fail(f"has a malformed '{role}' block")
    tensors = {role: _tensor(data, role, tail) for role, tail in
               (("input", [look_back, len(features)]), ("output", [horizon]))}
    clock = data.get("clock")
    if clock is not None:
        try:
            if not isinstance(clock, str):
                raise ClockError("expected a string such as UTC, +08:00 or Asia/Shanghai")
            parse_clock(clock)
        except ClockError as exc:
            fail(f"has 'clock' {clock!r}: {exc}; give clock to override it", setting="clock")
    encodings = data.get("encodings")
    if encodings is None and version != "1":
        fail(f"is schema {version} but has no 'encodings'")
    read = None if encodings is None else _encodings(encodings, features)
    kinds = [NUMERIC] * len(features) if read is None else [e.kind for e in read]
    if version == "1" and any(kind != NUMERIC for kind in kinds):
        fail("declares direction or calendar encodings, which need schema version 2")
    if MASKED in kinds and int(version) < NEIGHBOUR_SCHEMA_VERSION:
        fail(f"declares neighbours' readings (masked), which need schema version {NEIGHBOUR_SCHEMA_VERSION}")
    columns = sum(1 if kind == NUMERIC else 2 for kind in kinds)
    encoded = data.get("encoded_features")
    if encoded is not None:
        if not _is_names(encoded):
            fail("has 'encoded_features' that is not a list of names")
        if len(encoded) != columns:
            fail(f"lists {len(encoded)} encoded_features, but its encodings make {columns} columns")
    # In this order, as a reader of the spec meets them.
    scaler = _scaler(data.get("scaler"), columns)
    formulation, units = _formulation(data), _units(data)
    gap_policy = _gap_policy(data.get("gap_policy"), features)
    time_columns, time_format = _time_columns(data), _time_format(data.get(TIME_FORMAT))
    valid_ranges, neighbours = _valid_ranges(data.get("valid_ranges")), _neighbours(data.get("neighbours"))
    return Spec(
        schema_version=data.get("schema_version"), target=data.get("target"), features=tuple(features),
        look_back=look_back, horizon=horizon, interval_seconds=interval, time_columns=time_columns, scaler=scaler,
        gap_policy=gap_policy, input=tensors["input"], output=tensors["output"], encodings=read,
        encoded_features=_tuple(encoded), target_formulation=formulation, target_units=units, clock=clock,
        valid_ranges=valid_ranges, time_format=time_format, target_min=data.get("target_min"),
        neighbours=neighbours, probabilistic=read_probabilistic(data.get("probabilistic"), features[0], version),
        **_parts(data, SPEC_KEYS))


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _is_numbers(value: object, length: int) -> bool:
    return (isinstance(value, list) and len(value) == length
            and all(_is_number(v) and math.isfinite(v) for v in value))


def _check_bundle_spec(data: dict) -> None:
    """What the toolkit needs of a bundle's spec beyond the runtime's checks: a version it
    reads, and the scaler it rebuilds (types and lengths, so that a damaged spec fails
    here and not deep in a converter)."""
    if data.get("schema_version") not in SUPPORTED_SCHEMA_VERSIONS:
        readable = ", ".join(str(v) for v in SUPPORTED_SCHEMA_VERSIONS)
        fail(f"schema version {data.get('schema_version')!r}, this edgecast reads {readable}")
    for key in ("target", "features", "look_back", "horizon", "scaler"):
        if key not in data:
            fail(f"missing key '{key}'")
    features = data["features"]
    if not isinstance(data["target"], str) or not (isinstance(features, list) and features and _is_names(features)):
        fail("'target' must be a column name and 'features' a non-empty list of names")
    for key in ("look_back", "horizon"):
        if not _is_count(data[key]):
            fail(f"'{key}' must be a whole number of at least 1, got {data[key]!r}")
    encoded = data.get("encoded_features")
    columns = len(encoded) if isinstance(encoded, list) else len(features)
    scaler = data["scaler"]
    if not isinstance(scaler, dict):
        fail(f"'scaler' must be an object, got {scaler!r}")
    for key, length in (("data_min", columns), ("data_max", columns), ("feature_range", 2)):
        if not _is_numbers(scaler.get(key), length):
            fail(f"'scaler.{key}' must be a list of {length} finite numbers, got {scaler.get(key)!r}")


def _tensor(data: dict, role: str, tail: List[int]) -> Optional[TensorInfo]:
    """The input or output block; its declared shape (when present) must agree with the
    spec's look_back, feature count and horizon."""
    block = data.get(role, {})
    shape = block.get("shape")
    if shape is not None and (not isinstance(shape, list) or list(shape[1:]) != tail):
        fail(f"declares {role} shape {shape!r}, inconsistent with "
             f"{['batch'] + tail} from its look_back, features and horizon")
    if role not in data:
        return None
    return TensorInfo(block.get("name"), block.get("dtype"), _tuple(shape), block.get("units"),
                      **_parts(block, ("name", "dtype", "shape", "units")))


def _encodings(encodings: Any, features: list) -> tuple:
    if not isinstance(encodings, list) or len(encodings) != len(features):
        fail(f"needs 'encodings', one per feature ({len(features)})")
    return tuple(_encoding(index, entry, name) for index, (entry, name) in enumerate(zip(encodings, features)))


def _encoding(index: int, entry: Any, name: str) -> Encoding:
    if not isinstance(entry, dict) or entry.get("feature") != name:
        fail(f"encodings[{index}] must describe feature {name!r} (features order)")
    kind = entry.get("kind")
    if kind not in KINDS:
        fail(f"encodings[{index}] ({name}) has kind {kind!r}; this runtime knows {list(KINDS)}")
    if kind == CYCLIC:
        period = CALENDAR_PERIODS.get(name)
        if period is None:
            fail(f"encodings[{index}]: calendar feature {name!r} is unknown to this runtime "
                 f"(it derives {', '.join(CALENDAR_PERIODS)})")
        if entry.get("period") != period:
            fail(f"encodings[{index}] ({name}) has period {entry.get('period')!r}, expected {period}")
    fill = entry.get("fill")
    if kind == MASKED and not (isinstance(entry.get("station"), str) and isinstance(fill, dict)):
        fail(f"encodings[{index}] ({name}) is a neighbour's reading without its 'station' and 'fill'")
    if kind == DIRECTION:
        calm = entry.get("calm_value", CALM_DEGREES)
        if not _is_number(calm) or not calm < 0:
            fail(f"encodings[{index}] ({name}) has calm_value {calm!r}; expected a negative number")
    columns = entry.get("columns")
    if columns is not None and not _is_names(columns):
        fail(f"encodings[{index}] ({name}) has 'columns' {_short(columns)}; expected a list of names")
    if fill is not None and not isinstance(fill, dict):
        fail(f"encodings[{index}] ({name}) has 'fill' {_short(fill)}; expected an object")
    known = ("feature", "kind", "columns", "period", "station", "reading", "raw", "calm_value", "fill")
    return Encoding(name, kind, _tuple(columns), entry.get("period"), entry.get("station"), entry.get("reading"),
                    entry.get("raw"), entry.get("calm_value"),
                    None if fill is None else Fill(fill.get("column"), fill.get("value"),
                                                   **_parts(fill, ("column", "value"))),
                    **_parts(entry, known))


def _scaler(scaler: Any, columns: int) -> Optional[Scaler]:
    if scaler is None:
        return None
    if not isinstance(scaler, dict):
        fail(f"has 'scaler' {_short(scaler)}; expected an object")
    for key in ("data_min", "data_max"):
        values = scaler.get(key)
        if isinstance(values, list) and len(values) != columns:
            fail(f"has scaler.{key} of {len(values)} values for {columns} model columns")
    for key in ("feature_range", "data_min", "data_max"):
        if scaler.get(key) is not None and not isinstance(scaler[key], list):
            fail(f"has scaler.{key} {_short(scaler[key])}; expected a list of numbers")
    return Scaler(scaler.get("kind"), _tuple(scaler.get("feature_range")), _tuple(scaler.get("data_min")),
                  _tuple(scaler.get("data_max")), **_parts(scaler, ("kind", "feature_range", "data_min", "data_max")))


def _formulation(data: dict) -> Optional[Formulation]:
    formulation = data.get("target_formulation")
    if formulation is None:
        return None
    if not (isinstance(formulation, dict) and isinstance(formulation.get("kind"), str)):
        fail("has a malformed 'target_formulation' (expected an object with a 'kind')")
    step_scale = formulation.get("step_scale")
    if step_scale is not None and not isinstance(step_scale, list):
        fail(f"has target_formulation.step_scale {_short(step_scale)}; expected a list of numbers")
    return Formulation(formulation["kind"], _tuple(step_scale), **_parts(formulation, ("kind", "step_scale")))


def _units(data: dict) -> Optional[str]:
    units = data.get("target_units")
    if units is not None and not isinstance(units, str):
        fail(f"has 'target_units' {units!r}; expected text or null")
    return units


def _gap_policy(gap: Any, features: list) -> Optional[GapPolicy]:
    if gap is not None and not isinstance(gap, dict):
        fail(f"has 'gap_policy' {_short(gap)}; expected an object")
    hold = gap.get("hold_last", []) if gap is not None else []
    if not _is_names(hold):
        fail("has a malformed gap_policy.hold_last (expected a list of feature names)")
    unknown = [name for name in hold if name not in features]
    if unknown:
        fail(f"has gap_policy.hold_last {unknown} that are not features")
    if gap is None:
        return None
    return GapPolicy(gap.get("max_gap"), gap.get("method"), _tuple(gap.get("hold_last")),
                     **_parts(gap, ("max_gap", "method", "hold_last")))


def _time_columns(data: dict) -> Optional[tuple]:
    time_columns = data.get("time_columns")
    if time_columns is not None and not _is_names(time_columns):
        fail("has malformed 'time_columns' (expected a list of column names)")
    return _tuple(time_columns)


def _time_format(value: Any) -> Optional[SpecTimeFormat]:
    """The optional `time_format` (clock.TimeFormat): how the training file wrote its times."""
    if value is None:
        return None
    if not isinstance(value, dict):
        fail(f"has '{TIME_FORMAT}' must be an object")
    unit, text, dayfirst = value.get("unit"), value.get("format"), value.get("dayfirst")
    if unit is not None and unit not in UNITS:
        fail(f"has '{TIME_FORMAT}.unit' {unit!r} is not one of {list(UNITS)}")
    if text is not None and not isinstance(text, str):
        fail(f"has '{TIME_FORMAT}.format' must be text")
    if dayfirst is not None and not isinstance(dayfirst, bool):
        fail(f"has '{TIME_FORMAT}.dayfirst' must be true, false or null")
    return SpecTimeFormat(unit, text, dayfirst, **_parts(value, ("unit", "format", "dayfirst")))


def _valid_ranges(declared: Any) -> Optional[MappingProxyType]:
    """`valid_ranges`: {raw feature name: [min or null, max or null]} (validity.py)."""
    if declared is None:
        return None
    if not isinstance(declared, dict):
        fail(f"has 'valid_ranges' {_short(declared)}; expected an object mapping a feature "
             f"name to [min, max] (either may be null)")
    ranges = {}
    for name, pair in declared.items():
        if not isinstance(pair, list) or len(pair) != 2:
            fail(f"has valid_ranges[{name!r}] {_short(pair)}; expected [min, max] (either may be null)")
        if any(bound is not None and (not _is_number(bound) or not math.isfinite(bound)) for bound in pair):
            fail(f"has valid_ranges[{name!r}] {_short(pair)}; each bound must be a finite number or null")
        low, high = pair
        if low is not None and high is not None and low > high:
            fail(f"has valid_ranges[{name!r}] {_short(pair)}: the minimum is above the maximum")
        ranges[name] = ValidRange(low, high)
    return MappingProxyType(ranges)


def _neighbours(declared: Any) -> Optional[tuple]:
    """`neighbours`: {station: [reading, ...]} of a schema-3 model."""
    if declared is None:
        return None
    if not isinstance(declared, dict) or not all(_is_names(readings) for readings in declared.values()):
        fail(f"has 'neighbours' {_short(declared)}; expected an object mapping a station to a list "
             f"of readings")
    return tuple(Neighbour(station, tuple(readings)) for station, readings in declared.items())
