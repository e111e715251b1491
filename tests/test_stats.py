import math

import numpy as np
import pytest

from mathforge.stats import as_matrix, interval, mcnemar, paired_difference, replicate_means, wilson


def test_interval_of_a_constant_is_a_point():
    iv = interval(np.ones(50))
    assert (iv.estimate, iv.lo, iv.hi) == (1.0, 1.0, 1.0)


def test_interval_over_items_matches_the_binomial():
    scores = np.array([1] * 200 + [0] * 200)  # 50% of 400 items
    iv = interval(scores, n_boot=4_000)
    lo, hi = wilson(200, 400)  # 0.451..0.549; the percentile bootstrap agrees to about a point
    assert iv.estimate == 0.5
    assert iv.lo == pytest.approx(lo, abs=0.01) and iv.hi == pytest.approx(hi, abs=0.01)


def test_seeds_that_disagree_widen_the_interval():
    rng = np.random.default_rng(1)
    runs = np.stack([rng.random(1_000) < p for p in (0.2, 0.5, 0.8)]).astype(float)
    crossed = interval(runs)
    items_only = interval(runs.mean(axis=0))  # the same mean, seeds treated as fixed
    assert crossed.estimate == pytest.approx(items_only.estimate)
    assert crossed.hi - crossed.lo > 5 * (items_only.hi - items_only.lo)
    assert crossed.contains(0.5)


def test_replicates_are_reproducible_and_centred():
    scores = (np.arange(300) % 3 == 0).astype(float)
    a, b = replicate_means(scores, 500, seed=7), replicate_means(scores, 500, seed=7)
    assert np.array_equal(a, b)
    assert a.mean() == pytest.approx(1 / 3, abs=0.01)


def test_paired_difference_is_exact_when_one_arm_fixes_items():
    rng = np.random.default_rng(0)
    b = (rng.random(400) < 0.5).astype(float)
    a = b.copy()
    wrong = np.flatnonzero(b == 0)[:24]
    a[wrong] = 1  # a is right on every item b gets right, plus 24 more: +6 points
    diff = paired_difference(a, b)
    assert diff.estimate == pytest.approx(0.06)
    assert 0.03 < diff.lo < diff.hi < 0.09  # excludes 0 ...
    ia, ib = interval(a), interval(b)
    assert ia.lo < ib.hi  # ... although the two arms' own intervals overlap


def test_paired_difference_of_identical_runs_is_zero():
    a = (np.arange(100) % 2).astype(float)
    diff = paired_difference(a, a)
    assert (diff.estimate, diff.lo, diff.hi) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="same items"):
        paired_difference(a, a[:50])


@pytest.mark.parametrize("a_only,b_only,p", [
    (10, 0, 2 * 0.5**10),  # ten discordant pairs, all one way
    (5, 5, 1.0),
    (1, 0, 1.0),
    (2, 10, 2 * (1 + 12 + 66) / 4096),  # 2 * P(X <= 2), X ~ Bin(12, 1/2)
    (0, 0, 1.0),  # no discordant pair: no evidence either way
])
def test_mcnemar_exact(a_only, b_only, p):
    both = 7  # concordant pairs do not enter the test
    a = [1] * a_only + [0] * b_only + [1] * both + [0] * 3
    b = [0] * a_only + [1] * b_only + [1] * both + [0] * 3
    got = mcnemar(a, b)
    assert (got.a_only, got.b_only) == (a_only, b_only)
    assert got.p_value == pytest.approx(p)


def test_bad_shapes_are_clear_errors():
    with pytest.raises(ValueError, match="non-empty"):
        as_matrix([])
    with pytest.raises(ValueError, match="same items"):
        mcnemar([1, 0], [1, 0, 1])
    assert math.isclose(as_matrix([1, 0]).shape[0], 1)
