"""How often does `mathforge compare` call a difference, when there is none and when there is one?

Simulated pairs of runs on 1,319 items (GSM8K test's size). Each item has a chance p of being
solved, drawn once: most items are settled (a greedy model solves them every run, or never) and a
minority is unstable, which is what makes two runs of equally good models disagree. A run solves
each item with its p, independently.

- null: A and B are two independent runs of the same model (no real difference);
- planted: B is such a run with 60 of its wrong items made right and 20 right items made wrong
  (a net 40 items, 3.0 points, better in expectation).

Printed side by side, for the verdict `compare` uses (exact McNemar) and two alternatives: the
share of pairs called different at alpha = 0.05 (null: want 3-7%; planted: want >= 80%), and the
observed disagreement rate with the minimal detectable difference compare reports.

    python bench/compare_power.py [--pairs 200] [--unstable 0.10]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
from scipy.stats import binom

from mathforge.eval.compare import paired

ITEMS = 1319


def item_chances(rng: np.random.Generator, unstable: float) -> np.ndarray:
    """p per item: settled items at 0.98 or 0.02 (half each side of the unstable share), the
    unstable ones uniform in [0.2, 0.8]."""
    kind = rng.random(ITEMS)
    p = np.where(kind < (1 - unstable) / 2, 0.98, 0.02)
    shaky = kind >= 1 - unstable
    p[shaky] = rng.uniform(0.2, 0.8, shaky.sum())
    return p


def run(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (rng.random(len(p)) < p).astype(int)


def planted(p: np.ndarray, rng: np.random.Generator, gained: int = 60, lost: int = 20) -> np.ndarray:
    b = run(p, rng)
    wrong, right = np.flatnonzero(b == 0), np.flatnonzero(b == 1)
    b[rng.choice(wrong, gained, replace=False)] = 1
    b[rng.choice(right, lost, replace=False)] = 0
    return b


def mid_p(r: dict) -> float:
    """The mid-p McNemar test (exact p minus half the probability of the observed split)."""
    n, k = r["a_only"] + r["b_only"], min(r["a_only"], r["b_only"])
    return min(1.0, 2 * (binom.cdf(k, n, 0.5) - 0.5 * binom.pmf(k, n, 0.5))) if n else 1.0


def calls(results: list[dict], alpha: float) -> dict[str, float]:
    exact = np.mean([r["p_value"] < alpha for r in results])
    midp = np.mean([mid_p(r) < alpha for r in results])
    boot = np.mean([not (r["difference"]["lo"] <= 0 <= r["difference"]["hi"]) for r in results])
    return {"exact McNemar (compare's verdict)": exact, "mid-p McNemar": midp, "bootstrap interval excludes 0": boot}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--unstable", type=float, default=0.10, help="share of items a run solves by chance")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    start = time.monotonic()
    null, plant = [], []
    for i in range(args.pairs):
        p = item_chances(rng, args.unstable)
        null.append(paired(run(p, rng), run(p, rng), seed=i))
        plant.append(paired(run(p, rng), planted(p, rng), seed=i))
    a, b = calls(null, 0.05), calls(plant, 0.05)
    print(f"{args.pairs} pairs x {ITEMS} items, unstable share {args.unstable:.2f}, alpha 0.05 "
          f"({time.monotonic() - start:.1f} s, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")
    print(f"{'test':36s} {'null: called (want 3-7%)':>26s} {'planted +3 pts: detected (want >=80%)':>40s}")
    for name in a:
        print(f"{name:36s} {100 * a[name]:25.1f}% {100 * b[name]:39.1f}%")
    for label, res in (("null", null), ("planted", plant)):
        disc = np.mean([r["discordant_rate"] for r in res])
        mde = np.mean([r["min_detectable"] for r in res])
        diff = np.mean([r["difference"]["estimate"] for r in res])
        print(f"{label:8s}: mean B - A {100 * diff:+.2f} points, disagreement {100 * disc:.1f}% of items, "
              f"min. detectable difference {100 * mde:.2f} points")


if __name__ == "__main__":
    main()
