"""Champion against challenger on paired forecast errors: is the challenger's loss
lower by a stated margin, and does a Diebold-Mariano test reject equal accuracy?

Pairs are forecasts of the two models made at the same origin, for the same leads,
scored against the same truth. The inputs are the errors (forecast - truth), one row
per forecast origin in time order and one column per lead.

How the leads combine. The loss is the squared error, averaged over the leads of an
origin: d_t = mean over leads of (champion error^2 - challenger error^2). The leads of
one origin share the origin's state and are strongly correlated, so counting them as
separate observations would overstate the evidence; one loss differential per origin
keeps the sample honest and weighs the leads as the hub's pooled skill ratio does.
Forecasts from origins less than `horizon` steps apart target some of the same
readings, so d_t is autocorrelated up to lag horizon - 1 (an MA(h-1) under the null of
optimal forecasts): its long-run variance is estimated with Newey-West's HAC estimator
(Bartlett kernel), and the statistic gets Harvey, Leybourne and Newbold's (1997)
small-sample correction and Student's t with T - 1 degrees of freedom.

The HAC lag is horizon - 1 at least. Real models are not optimal forecasters: on hourly
PM2.5 a challenger's edge comes and goes in spells longer than the horizon, and with the
lag fixed at horizon - 1 the simulation on the ten stations (results/promotion.md)
promotes equal challengers far above the level. So by default (`lag=None`) the lag is
the larger of horizon - 1 and Andrews' (1991) AR(1) plug-in bandwidth for the Bartlett
kernel, 1.1447 (a T)^(1/3) with a = 4 rho^2 / ((1 - rho)^2 (1 + rho)^2), rho the
differential's lag-1 autocorrelation (clipped to +-0.97), and at most T / 4.

The test is one-sided (H1: the challenger's expected loss is lower); `level` is its
size. Promotion needs all three: at least `min_pairs` origins, a loss ratio (challenger
/ champion mean loss) at most 1 - `margin`, and p <= `level`. numpy and the standard
library only: the hub and the runtime have no scipy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgecast_runtime.errors import OptionError

DEFAULT_MARGIN = 0.05  # the challenger's mean squared error at least 5 % lower
DEFAULT_MIN_PAIRS = 336  # forecast origins: two weeks of hourly forecasts
# The rule is meant to be looked at up to DEFAULT_LOOKS times (weekly from two weeks on):
# each look at FAMILY_LEVEL / DEFAULT_LOOKS keeps the chance that any of them promotes an
# equal challenger at most FAMILY_LEVEL (Bonferroni; measured in results/promotion.md).
FAMILY_LEVEL, DEFAULT_LOOKS, LOOK_EVERY = 0.05, 7, 168
DEFAULT_LEVEL = math.floor(FAMILY_LEVEL / DEFAULT_LOOKS * 1e4) / 1e4  # 0.0071: 5 %/7, rounded down


@dataclass(frozen=True)
class Comparison:
    """The evidence and the decision. `statistic` is the HLN-corrected DM statistic
    (positive: the challenger's loss is lower), `p_value` its one-sided p-value; both
    are NaN when the differential has no variance (e.g. identical errors)."""

    pairs: int  # forecast origins compared
    horizon: int
    champion_loss: float  # mean squared error over origins and leads
    challenger_loss: float
    loss_ratio: float  # challenger_loss / champion_loss
    statistic: float
    p_value: float
    lag: int  # the HAC lag used
    promote: bool
    reason: str  # why not, or why, in words
    margin: float
    min_pairs: int
    level: float


def paired_differential(champion_errors: np.ndarray, challenger_errors: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(d_t, champion loss_t, challenger loss_t) per origin; origins where either model
    lacks a finite error at some lead are left out."""
    champion = np.asarray(champion_errors, dtype=np.float64)
    challenger = np.asarray(challenger_errors, dtype=np.float64)
    if champion.ndim == 1:
        champion, challenger = champion[:, None], challenger.reshape(-1, 1)
    if champion.shape != challenger.shape or champion.ndim != 2:
        raise OptionError(f"paired errors must have the same shape (origins, leads): champion "
                          f"{champion.shape}, challenger {challenger.shape}")
    finite = np.isfinite(champion).all(axis=1) & np.isfinite(challenger).all(axis=1)
    champion_loss = np.mean(champion[finite] ** 2, axis=1)
    challenger_loss = np.mean(challenger[finite] ** 2, axis=1)
    return champion_loss - challenger_loss, champion_loss, challenger_loss


def hac_variance(series: np.ndarray, lag: int) -> float:
    """Newey-West long-run variance of a series: gamma_0 + 2 sum_{k=1..lag} (1 - k/(lag+1))
    gamma_k, autocovariances with the 1/T divisor (never negative with Bartlett weights)."""
    centred = np.asarray(series, dtype=np.float64) - np.mean(series)
    count = len(centred)
    variance = float(centred @ centred) / count
    for k in range(1, min(lag, count - 1) + 1):
        variance += 2.0 * (1.0 - k / (lag + 1.0)) * float(centred[k:] @ centred[:-k]) / count
    return max(variance, 0.0)


def automatic_lag(differential: np.ndarray, horizon: int) -> int:
    """max(horizon - 1, Andrews' AR(1) plug-in bandwidth for the Bartlett kernel), at most T / 4."""
    centred = np.asarray(differential, dtype=np.float64) - np.mean(differential)
    count = len(centred)
    denominator = float(centred[:-1] @ centred[:-1]) if count > 2 else 0.0
    if denominator <= 0:
        return horizon - 1
    return max(horizon - 1, min(andrews_lag(float(centred[1:] @ centred[:-1]) / denominator, count), count // 4))


def andrews_lag(rho: float, count: int) -> int:
    """Andrews' (1991) AR(1) plug-in bandwidth for the Bartlett kernel, rho clipped to +-0.97."""
    rho = min(max(rho, -0.97), 0.97)
    alpha = 4 * rho * rho / ((1 - rho) ** 2 * (1 + rho) ** 2)
    return int(1.1447 * (alpha * count) ** (1 / 3))


def diebold_mariano(differential: np.ndarray, horizon: int, lag: int | None = None) -> tuple[float, float]:
    """(HLN-corrected DM statistic, one-sided p-value for H1: mean differential > 0);
    `lag`: the HAC lag (None: automatic_lag)."""
    count = len(differential)
    if count < 2:
        return math.nan, math.nan
    lag = automatic_lag(differential, horizon) if lag is None else lag
    variance = hac_variance(differential, lag) / count
    mean = float(np.mean(differential))
    scale = float(np.max(np.abs(differential)))
    if not variance > (1e-12 * scale) ** 2:  # no spread: the test says nothing
        return math.nan, math.nan
    correction = (count + 1 - 2 * horizon + horizon * (horizon - 1) / count) / count
    statistic = mean / math.sqrt(variance) * math.sqrt(max(correction, 0.0))
    return statistic, 1.0 - student_t_cdf(statistic, count - 1)


def compare(champion_errors: np.ndarray, challenger_errors: np.ndarray, horizon: int,
            margin: float = DEFAULT_MARGIN, min_pairs: int = DEFAULT_MIN_PAIRS,
            level: float = DEFAULT_LEVEL, lag: int | None = None) -> Comparison:
    """The decision on paired errors, shape (origins, leads) in time order (or (origins,));
    `lag`: the HAC lag (None: automatic, at least horizon - 1)."""
    if horizon < 1 or not 0 <= margin < 1 or min_pairs < 2 or not 0 < level < 1:
        raise OptionError(f"horizon {horizon} (>= 1), margin {margin} (in [0, 1)), min_pairs {min_pairs} (>= 2) "
                          f"and level {level} (in (0, 1)) out of range",
                          setting=("horizon", "margin", "min_pairs", "level"))
    differential, champion_loss, challenger_loss = paired_differential(champion_errors, challenger_errors)
    pairs = len(differential)
    champion_mean = float(np.mean(champion_loss)) if pairs else math.nan
    challenger_mean = float(np.mean(challenger_loss)) if pairs else math.nan
    ratio = challenger_mean / champion_mean if pairs and champion_mean > 0 else math.nan
    lag = (automatic_lag(differential, horizon) if pairs > 2 else horizon - 1) if lag is None else lag
    statistic, p_value = diebold_mariano(differential, horizon, lag)
    reason = _why_not(pairs, ratio, p_value, margin, min_pairs, level)
    promote = reason is None
    if promote:
        reason = (f"challenger's loss {100 * (1 - ratio):.1f} % lower over {pairs} forecasts, "
                  f"{p_phrase(p_value)} <= {level:g}")
    return Comparison(pairs, horizon, champion_mean, challenger_mean, ratio, statistic, p_value, lag, promote,
                      reason, margin, min_pairs, level)


@dataclass(frozen=True)
class LeadSummary:
    """What a hub may report per lead instead of the pairs themselves (the shadow
    status's `skill` rows): the number of pairs, both mean squared errors, the mean of
    d = champion error^2 - challenger error^2 and its autocovariances at lags 0 .. lead-1
    (1/n divisor)."""

    lead: int
    pairs: int
    champion_mse: float
    challenger_mse: float
    difference_mean: float
    autocovariances: tuple[float, ...]


def lead_summaries(champion_errors: np.ndarray, challenger_errors: np.ndarray,
                   lags: int | None = None) -> list[LeadSummary]:
    """The per-lead summaries of paired errors (origins, leads), origins in time order, with
    autocovariances at lags 0 .. lead-1 (or 0 .. `lags`, when more are wanted)."""
    champion = np.asarray(champion_errors, dtype=np.float64)
    challenger = np.asarray(challenger_errors, dtype=np.float64)
    found = []
    for index in range(champion.shape[1]):
        ours, theirs = champion[:, index], challenger[:, index]
        keep = np.isfinite(ours) & np.isfinite(theirs)
        ours, theirs = ours[keep], theirs[keep]
        if len(ours) == 0:
            continue
        difference = ours ** 2 - theirs ** 2
        centred = difference - difference.mean()
        count, lead = len(difference), index + 1
        found.append(LeadSummary(lead, count, float(np.mean(ours ** 2)), float(np.mean(theirs ** 2)),
                                 float(difference.mean()),
                                 tuple(float(centred[k:] @ centred[:count - k]) / count
                                       for k in range(min(lead if lags is None else max(lags + 1, lead), count)))))
    return found


def compare_summaries(leads: list[LeadSummary], margin: float = DEFAULT_MARGIN,
                      min_pairs: int = DEFAULT_MIN_PAIRS, level: float = DEFAULT_LEVEL) -> Comparison:
    """The rule on per-lead summaries. The pooled differential is the mean of the leads'
    means; without the covariances between leads its variance is bounded by the leads
    moving together, Var(mean_j dbar_j) <= (mean_j sd(dbar_j))^2 (Cauchy-Schwarz): a
    conservative statistic. Each lead's variance is Newey-West with lag lead - 1, or
    Andrews' longer lag as far as the summary carries autocovariances (report more than
    lead of them to let it: the simulation shows lag lead - 1 is too short for real
    challengers); the HLN correction uses the horizon and the fewest pairs of any lead."""
    if not leads:
        return Comparison(0, 0, math.nan, math.nan, math.nan, math.nan, math.nan, 0, False,
                          "no scored pairs", margin, min_pairs, level)
    horizon = max(lead.lead for lead in leads)
    pairs = min(lead.pairs for lead in leads)
    champion_mean = float(np.mean([lead.champion_mse for lead in leads]))
    challenger_mean = float(np.mean([lead.challenger_mse for lead in leads]))
    ratio = challenger_mean / champion_mean if champion_mean > 0 else math.nan
    spread = float(np.mean([math.sqrt(max(_bartlett(lead), 0.0) / lead.pairs) for lead in leads]))
    mean = float(np.mean([lead.difference_mean for lead in leads]))
    statistic = p_value = math.nan
    if pairs >= 2 and spread > 1e-12 * max(abs(mean), 1e-300):
        correction = (pairs + 1 - 2 * horizon + horizon * (horizon - 1) / pairs) / pairs
        statistic = mean / spread * math.sqrt(max(correction, 0.0))
        p_value = 1.0 - student_t_cdf(statistic, pairs - 1)
    reason = _why_not(pairs, ratio, p_value, margin, min_pairs, level)
    promote = reason is None
    if promote:
        reason = (f"challenger's loss {100 * (1 - ratio):.1f} % lower over {pairs} forecasts, "
                  f"{p_phrase(p_value)} <= {level:g} (per-lead summaries)")
    return Comparison(pairs, horizon, champion_mean, challenger_mean, ratio, statistic, p_value,
                      max(len(lead.autocovariances) for lead in leads) - 1, promote, reason, margin, min_pairs, level)


def _bartlett(lead: LeadSummary) -> float:
    """Newey-West from a lead's autocovariances: lag lead - 1, longer (Andrews) as far as
    they reach."""
    gammas = lead.autocovariances
    if not gammas:
        return 0.0
    lag = lead.lead - 1
    if len(gammas) > lead.lead and gammas[0] > 0:
        lag = max(lag, min(andrews_lag(gammas[1] / gammas[0], lead.pairs), len(gammas) - 1, lead.pairs // 4))
    lag = min(lag, len(gammas) - 1)
    return gammas[0] + 2.0 * sum((1.0 - k / (lag + 1)) * gammas[k] for k in range(1, lag + 1))


def _why_not(pairs: int, ratio: float, p_value: float, margin: float, min_pairs: int,
             level: float) -> str | None:
    if pairs < min_pairs:
        return f"too few scored pairs: {pairs} < {min_pairs}"
    if math.isnan(ratio):
        return "the champion's loss is zero: nothing to improve on"
    if ratio > 1 - margin:
        if ratio >= 1:
            return f"challenger not better: loss ratio {ratio:.3f} >= 1"
        return f"gain below the margin: loss ratio {ratio:.3f} > {1 - margin:.3f}"
    if math.isnan(p_value):
        return "no variance in the loss differential: the test cannot decide"
    if p_value > level:
        return f"not significant: {p_phrase(p_value)} > {level:g}"
    return None


def p_text(p_value: float) -> str:
    """A p-value in two significant digits; one below 1e-15 (past double precision's
    resolution near 1) as such, never as 0."""
    return "nan" if math.isnan(p_value) else "< 1e-15" if p_value < 1e-15 else f"{p_value:.2g}"


def p_phrase(p_value: float) -> str:
    """"p = 0.0042", or "p < 1e-15"."""
    text = p_text(p_value)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


# --- distribution functions (no scipy on the hub) ------------------------------------------

def normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def student_t_cdf(t: float, dof: float) -> float:
    """P(T <= t) for Student's t with `dof` degrees of freedom, through the regularized
    incomplete beta function: P(|T| > |t|) = I_x(dof/2, 1/2) with x = dof / (dof + t^2)."""
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * incomplete_beta(dof / 2.0, 0.5, dof / (dof + t * t))
    return 1.0 - tail if t > 0 else tail


def incomplete_beta(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) by Lentz's continued fraction (Numerical
    Recipes, betai/betacf), accurate to about 1e-14."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def _beta_fraction(a: float, b: float, x: float, iterations: int = 500, tolerance: float = 1e-15) -> float:
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, iterations + 1):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= d * c
        if abs(d * c - 1.0) < tolerance:
            break
    return result
