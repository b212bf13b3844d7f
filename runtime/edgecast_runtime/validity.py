"""Valid ranges of incoming readings: the spec's optional `valid_ranges`, recorded
by the trainer, maps a raw feature name to [min, max] in the feature's own units,
either bound null (open), e.g. {"PM2.5": [0.0, null]}. A reading outside its range
is a sensor glitch or a missing-value sentinel (-999), so the streaming forecaster
treats it as missing under its policy and counts it. Models without the key (older
exports) have no ranges. Names that are not features of the model are ignored: the
trainer may screen more columns than the model reads."""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

from edgecast_runtime.encodings import InputLayout

BELOW, ABOVE = "below_valid_range", "above_valid_range"
Bounds = Tuple[Optional[float], Optional[float]]


class ValidRanges:
    """{feature index: (min, max)}; `outside(values)` names the values that break them."""

    def __init__(self, layout: InputLayout, bounds: Dict[int, Bounds]) -> None:
        self.features = list(layout.features)
        self.bounds = dict(bounds)
        # A negative direction means calm by convention, whatever the range says.
        self._calm_allowed = set(layout.directions)

    def __bool__(self) -> bool:
        return bool(self.bounds)

    def describe(self) -> Dict[str, List[Optional[float]]]:
        return {self.features[index]: list(bound) for index, bound in sorted(self.bounds.items())}

    def outside(self, values: List[float]) -> List[Tuple[int, str, str]]:
        """(feature index, reason BELOW or ABOVE, a phrase for the notice) for every
        finite value outside its range."""
        found = []
        for index, (low, high) in self.bounds.items():
            value = values[index]
            if not math.isfinite(value) or (index in self._calm_allowed and value < 0):
                continue
            if low is not None and value < low:
                found.append((index, BELOW, f"{self.features[index]} {value:g} is below "
                                            f"the valid minimum {low:g}"))
            elif high is not None and value > high:
                found.append((index, ABOVE, f"{self.features[index]} {value:g} is above "
                                            f"the valid maximum {high:g}"))
        return found
