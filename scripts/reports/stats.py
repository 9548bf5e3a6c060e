"""The verdicts' statistics, all from scipy.stats: a paired effect with its t interval (the one
the paired t test implies), an exact sign-flip permutation test and a bootstrap interval as
robustness columns, TOST equivalence against the smallest effect of interest, Welch's test for
contrasts that share no seed pairing, Holm's step-down correction, power at the adjusted level
as a range over the sd's confidence interval, a Pocock bound for looks taken in sequence, and
the paper-number checks (a prediction interval for one new run; Welch against a printed mean ±
std). The choices and why are in docs/PROTOCOL.md, "Statistics"."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache

import numpy as np
from scipy import optimize, stats

BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 20170714  # fixed: the same runs give the same interval, byte for byte
ROBUST_MIN_SEEDS = 8       # the bootstrap and permutation columns need this many seeds
WIDE_BELOW = 5             # below this many seeds an interval is wide by nature: the row says so
MAX_SEEDS = 1000           # the power search stops here ("more than 1000")
LEVEL = 0.95
SPREAD_TOLERANCE = 1e-9    # relative: seeds this close agree (accuracy steps of 1/1066 differ in
                           # the last bit after subtraction)


def no_spread(values: np.ndarray) -> bool:
    """Every value equal up to SPREAD_TOLERANCE of the largest magnitude (and at least 2 values):
    float arithmetic leaves a steady difference with a spread of ~1e-14, which a t test would
    read as p ~ 0."""
    data = np.asarray(values, dtype=float)
    return bool(data.size > 1 and np.ptp(data) <= SPREAD_TOLERANCE * max(1.0, np.abs(data).max()))


@dataclass(frozen=True)
class Effect:
    """A contrast over seeds. `mean`: its mean; `low`, `high`: the 95% t interval of the mean
    (Welch's, for two groups); `p`: the two-sided t test of `mean == null` (the exact sign-flip
    permutation p when the seeds agree exactly); `sd`: the per-seed values' sample std (paired);
    `perm_p`, `boot`: the robustness columns (NaN below ROBUST_MIN_SEEDS); `tost_p`: TOST of
    |mean| < the smallest effect of interest; `zero_spread`: every seed gave the same value."""

    n: int
    mean: float
    low: float
    high: float
    p: float
    sd: float
    tost_p: float = math.nan
    perm_p: float = math.nan
    boot_low: float = math.nan
    boot_high: float = math.nan
    zero_spread: bool = False
    n_other: int = 0          # Welch: the second group's seeds (0 for a paired contrast)


@contextmanager
def _quiet() -> Iterator[None]:
    """scipy warns on data that nearly agree (a run stuck on a plateau in every seed); the
    code below handles exact agreement itself."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        warnings.simplefilter("ignore", category=stats.DegenerateDataWarning)
        yield


def contrast(terms: Sequence[np.ndarray], weights: Sequence[float],
             offset: float = 0.0) -> np.ndarray:
    """(seeds,) sum_k weights[k] * terms[k][seed] + offset: one value per paired seed."""
    stacked = np.stack([np.asarray(t, dtype=float) for t in terms])     # (terms, seeds)
    return np.tensordot(np.asarray(weights, dtype=float), stacked, axes=1) + offset


def sign_flip_p(values: np.ndarray) -> float:
    """Two-sided exact sign-flip permutation p of mean(values) against 0 (every one of the 2^n
    flips for n <= 16: permutation_test enumerates them when n_resamples allows)."""
    shifted = np.asarray(values, dtype=float)
    if not np.any(shifted):
        return 1.0
    with _quiet():
        found = stats.permutation_test((shifted,), np.mean, permutation_type="samples",
                                       n_resamples=2 ** 16, alternative="two-sided",
                                       vectorized=True, rng=np.random.default_rng(BOOTSTRAP_SEED))
    return float(found.pvalue)


def tost_p(values: np.ndarray, sesoi: float) -> float:
    """TOST p for |mean| < sesoi: the larger of the two one-sided t tests' p."""
    data = np.asarray(values, dtype=float)
    if data.size < 2 or not sesoi > 0:
        return math.nan
    if no_spread(data):
        return 0.0 if abs(data.mean()) < sesoi else 1.0
    with _quiet():
        below = stats.ttest_1samp(data, -sesoi, alternative="greater").pvalue
        above = stats.ttest_1samp(data, sesoi, alternative="less").pvalue
    return float(max(below, above))


def paired_effect(terms: Sequence[np.ndarray], weights: Sequence[float], offset: float = 0.0,
                  sesoi: float = math.nan, level: float = LEVEL) -> Effect:
    """The contrast sum_k weights[k] * terms[k][seed] + offset, paired by seed (every array
    holds the same seeds in the same order), against 0: the t interval and test, their
    robustness checks, TOST against `sesoi`."""
    return seed_effect(contrast(terms, weights, offset), sesoi, level)


def seed_effect(values: np.ndarray, sesoi: float = math.nan, level: float = LEVEL) -> Effect:
    """One value per seed against 0. Seeds that agree exactly have no t test: their p is the
    exact sign-flip p (2 / 2^n at best), so zero spread alone never reaches p < 0.05 at 5
    seeds or fewer (and below 0.05 from 6 seeds on, when the steady difference is beyond the
    smallest effect of interest)."""
    data = np.asarray(values, dtype=float)
    n, mean = data.size, float(data.mean())
    sd = float(np.std(data, ddof=1)) if n > 1 else math.nan
    zero = no_spread(data)
    with _quiet():
        if zero or n < 2:
            low = high = mean
            p = sign_flip_p(data) if n > 1 else math.nan
        else:
            found = stats.ttest_1samp(data, 0.0)
            ci = found.confidence_interval(level)
            low, high, p = float(ci.low), float(ci.high), float(found.pvalue)
        perm, boot = math.nan, (math.nan, math.nan)
        if n >= ROBUST_MIN_SEEDS:
            perm = sign_flip_p(data)
            boot = _bootstrap(data, level) if not zero else (mean, mean)
    return Effect(n, mean, low, high, p, sd, tost_p(data, sesoi), perm, boot[0], boot[1], zero)


def _bootstrap(data: np.ndarray, level: float) -> tuple[float, float]:
    ci = stats.bootstrap((data,), np.mean, confidence_level=level, method="percentile",
                         n_resamples=BOOTSTRAP_RESAMPLES, vectorized=True,
                         rng=np.random.default_rng(BOOTSTRAP_SEED)).confidence_interval
    return float(ci.low), float(ci.high)


def welch_effect(first: np.ndarray, second: np.ndarray, null: float = 0.0,
                 sesoi: float = math.nan, level: float = LEVEL) -> Effect:
    """mean(first) - mean(second) for two groups with no seed pairing between them: Welch's
    t test (`ttest_ind(equal_var=False)`) and its interval. TOST uses Welch's test too."""
    a, b = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    mean = float(a.mean() - b.mean())
    sd = float(math.sqrt(np.var(a, ddof=1) / a.size + np.var(b, ddof=1) / b.size)) \
        if min(a.size, b.size) > 1 else math.nan
    if not sd > 0 or (no_spread(a) and no_spread(b)):   # no spread: no test, never decides
        return Effect(min(a.size, b.size), mean, mean, mean, 1.0, sd, math.nan,
                      zero_spread=True, n_other=b.size)
    with _quiet():
        found = stats.ttest_ind(a, b + null, equal_var=False)
        ci = found.confidence_interval(level)
        equal = math.nan
        if sesoi > 0:
            below = stats.ttest_ind(a, b - sesoi, equal_var=False, alternative="greater").pvalue
            above = stats.ttest_ind(a, b + sesoi, equal_var=False, alternative="less").pvalue
            equal = float(max(below, above))
    return Effect(a.size, mean, float(ci.low) + null, float(ci.high) + null,
                  float(found.pvalue), sd, equal, n_other=b.size)


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment (the family: one claim's comparisons), in the input order.
    The i-th smallest p is multiplied by (m - i), kept monotone, capped at 1."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted = [1.0] * len(pvalues)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[index]))
        adjusted[index] = running
    return adjusted


def t_power(effect: float, sd: float, n, alpha: float = 0.05):
    """Power of the two-sided one-sample (paired) t test at n seeds (a number or an array) for a
    true mean `effect`: df = n - 1, noncentrality effect / sd * sqrt(n)."""
    df = np.asarray(n, dtype=float) - 1
    critical = stats.t.ppf(1 - alpha / 2, df)
    shift = abs(effect) / sd * np.sqrt(df + 1)
    power = stats.nct.sf(critical, df, shift) + stats.nct.cdf(-critical, df, shift)
    return float(power) if np.ndim(power) == 0 else power


def seeds_for_power(effect: float, sd: float, alpha: float = 0.05,
                    power: float = 0.8) -> int | None:
    """The fewest seeds giving the paired t test `power` against a true mean `effect` with
    per-seed std `sd`; None when sd is 0 or not finite, or more than MAX_SEEDS. Power grows
    with n, so one vectorized pass over 2..MAX_SEEDS finds it."""
    if not (math.isfinite(sd) and sd > 0 and math.isfinite(effect) and effect != 0):
        return None
    counts = np.arange(2, MAX_SEEDS + 1)
    enough = np.nonzero(t_power(effect, sd, counts, alpha) >= power)[0]
    return int(counts[enough[0]]) if enough.size else None


def sd_interval(sd: float, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The sd's confidence interval from the chi-square law of (n - 1) s^2 / sigma^2."""
    df = n - 1
    return (sd * math.sqrt(df / stats.chi2.ppf(0.5 + level / 2, df)),
            sd * math.sqrt(df / stats.chi2.ppf(0.5 - level / 2, df)))


def seeds_range(effect: float, sd: float, n: int, alpha: float,
                power: float = 0.8) -> tuple[int | None, int | None]:
    """seeds_for_power at the low and the high end of the sd's 95% interval: a 3-seed sd is
    itself uncertain, so the seed count is a range."""
    if not (n > 1 and math.isfinite(sd) and sd > 0):
        return None, None
    low, high = sd_interval(sd, n)
    return seeds_for_power(effect, low, alpha, power), seeds_for_power(effect, high, alpha, power)


@cache
def pocock_alpha(looks: tuple[int, ...], alpha: float = 0.05) -> float:
    """The nominal two-sided level of each look under Pocock's bound: one constant c with
    P(|Z_k| > c at some look) = alpha under the null, where the looks' z statistics are
    correlated as sqrt(n_i / n_j) (information grows with the seeds)."""
    if len(looks) < 2:
        return alpha
    info = np.asarray(looks, dtype=float)
    corr = np.sqrt(np.minimum.outer(info, info) / np.maximum.outer(info, info))
    law = stats.multivariate_normal(mean=np.zeros(len(info)), cov=corr,
                                    seed=BOOTSTRAP_SEED)

    def excess(c: float) -> float:
        inside = law.cdf(np.full(len(info), c), lower_limit=np.full(len(info), -c))
        return (1.0 - inside) - alpha

    c = optimize.brentq(excess, stats.norm.ppf(1 - alpha / 2), 5.0, xtol=1e-6)
    return float(round(2 * stats.norm.sf(c), 5))


@dataclass(frozen=True)
class Agreement:
    """Our seeds against one printed paper number. `low`, `high`: a 95% prediction interval
    for one new run (the paper printed one run) or, against a printed mean ± std, the Welch
    interval of ours − paper; `inside`: the paper's value (or 0) in it; `p`: Welch's p
    (NaN for a single run); `tost_p`: equivalence within the margin (Welch; NaN otherwise)."""

    n: int
    mean: float
    low: float
    high: float
    inside: bool | None
    p: float
    tost_p: float


def prediction_interval(values: list[float], paper: float,
                        level: float = LEVEL) -> Agreement:
    """mean ± t(n-1) * sd * sqrt(1 + 1/n): where one more run of our protocol would land; the
    paper's single run is checked against it."""
    data = np.asarray(values, dtype=float)
    n = data.size
    mean = float(data.mean()) if n else math.nan
    if n < 2 or no_spread(data):        # no spread: no interval to check against (cannot tell)
        return Agreement(n, mean, math.nan, math.nan, None, math.nan, math.nan)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * np.std(data, ddof=1) * math.sqrt(1 + 1 / n)
    low, high = mean - float(half), mean + float(half)
    return Agreement(n, mean, low, high, low <= paper <= high, math.nan, math.nan)


def welch_against(values: list[float], paper_mean: float, paper_std: float, paper_n: int,
                  margin: float, level: float = LEVEL) -> Agreement:
    """Our seeds against the paper's mean ± std over `paper_n` runs: Welch's test of ours −
    paper (`ttest_ind_from_stats`, equal_var=False), its interval, and TOST within ± margin."""
    data = np.asarray(values, dtype=float)
    n = data.size
    mean = float(data.mean()) if n else math.nan
    if n < 2:
        return Agreement(n, mean, math.nan, math.nan, None, math.nan, math.nan)
    sd = float(np.std(data, ddof=1))
    with _quiet():
        def test(shift: float, side: str = "two-sided"):
            return stats.ttest_ind_from_stats(mean, sd, n, paper_mean + shift, paper_std,
                                              paper_n, equal_var=False, alternative=side)
        p = float(test(0.0).pvalue)
        se2 = sd ** 2 / n + paper_std ** 2 / paper_n
        df = se2 ** 2 / ((sd ** 2 / n) ** 2 / (n - 1) + (paper_std ** 2 / paper_n) ** 2
                         / (paper_n - 1)) if se2 > 0 else math.inf
        half = stats.t.ppf(0.5 + level / 2, df) * math.sqrt(se2)
        equal = max(float(test(-margin, "greater").pvalue), float(test(margin, "less").pvalue))
    diff = mean - paper_mean
    low, high = float(diff - half), float(diff + half)
    return Agreement(n, mean, low, high, bool(low <= 0 <= high), p, float(equal))
