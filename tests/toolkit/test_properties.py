"""Properties of the trainer's gap filling, windowing and split, over random series (hypothesis).

For any series with random runs of missing values and any max_gap, look_back, horizon:
  - `fill_short_gaps` fills a run whole or not at all, only runs of at most max_gap with a
    value on both sides, linearly (or holding the last value, for directions), and never
    changes a present value;
  - no window reads a missing value or crosses a gap left open, every span whose inputs
    (all columns) and targets (the target column) are present becomes exactly one window,
    and a window's targets are exactly the target values after it;
  - the split is chronological, and the scaler sees the training rows only: its
    data_min/data_max are the training rows' nan-min/nan-max, whatever the later rows hold.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from edgecast.trainer.data import fill_short_gaps
from edgecast.trainer.errors import DataError
from edgecast.trainer.windows import make_windows, split_windows

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def runs_of(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of every run of True."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


@st.composite
def gappy_series(draw, min_len: int = 1, max_len: int = 160, columns: int = 1):
    """Integer-valued readings (exact in float32) with runs of NaN of random lengths and places."""
    n = draw(st.integers(min_len, max_len))
    values = np.asarray(
        draw(st.lists(st.integers(-10_000, 10_000), min_size=n * columns, max_size=n * columns)), np.float64
    ).reshape(n, columns)
    for column in range(columns):
        for _ in range(draw(st.integers(0, 6))):
            start = draw(st.integers(0, n - 1))
            length = draw(st.integers(1, 15))
            values[start : start + length, column] = np.nan
    return values


@SETTINGS
@given(values=gappy_series(), max_gap=st.integers(0, 10), hold=st.booleans())
def test_fill_short_gaps_fills_a_run_whole_or_not_at_all(values, max_gap, hold):
    column = pd.Series(values[:, 0], index=pd.date_range("2024-01-01", periods=len(values), freq="h"))
    filled = fill_short_gaps(column, max_gap, hold=hold).to_numpy()
    original = column.to_numpy()
    present = ~np.isnan(original)
    np.testing.assert_array_equal(filled[present], original[present])  # present values never change
    positions = np.arange(len(original))
    for start, stop in runs_of(~present):
        run = filled[start:stop]
        inside = start > 0 and stop < len(original)
        if max_gap > 0 and stop - start <= max_gap and inside:
            if hold:  # directions: the last reading before the run, repeated
                np.testing.assert_array_equal(run, np.full(stop - start, original[start - 1]))
            else:
                expected = np.interp(positions[start:stop], positions[present], original[present])
                np.testing.assert_allclose(run, expected, rtol=0, atol=1e-9)
        else:
            assert np.isnan(run).all(), f"run {start}:{stop} (length {stop - start}, max_gap {max_gap}) was touched"


@SETTINGS
@given(
    values=gappy_series(max_len=120, columns=2),
    max_gap=st.integers(0, 8),
    look_back=st.integers(1, 12),
    horizon=st.integers(1, 4),
)
def test_windows_never_read_a_missing_value_nor_cross_an_open_gap(values, max_gap, look_back, horizon):
    frame = pd.DataFrame(values).apply(lambda column: fill_short_gaps(column, max_gap))
    filled = frame.to_numpy()
    windows = make_windows(filled, look_back, horizon)
    span = look_back + horizon
    assert windows.x.shape[1:] == (look_back, 2) and windows.y.shape[1:] == (horizon,)
    assert np.isfinite(windows.x).all() and np.isfinite(windows.y).all()
    starts, last_inputs = windows.end - span + 1, windows.end - horizon
    # The gaps fill_short_gaps left open: no window's input rows include one in any column,
    # and no window's target rows include one in the target (a feature's gap at a target
    # row is never read: targets are the target column only).
    for row in np.flatnonzero(np.isnan(filled).any(axis=1)):
        assert not np.any((starts <= row) & (last_inputs >= row))
    for row in np.flatnonzero(np.isnan(filled[:, 0])):
        assert not np.any((last_inputs < row) & (windows.end >= row))
    # Every span whose inputs and targets are all present is exactly one window, in order;
    # its inputs and targets are the rows themselves.
    complete = [
        end for end in range(span - 1, len(filled))
        if np.isfinite(filled[end - span + 1 : end - horizon + 1]).all() and np.isfinite(filled[end - horizon + 1 : end + 1, 0]).all()
    ]
    assert windows.end.tolist() == complete
    for i, end in enumerate(windows.end):
        np.testing.assert_array_equal(windows.x[i], filled[end - span + 1 : end - horizon + 1].astype(np.float32))
        np.testing.assert_array_equal(windows.y[i], filled[end - horizon + 1 : end + 1, 0].astype(np.float32))


@st.composite
def fractions(draw):
    train = draw(st.integers(40, 90))
    val = draw(st.integers(5, 100 - train - 5))
    return (train / 100, val / 100, (100 - train - val) / 100)


@SETTINGS
@given(
    values=gappy_series(min_len=40, max_len=240, columns=2),
    split=fractions(),
    look_back=st.integers(1, 8),
    horizon=st.integers(1, 3),
    spike=st.floats(1e3, 1e9),
)
def test_split_is_chronological_and_the_scaler_sees_training_rows_only(values, split, look_back, horizon, spike):
    try:
        data = split_windows(values, look_back, horizon, split)
    except DataError as exc:  # too few gap-free rows for some part, or a column empty in training
        assert "too few usable rows" in str(exc) or "no finite value in the training split" in str(exc)
        assume(False)
    first_val, first_test = data.boundaries
    assert 0 < first_val < first_test < len(values)
    assert data.train.end.max() < first_val <= data.val.end.min()
    assert data.val.end.max() < first_test <= data.test.end.min()
    # Ends are increasing within each part, and every window lands in exactly one part.
    for part in (data.train, data.val, data.test):
        assert np.all(np.diff(part.end) > 0)
    assert len(data.train) + len(data.val) + len(data.test) == len(make_windows(values, look_back, horizon))
    training_rows = values[:first_val]
    np.testing.assert_array_equal(data.scaler.data_min_, np.nanmin(training_rows, axis=0))
    np.testing.assert_array_equal(data.scaler.data_max_, np.nanmax(training_rows, axis=0))
    # Whatever the validation and test rows hold, the scaler is the same.
    leaked = values.copy()
    leaked[first_val:] = leaked[first_val:] * spike + spike
    again = split_windows(leaked, look_back, horizon, split)
    np.testing.assert_array_equal(again.scaler.data_min_, data.scaler.data_min_)
    np.testing.assert_array_equal(again.scaler.data_max_, data.scaler.data_max_)
    assert again.boundaries == data.boundaries


@pytest.mark.parametrize("bad", [(0.7, 0.3, 0.0), (0.5, 0.3, 0.3), (1.0, 0.0, 0.0), (0.6, 0.4), (-0.2, 0.6, 0.6)])
def test_invalid_split_fractions_are_refused(bad):
    with pytest.raises(DataError, match="split fractions must be three positive numbers summing to 1"):
        split_windows(np.arange(100.0).reshape(-1, 1), 4, 1, bad)
