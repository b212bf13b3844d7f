"""The interleaving order and the bootstrap interval of `edgecast bench` (issue 28), on a
fake clock: no real timing is asserted here (timings never go in the unit suite)."""
import numpy as np
import pytest

from edgecast.benchmarking import bootstrap_median, round_order, run_rounds
from edgecast.benchmarking.child import time_block
from edgecast.benchmarking.rounds import hierarchical_bootstrap_median, ratio

BACKENDS = ["runtime", "onnxruntime", "litert", "keras-predict"]


def test_each_round_times_every_backend_once_in_a_rotating_order():
    seen = []
    run_rounds(BACKENDS, 8, lambda name, index: seen.append((index, name)) or 0.0)
    assert len(seen) == 8 * len(BACKENDS)
    for index in range(8):
        order = [name for i, name in seen if i == index]
        assert sorted(order) == sorted(BACKENDS)  # every backend once per round
        assert order == round_order(BACKENDS, index)
    # over any len(BACKENDS) consecutive rounds each backend takes every position once
    for start in range(8 - len(BACKENDS) + 1):
        for position in range(len(BACKENDS)):
            names = {round_order(BACKENDS, index)[position] for index in range(start, start + len(BACKENDS))}
            assert names == set(BACKENDS)
    assert [round_order(BACKENDS, i)[0] for i in range(5)] == [*BACKENDS, BACKENDS[0]]


class FakeMachine:
    """A clock in ns, and backends whose calls cost a fixed amount of work that a noisy
    neighbour, busy during some stretches of time, slows by `slowdown`."""

    def __init__(self, work_ns: dict[str, float], busy: list[tuple[float, float]], slowdown: float) -> None:
        self.now, self.work_ns, self.busy, self.slowdown = 0.0, work_ns, busy, slowdown

    def clock(self) -> int:
        return int(self.now)

    def predictor(self, name: str):
        def predict_one(window: np.ndarray) -> np.ndarray:
            loaded = any(start <= self.now < end for start, end in self.busy)
            self.now += self.work_ns[name] * (self.slowdown if loaded else 1.0)
            return window[-1]
        return predict_one


def test_interleaved_rounds_hold_the_ratio_under_a_noisy_neighbour():
    """The runtime costs 1.10x onnxruntime. A neighbour triples every call's time for
    long stretches: timed one after another, the ratio would read 3.3x or 0.37x; in
    rounds, it stays 1.10x with a narrow interval."""
    machine = FakeMachine({"runtime": 11_000, "onnxruntime": 10_000}, slowdown=3.0,
                          busy=[(2e6, 9e6), (15e6, 30e6)])
    pool = np.zeros((8, 4, 1), np.float32)
    positions = {"runtime": 0, "onnxruntime": 0}

    def block_median(name: str, index: int) -> float:
        times = time_block(machine.predictor(name), pool, 20, positions[name], clock=machine.clock)
        positions[name] += 20
        return float(np.median(times))

    per_round = run_rounds(["runtime", "onnxruntime"], 40, block_median)
    assert max(per_round["runtime"]) == pytest.approx(33.0) and min(per_round["runtime"]) == pytest.approx(11.0)
    found = ratio("runtime", "onnxruntime", per_round, "latency", 1)
    # a block can straddle the start or end of a busy stretch, so a few rounds are off
    assert found.median == pytest.approx(1.10, abs=1e-9)
    assert 1.0 < found.low <= 1.10 <= found.high < 1.25
    assert found.rounds == 40 and found.name == "runtime/onnxruntime"
    # the same work timed back to back: the neighbour lands on one backend only
    machine.now = 0.0
    first = time_block(machine.predictor("runtime"), pool, 400, 0, clock=machine.clock)
    machine.now = 10e6
    second = time_block(machine.predictor("onnxruntime"), pool, 400, 0, clock=machine.clock)
    assert np.median(first) / np.median(second) == pytest.approx(3.3)


def test_time_block_goes_on_where_the_last_block_stopped():
    pool = np.arange(5, dtype=np.float32).reshape(5, 1, 1)
    seen = []
    ticks = iter(range(0, 10_000, 500))
    times = time_block(lambda window: seen.append(float(window[0, 0])), pool, 7, 3, clock=lambda: next(ticks))
    assert seen == [3, 4, 0, 1, 2, 3, 4]
    assert times == [0.5] * 7  # microseconds


def test_bootstrap_interval_of_the_median():
    rng = np.random.default_rng(1)
    values = rng.normal(1.10, 0.05, size=200)
    median, low, high = bootstrap_median(values)
    assert median == pytest.approx(np.median(values))
    assert low < median < high
    assert high - low < 0.03  # the median of 200 values with sd 0.05: standard error about 0.0044
    assert 1.09 < low and high < 1.12
    # more spread, wider interval; the same seed, the same interval
    wide = bootstrap_median(rng.normal(1.10, 0.5, size=200))
    assert wide[2] - wide[1] > high - low
    assert bootstrap_median(values) == (median, low, high)


def test_bootstrap_interval_covers_the_true_median_about_95_percent_of_the_time():
    rng = np.random.default_rng(2)
    covered = 0
    for _ in range(200):
        sample = rng.lognormal(0.0, 0.3, size=40)  # true median exp(0) = 1
        _, low, high = bootstrap_median(sample, resamples=1000, seed=int(rng.integers(1 << 30)))
        covered += low <= 1.0 <= high
    assert 0.88 <= covered / 200 <= 0.995


def test_bootstrap_edge_cases():
    assert bootstrap_median([2.0]) == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError):
        bootstrap_median([])
    with pytest.raises(ValueError):
        bootstrap_median([1.0, 2.0], confidence=1.5)


def test_rounds_go_on_rotating_across_process_sets():
    first = run_rounds(BACKENDS, 3, lambda name, index: index)
    rest = run_rounds(BACKENDS, 5, lambda name, index: index, first=3)
    assert first["runtime"] == [0, 1, 2] and rest["runtime"] == [3, 4, 5, 6, 7]
    whole = run_rounds(BACKENDS, 8, lambda name, index: index)
    assert {name: first[name] + rest[name] for name in BACKENDS} == whole


def simulated_run(rng: np.random.Generator, sets: int, rounds: int) -> list[np.ndarray]:
    """Per-round ratios of one bench run: each fresh process set has its own level (sd
    2 % around 1.0: memory layout, core placement), rounds vary 0.3 % around it."""
    per_set = rounds // sets
    return [rng.normal(rng.normal(1.0, 0.02), 0.003, size=per_set) for _ in range(sets)]


def test_intervals_over_process_sets_hold_a_second_run_where_one_set_does_not():
    """Two runs of the same bench differ by the level of their processes. An interval
    over the 40 rounds of one process set is too narrow for the second run to fall in;
    over 8 sets of 5, resampled set by set, the two runs' intervals overlap."""
    rng = np.random.default_rng(3)
    overlaps = {"one set": 0, "eight sets": 0}
    for _ in range(100):
        for label, sets in (("one set", 1), ("eight sets", 8)):
            intervals = []
            for _run in range(2):
                _, low, high = hierarchical_bootstrap_median(simulated_run(rng, sets, 40), resamples=400,
                                                             seed=int(rng.integers(1 << 30)))
                intervals.append((low, high))
            (low_a, high_a), (low_b, high_b) = intervals
            overlaps[label] += low_a <= high_b and low_b <= high_a
    assert overlaps["one set"] <= 30, overlaps
    assert overlaps["eight sets"] >= 85, overlaps


def test_hierarchical_bootstrap_pools_the_median_and_widens_with_the_spread_between_sets():
    tight = [np.full(5, 1.0) + offset for offset in (0.0, 0.001, -0.001, 0.0)]
    spread = [np.full(5, 1.0) + offset for offset in (0.0, 0.05, -0.05, 0.02)]
    median, low, high = hierarchical_bootstrap_median(tight)
    assert median == pytest.approx(1.0) and high - low <= 0.002
    wide = hierarchical_bootstrap_median(spread)
    assert wide[0] == pytest.approx(np.median(np.concatenate(spread)))
    assert wide[1] <= 0.96 and wide[2] >= 1.02
    assert hierarchical_bootstrap_median([[2.0, 3.0, 4.0]]) == bootstrap_median([2.0, 3.0, 4.0])
    with pytest.raises(ValueError):
        hierarchical_bootstrap_median([[1.0], []])


def test_a_ratio_over_process_sets_says_how_many():
    per_round = {"runtime": [1.1, 1.1, 1.2, 1.2], "onnxruntime": [1.0, 1.0, 1.0, 1.0]}
    found = ratio("runtime", "onnxruntime", per_round, "latency", 1, process_sets=[0, 0, 1, 1])
    assert found.process_sets == 2 and found.rounds == 4
    assert found.to_json()["process_sets"] == 2
    assert found.low == pytest.approx(1.1) and found.high == pytest.approx(1.2)
    assert ratio("runtime", "onnxruntime", per_round, "latency", 1).process_sets == 1
