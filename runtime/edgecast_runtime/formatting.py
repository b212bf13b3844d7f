"""How values and times are written in answers and messages: the JSON form of
float32 forecasts (used by the CLI, the server and the streaming answers), a
reading's values as JSON (None where missing) and epoch seconds as short text."""

from __future__ import annotations

import math
from typing import List, Optional

import numpy as np


def float_list(array: np.ndarray) -> List[float]:
    """Float32 values as the shortest decimals that round-trip to them, for JSON."""
    return [float(str(np.float32(v))) for v in np.ravel(array)]


def comparable(values: list[float]) -> List[Optional[float]]:
    """A reading's values as JSON can hold them: None where missing or non-finite."""
    return [float(v) if math.isfinite(v) else None for v in values]


def seconds_text(seconds: float) -> str:
    """Epoch seconds without trailing zeros: 3600 rather than 3600.000."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".")
