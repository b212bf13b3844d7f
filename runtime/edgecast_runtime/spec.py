"""The preprocessing spec of the graph contract (docs/graph-contract.md), typed.

`Spec.from_dict` reads and validates the JSON of a model's `edgecast.spec` metadata or
a bundle's preprocessing.json (the checks are in spec_checks.py); `Spec.to_dict` gives
that JSON back exactly: the keys in the order read, absent keys absent, nulls null,
numbers as written, and keys this runtime does not know kept (readers ignore them, so
the toolkit can add information without a schema bump). The trainer builds a Spec with
the constructors below; nothing else reads the spec as a dict.

Each part keeps `key_order` (the keys as read, None when built in code: then the keys
are written in the toolkit's order) and `extras` (keys it does not know).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, List, Mapping, Optional, Tuple

from .clock import TimeFormat, parse_clock
from .contract import INPUT_NAME, NUMERIC, OUTPUT_NAME
from .encodings import InputLayout
from .spec_outputs import Probabilistic
from .spec_parts import Keys, SpecError, _extras, _keys, emit, freeze, thaw  # noqa: F401 (the spec's API)
from .validity import ValidRanges

if TYPE_CHECKING:
    from datetime import tzinfo

LEVEL = "level"  # target_formulation.kind: the MinMax inverse of the target column
CHANGE = "change_from_last"  # the window's last target value + output * step_scale

@dataclass(frozen=True)
class Scaler:
    """MinMaxScaler parameters of the model columns (`encoded_features` order)."""

    kind: Optional[str] = "minmax"
    feature_range: Optional[Tuple[float, ...]] = None
    data_min: Optional[Tuple[float, ...]] = None
    data_max: Optional[Tuple[float, ...]] = None
    key_order: Keys = _keys()
    extras: Mapping[str, Any] = _extras()

    def to_dict(self) -> dict:
        return emit((("kind", self.kind, True), ("feature_range", self.feature_range, True),
                     ("data_min", self.data_min, True), ("data_max", self.data_max, True)),
                    self.key_order, self.extras)


@dataclass(frozen=True)
class GapPolicy:
    """How the trainer filled gaps: interpolation up to `max_gap` steps, except the
    `hold_last` features (wind directions), which repeat their last value."""

    max_gap: Optional[int] = None
    method: Optional[str] = "linear"
    hold_last: Optional[Tuple[str, ...]] = None
    key_order: Keys = _keys()
    extras: Mapping[str, Any] = _extras()

    def to_dict(self) -> dict:
        return emit((("max_gap", self.max_gap, True), ("method", self.method, True),
                     ("hold_last", self.hold_last, True)), self.key_order, self.extras)


@dataclass(frozen=True)
class TensorInfo:
    """The spec's description of the graph's input or output tensor."""

    name: Optional[str] = None
    dtype: Optional[str] = "float32"
    shape: Optional[Tuple[Any, ...]] = None  # ("batch", look_back, n_features) or ("batch", horizon)
    units: Optional[str] = "raw"
    key_order: Keys = _keys()
    extras: Mapping[str, Any] = _extras()

    def to_dict(self) -> dict:
        return emit((("name", self.name, True), ("dtype", self.dtype, True), ("shape", self.shape, True),
                     ("units", self.units, True)), self.key_order, self.extras)


@dataclass(frozen=True)
class Fill:
    """What stands in for a neighbour's missing reading: raw feature `column` of the same
    row, or the constant `value`."""

    column: Optional[int] = None
    value: Optional[float] = None
    key_order: Keys = _keys()
    extras: Mapping[str, Any] = _extras()

    def to_dict(self) -> dict:
        return emit((("column", self.column, False), ("value", self.value, False)), self.key_order, self.extras)


@dataclass(frozen=True)
class Encoding:
    """How one raw feature becomes model columns (docs/graph-contract.md, *Input encodings*):
    `numeric`, `direction` (calm_value), `cyclic` (period) or `masked` (station, reading, fill)."""

    feature: str
    kind: str
    columns: Optional[Tuple[str, ...]] = None
    period: Optional[int] = None
    station: Optional[str] = None
    reading: Optional[str] = None
    raw: Optional[str] = None  # what the hub sends, in words
    calm_value: Optional[float] = None
    fill: Optional[Fill] = None
    key_order: Keys = _keys()
    extras: Mapping[str, Any] = _extras()

    def to_dict(self) -> dict:
        return emit((("feature", self.feature, True), ("kind", self.kind, True), ("period", self.period, False),
                     ("station", self.station, False), ("reading", self.reading, False), ("raw", self.raw, False),
                     ("calm_value", self.calm_value, False), ("fill", self.fill, False),
                     ("columns", self.columns, True)), self.key_order, self.extras)


@dataclass(frozen=True)
class Formulation:
    """What the network's output means (`target_formulation`): LEVEL or CHANGE."""

    kind: str = LEVEL
    step_scale: Optional[Tuple[float, ...]] = None  # CHANGE: the raw change per unit output, per step
    key_order: Keys = _keys()
    extras: Mapping[str, Any] = _extras()

    def to_dict(self) -> dict:
        return emit((("kind", self.kind, True), ("step_scale", self.step_scale, False)), self.key_order, self.extras)


@dataclass(frozen=True)
class ValidRange:
    """The readings of a feature the model was trained on: [low, high], either None (open)."""

    low: Optional[float] = None
    high: Optional[float] = None

    def to_dict(self) -> list:
        return [self.low, self.high]


@dataclass(frozen=True)
class Neighbour:
    """A neighbouring station and the readings of it the model reads."""

    station: str
    readings: Tuple[str, ...]


@dataclass(frozen=True)
class SpecTimeFormat:
    """How the training file wrote its times (`time_format`; see clock.TimeFormat)."""

    unit: Optional[str] = None
    format: Optional[str] = None
    dayfirst: Optional[bool] = None
    key_order: Keys = _keys()
    extras: Mapping[str, Any] = _extras()

    @classmethod
    def recording(cls, time_format: Optional[TimeFormat]) -> Optional[SpecTimeFormat]:
        """What the spec records of `time_format`: nothing for the default (ISO 8601)."""
        if time_format is None or time_format == TimeFormat():
            return None
        return cls(time_format.unit, time_format.format, time_format.dayfirst)

    def as_time_format(self) -> TimeFormat:
        return TimeFormat(self.unit, self.format, self.dayfirst)

    def to_dict(self) -> dict:
        return emit((("unit", self.unit, True), ("format", self.format, True), ("dayfirst", self.dayfirst, True)),
                    self.key_order, self.extras)


@dataclass(frozen=True)
class Spec:
    """The preprocessing spec. `from_dict(data, version)` validates (SpecError names the
    problem); `version` is the schema version a model's metadata declares, None for a
    bundle's preprocessing.json, which must then also have what the toolkit needs."""

    schema_version: int  # as recorded; a model's metadata version is the one the runtime goes by
    target: Optional[str]  # None: not recorded, features[0] (see target_name)
    features: Tuple[str, ...]
    look_back: int
    horizon: int
    interval_seconds: Optional[float] = None
    time_columns: Optional[Tuple[str, ...]] = None
    scaler: Optional[Scaler] = None
    gap_policy: Optional[GapPolicy] = None
    input: Optional[TensorInfo] = None
    output: Optional[TensorInfo] = None
    encodings: Optional[Tuple[Encoding, ...]] = None
    encoded_features: Optional[Tuple[str, ...]] = None
    target_formulation: Optional[Formulation] = None
    target_units: Optional[str] = None
    clock: Optional[str] = None  # of the training timestamps: UTC, +08:00, a zone name
    valid_ranges: Optional[Mapping[str, ValidRange]] = None
    time_format: Optional[SpecTimeFormat] = None
    target_min: Optional[float] = None  # the graph's lower clip of the forecast
    neighbours: Optional[Tuple[Neighbour, ...]] = None
    probabilistic: Optional[Probabilistic] = None  # schema 4: quantiles and exceedance outputs
    key_order: Keys = _keys()
    extras: Mapping[str, Any] = _extras()

    @classmethod
    def from_dict(cls, data: object, version: Optional[str] = None) -> Spec:
        from .spec_checks import read_spec

        return read_spec(data, version)

    def to_dict(self) -> dict:
        neighbours = (None if self.neighbours is None
                      else {n.station: list(n.readings) for n in self.neighbours})
        return emit((
            ("schema_version", self.schema_version, True), ("target", self.target, True),
            ("features", self.features, True), ("look_back", self.look_back, True), ("horizon", self.horizon, True),
            ("interval_seconds", self.interval_seconds, True), ("time_columns", self.time_columns, True),
            ("scaler", self.scaler, True), ("gap_policy", self.gap_policy, True), ("input", self.input, True),
            ("output", self.output, True), ("encodings", self.encodings, True),
            ("encoded_features", self.encoded_features, True),
            ("target_formulation", self.target_formulation, True), ("target_units", self.target_units, True),
            ("clock", self.clock, True), ("valid_ranges", self.valid_ranges, False),
            ("time_format", self.time_format, False), ("target_min", self.target_min, False),
            ("neighbours", neighbours, False), ("probabilistic", self.probabilistic, False)),
            self.key_order, self.extras)

    # --- what the parts mean, with the defaults of older specs ----------------------

    @property
    def target_name(self) -> str:
        """The forecast's column: `target`, else features[0] (which it always is)."""
        return self.target if self.target is not None else self.features[0]

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def input_name(self) -> str:
        return self.input.name if self.input is not None and self.input.name is not None else INPUT_NAME

    @property
    def output_name(self) -> str:
        return self.output.name if self.output is not None and self.output.name is not None else OUTPUT_NAME

    @property
    def feature_encodings(self) -> Tuple[Encoding, ...]:
        """One encoding per feature; a spec from before encodings existed has numeric ones."""
        if self.encodings:
            return self.encodings
        return tuple(Encoding(name, NUMERIC, (name,)) for name in self.features)

    @property
    def kinds(self) -> List[str]:
        """The encoding kind of each feature, in features order."""
        return [encoding.kind for encoding in self.feature_encodings]

    @property
    def model_columns(self) -> Tuple[str, ...]:
        """The columns the network reads (what `scaler` describes)."""
        return self.encoded_features or self.features

    @property
    def formulation(self) -> Formulation:
        return self.target_formulation or Formulation(LEVEL)

    @property
    def hold_last(self) -> Tuple[str, ...]:
        return (self.gap_policy.hold_last or ()) if self.gap_policy is not None else ()

    @property
    def max_gap(self) -> Optional[int]:
        return self.gap_policy.max_gap if self.gap_policy is not None else None

    @property
    def data_clock(self) -> Optional[tzinfo]:
        """The training data's clock, or None when the spec records none (older bundles,
        data without timestamps): then UTC unless --clock says otherwise."""
        return parse_clock(self.clock) if self.clock is not None else None

    @property
    def times(self) -> TimeFormat:
        """How the training file wrote its times (the default: ISO 8601 only)."""
        return self.time_format.as_time_format() if self.time_format is not None else TimeFormat()

    def layout(self) -> InputLayout:
        """The raw columns of the model's window, as the runtime fills them."""
        return InputLayout(list(self.features), self.kinds, self.hold_last, self.time_columns or (), self.times)

    def reading_ranges(self, layout: InputLayout) -> ValidRanges:
        """The valid ranges of the model's features (names it does not read are ignored)."""
        bounds = {}
        for name, bound in (self.valid_ranges or {}).items():
            if name in layout.features and (bound.low is not None or bound.high is not None):
                bounds[layout.features.index(name)] = (None if bound.low is None else float(bound.low),
                                                       None if bound.high is None else float(bound.high))
        return ValidRanges(layout, bounds)
