"""Placing a reading as the truth of a pending forecast, shared by the forecast store
(skill/store.py) and the shadow's pairs (skill/pairs.py)."""

from __future__ import annotations

import json
from typing import List, Optional


def with_truth(truths_text: str, issued: float, now: float, interval: float, truth: float) -> Optional[List]:
    """The truths of a forecast issued at `issued` (JSON, null where none yet) with `truth`,
    the reading at `now`, at its lead; None when the reading is none of its target steps
    or that lead has its truth already. A reading less than half an interval off its step
    counts as on it (jitter)."""
    steps = (now - issued) / interval
    lead = int(round(steps))
    truths = json.loads(truths_text)
    if not 1 <= lead <= len(truths) or abs(steps - lead) >= 0.5 or truths[lead - 1] is not None:
        return None
    truths[lead - 1] = truth
    return truths
