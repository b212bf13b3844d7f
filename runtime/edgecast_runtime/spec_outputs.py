"""The spec's `probabilistic` part (schema 4): which quantiles and exceedance
probabilities the graph gives beside the point forecast (docs/graph-contract.md,
*Quantiles and exceedance probabilities*).

    "probabilistic": {"quantiles": [0.05, 0.5, 0.95], "interval": 0.9,
                      "alerts": [{"name": "PM2.5>75", "column": "PM2.5", "op": ">", "threshold": 75.0}]}

`quantiles` are the levels of the `quantiles` output's last axis, strictly increasing
in (0, 1); `interval` is the nominal coverage of the central interval whose bounds are
the levels (1 - interval) / 2 and (1 + interval) / 2, both listed (null: no interval is
claimed); `alerts` are the `exceedance` output's last axis, in order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple

from .contract import ALERT_OPERATORS, PROBABILISTIC_SCHEMA_VERSION
from .spec_parts import Keys, SpecError, _extras, _keys, emit

LEVEL_TOLERANCE = 1e-9  # a listed level equals (1 ± interval) / 2 within this
MAX_QUANTILES = 99
MAX_ALERTS = 32


@dataclass(frozen=True)
class Alert:
    """P(`column` `op` `threshold`) per lead; `name` is how answers and alerts call it."""

    name: str
    column: str
    op: str
    threshold: float
    key_order: Keys = _keys()
    extras: Mapping[str, Any] = _extras()

    def exceeded(self, value: float) -> bool:
        return value > self.threshold if self.op == ">" else value < self.threshold

    def to_dict(self) -> dict:
        return emit((("name", self.name, True), ("column", self.column, True), ("op", self.op, True),
                     ("threshold", self.threshold, True)), self.key_order, self.extras)


@dataclass(frozen=True)
class Probabilistic:
    """The quantile levels, the interval's coverage and the alerts of a schema-4 graph."""

    quantiles: Tuple[float, ...] = ()
    interval: Optional[float] = None
    alerts: Tuple[Alert, ...] = ()
    key_order: Keys = _keys()
    extras: Mapping[str, Any] = _extras()

    @property
    def interval_indices(self) -> Optional[Tuple[int, int]]:
        """The positions in `quantiles` of the interval's lower and upper bound."""
        if self.interval is None:
            return None
        return _level_index(self.quantiles, (1 - self.interval) / 2), _level_index(self.quantiles,
                                                                                     (1 + self.interval) / 2)

    def to_dict(self) -> dict:
        return emit((("quantiles", self.quantiles, True), ("interval", self.interval, True),
                     ("alerts", self.alerts, True)), self.key_order, self.extras)


def _level_index(levels: Tuple[float, ...], level: float) -> int:
    return next(i for i, value in enumerate(levels) if abs(value - level) <= LEVEL_TOLERANCE)


def _fail(problem: str) -> None:
    raise SpecError(f"has 'probabilistic' {problem}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_probabilistic(declared: Any, target: str, version: str) -> Optional[Probabilistic]:
    """The `probabilistic` part checked: SpecError names the first problem."""
    if declared is None:
        return None
    if int(version) < PROBABILISTIC_SCHEMA_VERSION:
        raise SpecError(f"declares quantiles or alerts ('probabilistic'), which need schema version "
                        f"{PROBABILISTIC_SCHEMA_VERSION}")
    if not isinstance(declared, dict):
        _fail("that is not an object")
    levels = declared.get("quantiles", [])
    if (not isinstance(levels, list) or len(levels) > MAX_QUANTILES or not all(_is_number(q) and 0 < q < 1
                                                                                for q in levels)):
        _fail(f"with 'quantiles' that are not at most {MAX_QUANTILES} levels in (0, 1)")
    if any(later <= earlier for earlier, later in zip(levels, levels[1:])):
        _fail(f"with 'quantiles' {levels} that are not strictly increasing")
    interval = declared.get("interval")
    if interval is not None:
        if not _is_number(interval) or not 0 < interval < 1:
            _fail(f"with 'interval' {interval!r}; expected a coverage in (0, 1) or null")
        for bound in ((1 - interval) / 2, (1 + interval) / 2):
            if not any(abs(q - bound) <= LEVEL_TOLERANCE for q in levels):
                _fail(f"with 'interval' {interval} but no quantile level {bound:g} among {levels}")
    alerts = declared.get("alerts", [])
    if not isinstance(alerts, list) or len(alerts) > MAX_ALERTS:
        _fail(f"with 'alerts' that are not a list of at most {MAX_ALERTS}")
    read = tuple(_alert(index, entry, target) for index, entry in enumerate(alerts))
    if len({alert.name for alert in read}) != len(read):
        _fail("with two alerts of the same name")
    if not levels and not read:
        _fail("with neither quantiles nor alerts")
    extras = {key: value for key, value in declared.items() if key not in ("quantiles", "interval", "alerts")}
    return Probabilistic(tuple(float(q) for q in levels), None if interval is None else float(interval), read,
                         tuple(declared), extras)


def _alert(index: int, entry: Any, target: str) -> Alert:
    if not isinstance(entry, dict):
        _fail(f"with alerts[{index}] that is not an object")
    name, column, op, threshold = (entry.get(key) for key in ("name", "column", "op", "threshold"))
    if not isinstance(name, str) or not name or len(name) > 100:
        _fail(f"with alerts[{index}] without a 'name' (1-100 characters)")
    if column != target:
        _fail(f"with alerts[{index}] on column {column!r}; alerts are on the target {target!r}")
    if op not in ALERT_OPERATORS:
        _fail(f"with alerts[{index}] 'op' {op!r}; expected one of {', '.join(ALERT_OPERATORS)}")
    if not _is_number(threshold):
        _fail(f"with alerts[{index}] 'threshold' {threshold!r}; expected a finite number")
    extras = {key: value for key, value in entry.items() if key not in ("name", "column", "op", "threshold")}
    return Alert(name, column, op, float(threshold), tuple(entry), extras)
