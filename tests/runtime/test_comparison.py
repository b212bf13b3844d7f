"""Champion against challenger (edgecast_runtime.skill.comparison): the decision on
known cases, the Diebold-Mariano statistic against references computed another way
(an explicit autocovariance sum; the paired t-test for horizon 1; closed-form t
distributions), and the HAC variance keeping the size of the test on overlapping
forecasts where the naive variance rejects far too often."""
import math

import numpy as np
import pytest

from edgecast_runtime.errors import OptionError
from edgecast_runtime.skill.comparison import (
    andrews_lag,
    automatic_lag,
    compare,
    compare_summaries,
    diebold_mariano,
    hac_variance,
    lead_summaries,
    normal_cdf,
    student_t_cdf,
)

HORIZON = 6


def overlapping_errors(rng: np.random.Generator, origins: int, horizon: int = HORIZON,
                       decay: float = 0.8) -> np.ndarray:
    """Errors of h-step forecasts made every step: lead j's error is a sum of the shocks
    between the origin and its target, so origins less than h apart share shocks."""
    shocks = rng.standard_normal(origins + horizon)
    errors = np.zeros((origins, horizon))
    for lead in range(1, horizon + 1):  # target t + lead: shocks t+1 .. t+lead, the latest weighing 1
        for back in range(lead):
            errors[:, lead - 1] += decay ** back * shocks[lead - back:lead - back + origins]
    return errors


def test_identical_errors_never_promote():
    errors = overlapping_errors(np.random.default_rng(1), 500)
    result = compare(errors, errors.copy(), HORIZON, margin=0.05, min_pairs=100, level=0.05)
    assert not result.promote
    assert result.loss_ratio == pytest.approx(1.0)
    assert "not better" in result.reason and "1.000" in result.reason
    assert math.isnan(result.statistic) and math.isnan(result.p_value)


def test_clearly_better_challenger_is_promoted():
    rng = np.random.default_rng(2)
    champion = 10 * overlapping_errors(rng, 600)
    challenger = 0.7 * champion + 2 * overlapping_errors(rng, 600)  # MSE ratio about 0.53
    result = compare(champion, challenger, HORIZON, margin=0.05, min_pairs=300, level=0.01)
    assert result.promote, result
    assert result.pairs == 600 and result.loss_ratio < 0.7
    assert result.statistic > 3 and result.p_value < 1e-3
    assert "lower over 600 forecasts" in result.reason


def test_each_condition_can_refuse_alone():
    rng = np.random.default_rng(3)
    champion = overlapping_errors(rng, 400)
    better = 0.8 * champion + 0.1 * overlapping_errors(rng, 400)
    assert compare(champion, better, HORIZON, min_pairs=400, level=0.05).promote
    few = compare(champion, better, HORIZON, min_pairs=401, level=0.05)
    assert not few.promote and few.reason == "too few scored pairs: 400 < 401"
    small_gain = compare(champion, better, HORIZON, margin=0.5, min_pairs=100, level=0.05)
    assert not small_gain.promote and small_gain.reason.startswith("gain below the margin")
    worse = compare(better, champion, HORIZON, min_pairs=100, level=0.05)
    assert not worse.promote and worse.reason.startswith("challenger not better")
    noisy = 0.97 * champion + 0.25 * overlapping_errors(np.random.default_rng(0), 400)  # ratio 0.97, p 0.21
    slight = compare(champion, noisy, HORIZON, margin=0.0, min_pairs=100, level=0.05)
    assert not slight.promote and slight.reason.startswith("not significant")


def test_origins_with_a_missing_error_are_left_out():
    rng = np.random.default_rng(4)
    champion, challenger = overlapping_errors(rng, 300), overlapping_errors(rng, 300)
    holed = champion.copy()
    holed[[5, 17], 2] = np.nan
    challenger_holed = challenger.copy()
    challenger_holed[40, 0] = np.inf
    result = compare(holed, challenger_holed, HORIZON, min_pairs=2)
    keep = np.setdiff1d(np.arange(300), [5, 17, 40])
    reference = compare(champion[keep], challenger[keep], HORIZON, min_pairs=2)
    assert result.pairs == 297 and result.statistic == pytest.approx(reference.statistic, rel=1e-12)
    with pytest.raises(OptionError, match=r"same shape"):
        compare(champion, challenger[:, :3], HORIZON)
    with pytest.raises(OptionError) as caught:
        compare(champion, challenger, HORIZON, level=1.5)
    assert "level" in caught.value.settings


def explicit_hac(series, lag):
    """Newey-West written out term by term, in plain Python."""
    values = [float(v) for v in series]
    count = len(values)
    mean = sum(values) / count
    total = 0.0
    for k in range(-lag, lag + 1):
        weight = 1.0 - abs(k) / (lag + 1.0)
        gamma = sum((values[t] - mean) * (values[t - abs(k)] - mean) for t in range(abs(k), count)) / count
        total += weight * gamma
    return total


def test_statistic_agrees_with_an_explicit_autocovariance_sum():
    rng = np.random.default_rng(5)
    champion = overlapping_errors(rng, 250)
    challenger = 0.9 * champion + 0.5 * overlapping_errors(rng, 250)
    differential = np.mean(champion ** 2 - challenger ** 2, axis=1)
    for lag in (0, 1, 5, 12):
        assert hac_variance(differential, lag) == pytest.approx(explicit_hac(differential, lag), rel=1e-12)
    count, h = len(differential), HORIZON
    for lag in (None, h - 1, 20):
        result = compare(champion, challenger, h, min_pairs=2, lag=lag)
        assert result.lag == (lag if lag is not None else automatic_lag(differential, h))
        expected = (np.mean(differential) / math.sqrt(explicit_hac(differential, result.lag) / count)
                    * math.sqrt((count + 1 - 2 * h + h * (h - 1) / count) / count))
        assert result.statistic == pytest.approx(expected, rel=1e-12)
        assert result.p_value == pytest.approx(1 - student_t_cdf(expected, count - 1), rel=1e-12)
    assert result.champion_loss == pytest.approx(np.mean(champion ** 2), rel=1e-12)
    assert result.loss_ratio == pytest.approx(np.mean(challenger ** 2) / np.mean(champion ** 2), rel=1e-12)


def test_horizon_one_is_the_paired_t_test():
    rng = np.random.default_rng(6)
    champion, challenger = rng.standard_normal(80) * 3, rng.standard_normal(80) * 2.5
    differential = champion ** 2 - challenger ** 2
    paired_t = np.mean(differential) / (np.std(differential, ddof=1) / math.sqrt(80))
    statistic, p_value = diebold_mariano(differential, 1, lag=0)
    assert statistic == pytest.approx(paired_t, rel=1e-12)
    assert p_value == pytest.approx(1 - student_t_cdf(paired_t, 79), rel=1e-12)


def test_student_t_and_normal_against_closed_forms_and_tables():
    for t in (-30.0, -2.5, -0.3, 0.0, 0.7, 4.0):
        assert student_t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-13)  # Cauchy
        assert student_t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-13)
        assert student_t_cdf(t, 1e7) == pytest.approx(normal_cdf(t), abs=1e-6)
    # Quantiles from the standard tables (R's qt): 0.95 at 10, 0.975 at 5, 0.995 at 30.
    assert student_t_cdf(1.812461123, 10) == pytest.approx(0.95, abs=1e-9)
    assert student_t_cdf(2.570581836, 5) == pytest.approx(0.975, abs=1e-9)
    assert student_t_cdf(2.749995654, 30) == pytest.approx(0.995, abs=1e-9)
    assert normal_cdf(1.959963985) == pytest.approx(0.975, abs=1e-9)


def test_hac_keeps_the_size_where_the_naive_variance_rejects_too_often():
    """Two equally good models, 6-step forecasts made every step: the loss differential is
    autocorrelated up to lag 5. Treated as independent (the naive variance, horizon 1)
    the test rejects at four times its 5 % level (20.7 % of 600 seeded runs); with the
    HAC variance at lag 5 at 6.8 % (Bartlett weights shrink the long-run variance a
    little in finite samples), with the automatic lag about as often. Some runs are
    rejected by the naive test and not by HAC."""
    rng = np.random.default_rng(7)
    level, runs = 0.05, 600
    naive = hac = automatic = naive_only = 0
    for _ in range(runs):
        champion, challenger = overlapping_errors(rng, 400), overlapping_errors(rng, 400)
        differential = np.mean(champion ** 2 - challenger ** 2, axis=1)
        naive_rejects = diebold_mariano(differential, 1, lag=0)[1] <= level
        hac_rejects = diebold_mariano(differential, HORIZON, lag=HORIZON - 1)[1] <= level
        automatic += diebold_mariano(differential, HORIZON)[1] <= level
        naive, hac = naive + naive_rejects, hac + hac_rejects
        naive_only += naive_rejects and not hac_rejects
    assert naive / runs > 0.15, naive
    assert hac / runs < 0.09 and automatic / runs < 0.09, (hac, automatic)
    assert naive_only > 0.1 * runs, naive_only


def test_automatic_lag_follows_the_differential_memory():
    """White noise keeps the horizon's lag; an AR(1) with coefficient 0.9 gets a longer
    one (Andrews: about 1.1447 (a T)^(1/3), a = 4 rho^2 / ((1-rho)^2 (1+rho)^2)), capped at
    T / 4; and on such a series the automatic lag rejects a zero mean less often than lag 5."""
    rng = np.random.default_rng(8)
    assert automatic_lag(rng.standard_normal(1000), HORIZON) == HORIZON - 1
    level, runs, fixed, automatic = 0.05, 400, 0, 0
    lags = []
    for _ in range(runs):
        shocks = rng.standard_normal(600)
        series = np.empty(600)
        series[0] = shocks[0]
        for t in range(1, 600):
            series[t] = 0.9 * series[t - 1] + shocks[t]
        lags.append(automatic_lag(series, HORIZON))
        fixed += diebold_mariano(series, HORIZON, lag=HORIZON - 1)[1] <= level
        automatic += diebold_mariano(series, HORIZON)[1] <= level
    rho = 0.9
    expected = 1.1447 * (4 * rho ** 2 / ((1 - rho) ** 2 * (1 + rho) ** 2) * 600) ** (1 / 3)
    assert abs(np.median(lags) - expected) < 0.15 * expected, (np.median(lags), expected)
    assert automatic_lag(series[:40], HORIZON) <= 10
    assert fixed / runs > 0.15 and automatic < 0.6 * fixed, (fixed, automatic)


def test_per_lead_summaries_give_a_conservative_pooled_test():
    """The rule on what a hub's shadow status summarises per lead: with one lead it is the
    paired test on the pairs; with several, the pooled mean over the mean of the leads'
    HAC standard errors (lag lead - 1 each), written out here; never more confident than
    the leads moving together allows."""
    rng = np.random.default_rng(9)
    single_champion, single_challenger = rng.standard_normal((200, 1)) * 3, rng.standard_normal((200, 1)) * 2.6
    from_summary = compare_summaries(lead_summaries(single_champion, single_challenger), min_pairs=2)
    from_pairs = compare(single_champion, single_challenger, 1, min_pairs=2, lag=0)
    assert from_summary.statistic == pytest.approx(from_pairs.statistic, rel=1e-12)
    assert from_summary.p_value == pytest.approx(from_pairs.p_value, rel=1e-9)
    assert from_summary.loss_ratio == pytest.approx(from_pairs.loss_ratio, rel=1e-12)

    champion = overlapping_errors(rng, 500)
    challenger = 0.85 * champion + 0.3 * overlapping_errors(rng, 500)
    summaries = lead_summaries(champion, challenger)
    assert [s.lead for s in summaries] == list(range(1, HORIZON + 1))
    assert [len(s.autocovariances) for s in summaries] == list(range(1, HORIZON + 1))
    differences = champion ** 2 - challenger ** 2
    spread = np.mean([math.sqrt(explicit_hac(differences[:, j], j) / 500) for j in range(HORIZON)])
    count = 500
    expected = (np.mean(differences) / spread
                * math.sqrt((count + 1 - 2 * HORIZON + HORIZON * (HORIZON - 1) / count) / count))
    result = compare_summaries(summaries, min_pairs=300, level=0.01)
    assert result.statistic == pytest.approx(expected, rel=1e-12)
    assert result.pairs == 500 and result.promote, result
    assert "per-lead summaries" in result.reason
    assert result.statistic <= compare(champion, challenger, HORIZON, min_pairs=2, lag=HORIZON - 1).statistic * 1.05
    same = compare_summaries(lead_summaries(champion, champion.copy()), min_pairs=2)
    assert not same.promote and same.reason.startswith("challenger not better")
    assert compare_summaries([]).reason == "no scored pairs"


def test_summaries_with_more_lags_let_the_hac_lag_grow():
    """A hub that reports autocovariances past lag lead - 1 lets each lead's lag grow to
    Andrews' bandwidth (as far as they reach): on a persistent differential the standard
    error grows and the statistic shrinks, as explicit_hac at that lag says."""
    rng = np.random.default_rng(10)
    shocks = rng.standard_normal(800)
    persistent = np.empty(800)
    persistent[0] = shocks[0]
    for t in range(1, 800):
        persistent[t] = 0.9 * persistent[t - 1] + shocks[t]
    champion = (3 + persistent)[:, None]
    challenger = np.full((800, 1), 2.9)
    short = compare_summaries(lead_summaries(champion, challenger), min_pairs=2)
    long = compare_summaries(lead_summaries(champion, challenger, lags=48), min_pairs=2)
    differential = (champion ** 2 - challenger ** 2)[:, 0]
    centred = differential - differential.mean()
    lag = min(andrews_lag(float(centred[1:] @ centred[:-1]) / float(centred @ centred), 800), 48)
    assert lag > 10 and long.lag == 48 and short.lag == 0
    expected = np.mean(differential) / math.sqrt(explicit_hac(differential, lag) / 800) * math.sqrt(799 / 800)
    assert long.statistic == pytest.approx(expected, rel=1e-9)
    assert long.statistic < 0.6 * short.statistic
