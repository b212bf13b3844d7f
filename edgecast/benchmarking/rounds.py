"""Interleaved rounds and the bootstrap interval of a ratio.

Timing backends one after another lets whatever else the machine does land on one of
them only (a run read 1.86x bare onnxruntime under load, 1.11x quiet). Here every round
times a short block of each backend, in an order that rotates from round to round, so a
noisy neighbour lands on every backend alike; each round gives one ratio of the two
backends' block medians, and a ratio is reported as the median over rounds with a
bootstrap 95 % interval.

The rounds are spread over several fresh sets of processes (interleaved.py): two runs
of the same bench differ by a few percent in ways no round inside one set shows (each
set's memory layout, core placement and share of the caches), so an interval over the
rounds of one set was too narrow to hold a second run. The bootstrap is hierarchical:
sets resampled with replacement, then rounds within each chosen set. numpy only.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 4000


def round_order(backends: Sequence[str], index: int) -> list[str]:
    """Round `index`'s order: the backends rotated by `index`, so over any len(backends)
    consecutive rounds each backend takes every position once (first after an idle
    pause, last before a context switch, ...)."""
    shift = index % len(backends) if backends else 0
    return list(backends[shift:]) + list(backends[:shift])


def run_rounds(backends: Sequence[str], rounds: int, measure: Callable[[str, int], float],
               first: int = 0) -> dict[str, list[float]]:
    """`measure(backend, round)` once per backend per round, rounds `first` to
    `first + rounds - 1` in `round_order`; returns each backend's figures in round order."""
    found: dict[str, list[float]] = {name: [] for name in backends}
    for index in range(first, first + rounds):
        for name in round_order(backends, index):
            found[name].append(measure(name, index))
    return found


def bootstrap_median(values: Sequence[float], confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                     seed: int = 0) -> tuple[float, float, float]:
    """(median, low, high): the median of `values` and the percentile bootstrap interval
    of that median at `confidence`, from `resamples` resamples of the values with
    replacement. One value gives an interval of zero width."""
    data = np.asarray(values, np.float64)
    if data.ndim != 1 or len(data) == 0:
        raise ValueError("bootstrap_median needs a non-empty list of values")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(data), size=(resamples, len(data)))
    medians = np.median(data[picks], axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(medians, [tail, 1 - tail])
    return float(np.median(data)), float(low), float(high)


def hierarchical_bootstrap_median(groups: Sequence[Sequence[float]], confidence: float = CONFIDENCE,
                                  resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float, float]:
    """(median, low, high) of the values of every group pooled, with a percentile
    bootstrap interval that resamples the groups (process sets) with replacement and
    then the values within each chosen group, so the spread between groups widens it.
    One group is bootstrap_median of its values."""
    arrays = [np.asarray(group, np.float64) for group in groups]
    if not arrays or any(array.ndim != 1 or len(array) == 0 for array in arrays):
        raise ValueError("hierarchical_bootstrap_median needs non-empty groups of values")
    if len(arrays) == 1:
        return bootstrap_median(arrays[0], confidence, resamples, seed)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    rng = np.random.default_rng(seed)
    medians = np.empty(resamples)
    for index in range(resamples):
        chosen = rng.integers(0, len(arrays), size=len(arrays))
        medians[index] = np.median(np.concatenate(
            [arrays[group][rng.integers(0, len(arrays[group]), size=len(arrays[group]))] for group in chosen]))
    tail = (1 - confidence) / 2
    low, high = np.quantile(medians, [tail, 1 - tail])
    return float(np.median(np.concatenate(arrays))), float(low), float(high)


@dataclass(frozen=True)
class Ratio:
    """numerator / denominator of one measure, per round; the median over rounds and
    its bootstrap interval."""

    numerator: str
    denominator: str
    measure: str  # "latency" (time per window) or "throughput" (windows per second)
    threads: int
    rounds: int
    median: float
    low: float
    high: float
    confidence: float = CONFIDENCE
    process_sets: int = 1

    @property
    def name(self) -> str:
        return f"{self.numerator}/{self.denominator}"

    def overlaps(self, other: Ratio) -> bool:
        return self.low <= other.high and other.low <= self.high

    def text(self) -> str:
        return f"{self.median:.3g}× [{self.low:.3g}, {self.high:.3g}]"

    def to_json(self) -> dict:
        return {"ratio": self.name, "numerator": self.numerator, "denominator": self.denominator,
                "measure": self.measure, "threads": self.threads, "rounds": self.rounds, "median": self.median,
                "low": self.low, "high": self.high, "confidence": self.confidence,
                "process_sets": self.process_sets,
                "how": "median over rounds of the per-round ratio; percentile bootstrap resampling the "
                       "process sets, then the rounds within each"}


def ratio(numerator: str, denominator: str, per_round: dict[str, list[float]], measure: str,
          threads: int, process_sets: Sequence[int] | None = None) -> Ratio:
    """The per-round ratio of two backends' figures (block medians), summarised;
    `process_sets` gives each round's set (None: all rounds from one set)."""
    top, bottom = np.asarray(per_round[numerator]), np.asarray(per_round[denominator])
    per_round_ratio = top / bottom
    sets = np.zeros(len(top), int) if process_sets is None else np.asarray(process_sets)
    groups = [per_round_ratio[sets == label] for label in np.unique(sets)]
    median, low, high = hierarchical_bootstrap_median(groups)
    return Ratio(numerator, denominator, measure, threads, len(top), median, low, high,
                 process_sets=len(groups))
