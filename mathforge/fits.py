"""The curves a data-scaling study fits to accuracy against data size, each with its inverse
(the data size that reaches a target accuracy). Own module so the study (`scale`) and its report
(`scale_report`) both use them without importing each other."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Fit:
    """acc(N) = a + b * log10(N): the straight line of the paper's Figure 5 (log-x axis)."""

    a: float
    b: float
    r2: float

    def predict(self, n: float) -> float:
        return self.a + self.b * math.log10(n)

    def size_for(self, accuracy: float) -> float:
        """Data size at which the line reaches `accuracy` (inf if it never does)."""
        return _power(10.0, (accuracy - self.a) / self.b) if self.b > 0 else math.inf


@dataclass(frozen=True)
class PowerFit:
    """acc(N) = ceiling - k * N^(-alpha): error falls as a power of data towards a floor of
    1 - ceiling (the saturating law of data-scaling studies; the line above cannot bend)."""

    ceiling: float
    k: float
    alpha: float
    r2: float

    def predict(self, n: float) -> float:
        return self.ceiling - self.k * n ** (-self.alpha)

    def size_for(self, accuracy: float) -> float:
        if accuracy >= self.ceiling or self.k <= 0 or self.alpha <= 0:
            return math.inf
        return _power(self.k / (self.ceiling - accuracy), 1 / self.alpha)


def _power(base: float, exponent: float) -> float:
    """base ** exponent, inf where it overflows (a nearly flat fit "reaches" a target at 1e300 samples)."""
    try:
        return base**exponent
    except OverflowError:
        return math.inf


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float(((y - pred) ** 2).sum()) / ss_tot if ss_tot > 0 else 1.0


def fit_log_linear(sizes: Sequence[float], accuracies: Sequence[float]) -> Fit:
    """Least-squares fit of accuracy against log10(size); needs two or more distinct sizes."""
    x = np.log10(np.asarray(sizes, dtype=float))
    y = np.asarray(accuracies, dtype=float)
    if len(set(x.tolist())) < 2:
        raise ValueError("a scaling fit needs at least two distinct data sizes")
    b, a = np.polyfit(x, y, 1)
    return Fit(a=float(a), b=float(b), r2=_r2(y, a + b * x))


def fit_power_law(sizes: Sequence[float], accuracies: Sequence[float]) -> PowerFit:
    """Least-squares fit of acc = ceiling - k * N^-alpha (ceiling in [0, 1]); needs three sizes."""
    from scipy.optimize import curve_fit

    n = np.asarray(sizes, dtype=float)
    y = np.asarray(accuracies, dtype=float)
    if len(set(n.tolist())) < 3:
        raise ValueError("a power-law fit needs at least three distinct data sizes")
    # Fitted on N / N_min so k stays O(1) whatever the unit; k is converted back below.
    n0 = float(n.min())

    def f(x, c, k, a):
        return c - k * x ** (-a)

    p0 = (min(1.0, float(y.max()) + 0.1), max(1e-3, min(1.0, float(y.max()) + 0.1) - float(y.min())), 0.5)
    (c, k, a), _ = curve_fit(f, n / n0, y, p0=p0, bounds=([0.0, 0.0, 0.0], [1.0, 10.0, 5.0]), maxfev=5_000)
    return PowerFit(ceiling=float(c), k=float(k * n0**a), alpha=float(a), r2=_r2(y, f(n / n0, c, k, a)))


# Fit forms by name: every study fits each of them with bootstrap intervals on its parameters.
FITS: dict[str, Callable[[Sequence[float], Sequence[float]], Any]] = {
    "log_linear": fit_log_linear,
    "power_law": fit_power_law,
}
PARAMS = {"log_linear": ("a", "b"), "power_law": ("ceiling", "k", "alpha")}
FORMULAS = {"log_linear": "acc = a + b·log10(N)", "power_law": "acc = ceiling − k·N^(−alpha)"}
