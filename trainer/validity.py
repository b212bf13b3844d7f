"""Readings a sensor could not have made, treated as missing before training.

Two rules, both counted per column and reason:
- sentinels: the codes station exports write for "no value" (SENTINELS), in any
  numeric column; 999 and 999.9 are not among them, since they are real pressures
  in hPa;
- valid ranges: `--valid-range COLUMN=MIN,MAX` (either bound may be empty); by
  default a pollutant concentration (CONCENTRATIONS, any case, punctuation ignored:
  PM2.5, pm25, NO2 ...) may not be below 0. A range given for a column replaces its
  default; `COLUMN=,` removes it.
The ranges are recorded in the spec (`valid_ranges`) so the hub applies the same rule.
"""
from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pandas as pd

from .errors import DataError

SENTINELS = (-99999.0, -9999.9, -9999.0, -999.9, -999.0, -99.9, 9999.0, 99999.0)
CONCENTRATIONS = ("PM1", "PM25", "PM10", "SO2", "NO", "NO2", "NOX", "CO", "O3", "NH3", "BENZENE")
SENTINEL, BELOW, ABOVE = "sentinel", "below_min", "above_max"

Range = tuple  # (min or None, max or None)


def parse_range(text: str) -> tuple[str, Range]:
    """`COLUMN=MIN,MAX` as (column, (min, max)); an empty bound is None."""
    column, equals, bounds = text.partition("=")
    parts = bounds.split(",")
    if not equals or not column.strip() or len(parts) != 2:
        raise DataError(f"valid_ranges {text!r}: expected COLUMN=MIN,MAX (either bound may be empty)",
                        settings=("valid_ranges",))
    try:
        low, high = (float(part) if part.strip() else None for part in parts)
    except ValueError:
        raise DataError(f"valid_ranges {text!r}: the bounds are not numbers", settings=("valid_ranges",)) from None
    if low is not None and high is not None and low > high:
        raise DataError(f"valid_ranges {text!r}: the minimum is above the maximum", settings=("valid_ranges",))
    return column.strip(), (low, high)


def _squeezed(name: str) -> str:
    return re.sub(r"[^0-9A-Z]", "", name.upper())


def default_range(name: str) -> Range | None:
    return (0.0, None) if _squeezed(name) in CONCENTRATIONS else None


def ranges_for(columns: list[str], given: dict[str, Range], resolve: Callable[[str], str]) -> dict[str, Range]:
    """{column: range} for the columns read: the defaults, replaced by the ranges given
    (their names resolved by `resolve`, which raises for a column not read)."""
    ranges = {name: default_range(name) for name in columns}
    for name, bounds in given.items():
        column = resolve(name)
        if column not in ranges:
            raise DataError(f"valid_ranges names column {column!r}, which is neither the target nor a feature",
                            settings=("valid_ranges",))
        ranges[column] = tuple(bounds)
    return {name: tuple(bounds) for name, bounds in ranges.items() if bounds is not None and bounds != (None, None)}


def invalid_to_missing(values: pd.Series, bounds: Range | None) -> tuple[pd.Series, dict[str, int]]:
    """The column with sentinels and out-of-range values made NaN, and their counts."""
    sentinel = values.isin(SENTINELS)
    low, high = bounds if bounds is not None else (None, None)
    below = (values < low) & ~sentinel if low is not None else pd.Series(False, index=values.index)
    above = (values > high) & ~sentinel if high is not None else pd.Series(False, index=values.index)
    counts = {SENTINEL: int(sentinel.sum()), BELOW: int(below.sum()), ABOVE: int(above.sum())}
    invalid = (sentinel | below | above).to_numpy()
    if not invalid.any():
        return values, {}
    return values.mask(invalid, np.nan), {reason: count for reason, count in counts.items() if count}


def describe(invalid: dict[str, dict[str, int]]) -> str | None:
    """One line of the counts, e.g. `PM2.5 5 (2 sentinel, 3 below_min)`; None when nothing was dropped."""
    if not invalid:
        return None
    parts = [
        f"{name} {sum(counts.values())} ({', '.join(f'{count} {reason}' for reason, count in counts.items())})"
        for name, counts in invalid.items()
    ]
    return "treated as missing: " + "; ".join(parts)
