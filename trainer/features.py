"""Input encodings: how a raw column a hub can read becomes the model's inputs.

The exported graph takes every feature in raw units and encodes it itself (see
export/graph.py), so a hub sends readings, never engineered features:

  numeric    the reading as is                       -> 1 column
  direction  degrees clockwise from north, the        -> sin, cos (both 0 when calm)
             direction the wind blows from; calm is
             any negative value (CALM_DEGREES)
  cyclic     a calendar count with a period: hour of  -> sin, cos of 2*pi*value/period
             day 0..23, day of week 0..6 (Monday 0)
  masked     a neighbouring station's reading, NaN   -> the reading or its fill, and
             when it did not arrive                     1 if present else 0

Sine and cosine keep neighbours neighbours (NNW is next to N, 23 h next to 0 h),
which a one-hot code or the raw angle would not, and they are two cheap graph ops
that ONNX and TFLite both have, so one float per reading is all a hub sends.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

# The encodings are part of the graph contract, which the runtime owns: it fills the
# same raw columns on the hub.
from edgecast_runtime.contract import (
    CALENDAR_PERIODS,
    CALM_CODES,
    CALM_DEGREES,
    COMPASS_DEGREES,
    CYCLIC,
    DIRECTION,
    MASKED,
    NUMERIC,
    PRESENT_SUFFIX,
)
from edgecast_runtime.spec import Encoding, Fill

if TYPE_CHECKING:  # pandas loads with the data, not with the bundle reader
    from collections.abc import Sequence

    import pandas as pd


def numeric(name: str) -> Encoding:
    return Encoding(name, NUMERIC, (name,))


def direction(name: str) -> Encoding:
    return Encoding(
        name, DIRECTION, (f"{name}_sin", f"{name}_cos"),
        raw="degrees clockwise from north (direction the wind comes from); any negative value means calm",
        calm_value=CALM_DEGREES,
    )


def calendar(name: str) -> Encoding:
    raw = "hour of day 0..23 of the row's timestamp" if name == "hour_of_day" else "day of week 0..6 of the row's timestamp, Monday 0"
    return Encoding(name, CYCLIC, (f"{name}_sin", f"{name}_cos"), period=CALENDAR_PERIODS[name], raw=raw)


def masked(name: str, station: str, reading: str, fill: Fill) -> Encoding:
    """A neighbour's reading. `fill` stands in for it when missing: Fill(column=i), the raw
    feature i of the same window (the station's own reading of the same quantity, the
    best guess of a nearby value), or Fill(value=v), a constant in raw units."""
    return Encoding(
        name, MASKED, (name, f"{name}{PRESENT_SUFFIX}"), station=station, reading=reading,
        raw="the neighbouring station's reading; NaN when it did not arrive", fill=fill,
    )


def masked_indices(encodings: Sequence[Encoding]) -> list[int]:
    """Raw feature positions that may be NaN in a window (neighbours' readings)."""
    return [index for index, encoding in enumerate(encodings) if encoding.kind == MASKED]


def encoded_columns(encodings: Sequence[Encoding]) -> list[str]:
    return [column for encoding in encodings for column in encoding.columns]


def needs_hub_knowledge(encodings: Sequence[Encoding]) -> bool:
    """True when some input is not a plain reading: a reader of schema 1 would feed it wrongly."""
    return any(encoding.kind != NUMERIC for encoding in encodings)


def encode(x: np.ndarray, encodings: Sequence[Encoding]) -> np.ndarray:
    """Raw `[..., n_features]` to encoded `[..., n_columns]`, float64 (the reference the graph matches)."""
    x = np.asarray(x, np.float64)
    parts = []
    for index, encoding in enumerate(encodings):
        value = x[..., index]
        if encoding.kind == NUMERIC:
            parts.append(value)
        elif encoding.kind == MASKED:
            present = np.isfinite(value)
            fill = encoding.fill
            stand_in = x[..., fill.column] if fill.column is not None else np.full_like(value, fill.value)
            parts += [np.where(present, value, stand_in), present.astype(np.float64)]
        elif encoding.kind == DIRECTION:
            angle = np.deg2rad(value)
            blowing = (value >= 0).astype(np.float64)
            parts += [np.sin(angle) * blowing, np.cos(angle) * blowing]
        else:
            angle = value * (2 * math.pi / encoding.period)
            parts += [np.sin(angle), np.cos(angle)]
    return np.stack(parts, axis=-1)


def compass_degrees(column: pd.Series) -> pd.Series | None:
    """Degrees for a column of compass points (and calm codes), or None if it is not one."""
    import pandas as pd

    present = column.dropna()
    if present.empty or pd.api.types.is_numeric_dtype(column):
        return None
    tokens = present.astype(str).str.strip()
    upper = tokens.str.upper()
    calm = tokens.str.lower().isin(CALM_CODES)
    if not (upper.isin(COMPASS_DEGREES.keys()) | calm).all():
        return None
    degrees = upper.map(COMPASS_DEGREES).where(~calm, CALM_DEGREES).astype(np.float64)
    return degrees.reindex(column.index)


def calendar_values(name: str, times: pd.DatetimeIndex) -> np.ndarray:
    return np.asarray(times.hour if name == "hour_of_day" else times.day_of_week, np.float64)
