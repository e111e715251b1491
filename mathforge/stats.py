"""Uncertainty for evaluation results: how sure is an accuracy, and is one model really better?

Results are 0/1 (or graded) scores in a matrix of shape (runs, items): one row per training seed
(or sample, for pass@k), one column per test item. A vector is one run. Everything here resamples
that matrix:

- `interval(scores)`: the mean with a percentile bootstrap interval, resampling items and, when
  there are several, runs too (a crossed bootstrap: both the test set and the training seed are
  draws from a population, so both widen the interval).
- `paired_difference(a, b)`: mean(a) - mean(b) on the *same* items, resampling items jointly so
  the items' shared difficulty cancels (far narrower than two independent intervals).
- `mcnemar(a, b)`: the exact McNemar test on paired 0/1 outcomes (binomial on the discordant pairs).
- `replicate_means(scores)`: the bootstrap replicates themselves, for statistics of several
  results (a fit across data sizes is refitted on every replicate; see `mathforge.scale`).
- `wilson(k, n)`: the closed-form interval of one binomial proportion (one run, no resampling).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike

Z95 = 1.959963984540054
N_BOOT = 2_000


@dataclass(frozen=True)
class Interval:
    """An estimate with its `level` confidence interval [lo, hi]."""

    estimate: float
    lo: float
    hi: float
    level: float = 0.95

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def contains(self, value: float) -> bool:
        return self.lo <= value <= self.hi


def as_matrix(scores: ArrayLike) -> np.ndarray:
    """Scores as a float (runs, items) matrix; a vector is one run. Empty or ragged input is an error."""
    m = np.asarray(scores, dtype=float)
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"scores must be a non-empty (runs, items) matrix or a vector, got shape {m.shape}")
    return m


def replicate_means(scores: ArrayLike, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """`n_boot` bootstrap means of `scores`, resampling items and (if more than one) runs.

    A crossed bootstrap written as multinomial weights: replicate b's mean is
    w_runs[b] @ M @ w_items[b] / (runs * items), so no resampled matrix is ever built.
    """
    m = as_matrix(scores)
    runs, items = m.shape
    rng = np.random.default_rng(seed)
    w_items = rng.multinomial(items, np.full(items, 1 / items), size=n_boot)
    w_runs = rng.multinomial(runs, np.full(runs, 1 / runs), size=n_boot) if runs > 1 else np.ones((n_boot, 1))
    return np.einsum("br,ri,bi->b", w_runs, m, w_items) / (runs * items)


def percentile_interval(estimate: float, replicates: ArrayLike, level: float = 0.95) -> Interval:
    """The percentile interval of bootstrap `replicates` around `estimate` (NaN replicates, e.g.
    failed refits, are ignored; inf ones are kept)."""
    reps = np.asarray(replicates, dtype=float)
    reps = reps[~np.isnan(reps)]
    if reps.size == 0:
        return Interval(float(estimate), math.nan, math.nan, level)
    tail = 100 * (1 - level) / 2
    # Replicates may be inf (a target never reached); interpolating next to inf would give NaN.
    method = "linear" if np.isfinite(reps).all() else "inverted_cdf"
    lo, hi = np.percentile(reps, [tail, 100 - tail], method=method)
    return Interval(float(estimate), float(lo), float(hi), level)


def interval(scores: ArrayLike, level: float = 0.95, n_boot: int = N_BOOT, seed: int = 0) -> Interval:
    """Mean score with a bootstrap interval over items (and runs, when there are several)."""
    m = as_matrix(scores)
    return percentile_interval(float(m.mean()), replicate_means(m, n_boot, seed), level)


def paired_difference(a: ArrayLike, b: ArrayLike, level: float = 0.95, n_boot: int = N_BOOT,
                      seed: int = 0) -> Interval:
    """mean(a) - mean(b) over the same items, with a bootstrap interval resampling items jointly.

    `a` and `b` are (runs, items) with the same items in the same column order; their run counts
    may differ (each arm's runs are resampled on their own, the items together).
    """
    ma, mb = as_matrix(a), as_matrix(b)
    if ma.shape[1] != mb.shape[1]:
        raise ValueError(f"paired scores need the same items: {ma.shape[1]} vs {mb.shape[1]} columns")
    items = ma.shape[1]
    rng = np.random.default_rng(seed)
    w_items = rng.multinomial(items, np.full(items, 1 / items), size=n_boot)
    reps = _weighted_means(ma, w_items, rng) - _weighted_means(mb, w_items, rng)
    return percentile_interval(float(ma.mean() - mb.mean()), reps, level)


def _weighted_means(m: np.ndarray, w_items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    runs, items = m.shape
    n_boot = len(w_items)
    w_runs = rng.multinomial(runs, np.full(runs, 1 / runs), size=n_boot) if runs > 1 else np.ones((n_boot, 1))
    return np.einsum("br,ri,bi->b", w_runs, m, w_items) / (runs * items)


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test: `a_only` items right only under a, `b_only` right only under b."""

    a_only: int
    b_only: int
    p_value: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def mcnemar(a: ArrayLike, b: ArrayLike) -> McNemar:
    """Two-sided exact McNemar test on paired 0/1 outcomes of one run each (same items, same order).

    Under "no difference" each discordant pair is a fair coin: p = P(|X - n/2| >= |k - n/2|) for
    X ~ Binomial(n, 1/2), n the discordant pairs (scipy's exact binomial test computes it).
    """
    from scipy.stats import binomtest

    va, vb = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if va.shape != vb.shape or va.ndim != 1:
        raise ValueError(f"mcnemar needs two 0/1 vectors over the same items, got {va.shape} and {vb.shape}")
    a_only, b_only = int((va & ~vb).sum()), int((vb & ~va).sum())
    n = a_only + b_only
    p = 1.0 if n == 0 else float(binomtest(a_only, n, 0.5).pvalue)
    return McNemar(a_only, b_only, p)


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion; sane at 0% and 100% and for small n."""
    if n == 0:
        return (0.0, 0.0)
    p = correct / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, center - half), min(1.0, center + half))


def min_detectable_difference(discordant_rate: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true difference in accuracy a paired test on `n` items detects with probability
    `power` at two-sided level `alpha`, when the runs disagree on `discordant_rate` of the items.

    The per-item difference is -1, 0 or +1; near no difference its variance is the discordant
    rate, so the difference's standard error is sqrt(rate / n) (the normal approximation of the
    McNemar test): detectable = (z_{1 - alpha/2} + z_power) * sqrt(rate / n).
    """
    from scipy.stats import norm

    if n <= 0:
        return math.nan
    return float((norm.ppf(1 - alpha / 2) + norm.ppf(power)) * math.sqrt(discordant_rate / n))
