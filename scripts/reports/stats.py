"""The verdicts' statistics, all from scipy.stats: a paired effect with its bootstrap interval
and paired t test, Holm's step-down correction, the seeds a paired t test needs for 80% power
(noncentral t), and the paper-number checks (the mean's t interval and a TOST equivalence test).
The choices and why are in docs/PROTOCOL.md, "Statistics"."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from scipy import stats

BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 20170714  # fixed: the same runs give the same interval, byte for byte
MAX_SEEDS = 1000           # the power search stops here ("more than 1000")


@dataclass(frozen=True)
class Effect:
    """A paired contrast over `n` seeds: the mean of the per-seed values, its 95% bootstrap
    interval, the two-sided paired t test's p and the per-seed values' sample std."""

    n: int
    mean: float
    low: float
    high: float
    p: float
    sd: float


@contextmanager
def _quiet() -> Iterator[None]:
    """scipy warns on data that nearly agree (a run stuck on a plateau in every seed); the
    code below handles exact agreement itself."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        warnings.simplefilter("ignore", category=stats.DegenerateDataWarning)
        yield


def paired_effect(terms: list[np.ndarray], weights: list[float], offset: float = 0.0,
                  level: float = 0.95) -> Effect:
    """The contrast sum_k weights[k] * terms[k][seed] + offset, paired by seed (every array holds
    the same seeds in the same order). The bootstrap resamples seeds, keeping each seed's values
    together (`paired=True`); percentile intervals, since BCa is undefined when the seeds agree
    exactly and unstable with 3-5 of them."""
    arrays = [np.asarray(t, dtype=float) for t in terms]
    weight = np.asarray(weights, dtype=float)

    def contrast(*columns, axis=-1):
        stacked = np.stack(columns, axis=0)               # (terms, ..., seeds)
        return np.tensordot(weight, stacked, axes=1).mean(axis=axis) + offset

    values = contrast(*arrays)
    per_seed = np.tensordot(weight, np.stack(arrays), axes=1) + offset   # (seeds,)
    n = per_seed.size
    sd = float(np.std(per_seed, ddof=1)) if n > 1 else math.nan
    with _quiet():
        if np.ptp(per_seed) == 0:                          # every seed gives the same value
            low = high = float(values)
        else:
            ci = stats.bootstrap(arrays, contrast, paired=True, vectorized=True,
                                 confidence_level=level, n_resamples=BOOTSTRAP_RESAMPLES,
                                 method="percentile",
                                 rng=np.random.default_rng(BOOTSTRAP_SEED)).confidence_interval
            low, high = float(ci.low), float(ci.high)
        p = paired_t_p(per_seed)
    return Effect(n, float(values), low, high, p, sd)


def paired_t_p(per_seed: np.ndarray) -> float:
    """Two-sided p of the paired t test: ttest_rel(a, b) is ttest_1samp(a - b, 0), and a contrast
    of several cells is one value per seed the same way. Seeds that agree exactly: p 0 for a
    non-zero difference, 1 for none."""
    if np.ptp(per_seed) == 0:
        return 0.0 if per_seed[0] != 0 else 1.0
    return float(stats.ttest_1samp(per_seed, 0.0).pvalue)


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


def t_power(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided one-sample (paired) t test at n seeds for a true mean `effect`."""
    df = n - 1
    critical = stats.t.ppf(1 - alpha / 2, df)
    shift = abs(effect) / sd * math.sqrt(n)
    return float(stats.nct.sf(critical, df, shift) + stats.nct.cdf(-critical, df, shift))


def seeds_for_power(effect: float, sd: float, alpha: float = 0.05,
                    power: float = 0.8) -> int | None:
    """The fewest seeds giving the paired t test `power` against a true mean `effect` with the
    observed per-seed std `sd`; None when sd is 0 or not finite, or more than MAX_SEEDS."""
    if not (math.isfinite(sd) and sd > 0 and math.isfinite(effect) and effect != 0):
        return None
    for n in range(2, MAX_SEEDS + 1):
        if t_power(effect, sd, n, alpha) >= power:
            return n
    return None


@dataclass(frozen=True)
class Agreement:
    """Our seeds' mean against one paper number: the mean's 95% t interval, whether the paper's
    value lies in it, and the TOST equivalence p for |mean - paper| < margin."""

    n: int
    mean: float
    low: float
    high: float
    inside: bool | None
    tost_p: float


def agreement(values: list[float], paper: float, margin: float,
              level: float = 0.95) -> Agreement:
    """Two one-sided t tests (H0: mean <= paper - margin; H0: mean >= paper + margin); the TOST
    p is the larger. Fewer than 2 seeds: no interval, no test (NaN)."""
    data = np.asarray(values, dtype=float)
    n = data.size
    mean = float(data.mean()) if n else math.nan
    if n < 2:
        return Agreement(n, mean, math.nan, math.nan, None, math.nan)
    with _quiet():
        if np.ptp(data) == 0:
            low = high = mean
            below = 0.0 if mean > paper - margin else 1.0
            above = 0.0 if mean < paper + margin else 1.0
        else:
            ci = stats.ttest_1samp(data, paper).confidence_interval(level)
            low, high = float(ci.low), float(ci.high)
            below = float(stats.ttest_1samp(data, paper - margin, alternative="greater").pvalue)
            above = float(stats.ttest_1samp(data, paper + margin, alternative="less").pvalue)
    return Agreement(n, mean, low, high, low <= paper <= high, max(below, above))
