"""Interval estimates used by the benchmark reports."""

import numpy as np
import pytest

from usrl.stats import bootstrap_ci, iqm


def test_iqm_by_hand() -> None:
    assert iqm([1, 2, 3, 4, 5, 6, 7, 8]) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    assert iqm([100.0, 1, 2, 3]) == pytest.approx(2.5)  # the outlier is cut
    # n = 5: ranks [1.25, 3.75) -> 0.75 of the 2nd value, all of the 3rd, 0.75 of the 4th
    assert iqm([10, 20, 30, 40, 50]) == pytest.approx((0.75 * 20 + 30 + 0.75 * 40) / 2.5)
    assert iqm([7.0]) == 7.0
    with pytest.raises(ValueError):
        iqm([])


def test_bootstrap_ci_is_seeded_and_covers_the_mean() -> None:
    x = np.random.default_rng(1).normal(3.0, 1.0, size=20)
    lo, hi = bootstrap_ci(x)
    assert lo < x.mean() < hi
    assert (lo, hi) == bootstrap_ci(x)
    assert bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)
    # the interval narrows as runs are added (standard error ~ 1/sqrt(n))
    wide = np.subtract(*bootstrap_ci(x[:5])[::-1])
    narrow = np.subtract(*bootstrap_ci(np.random.default_rng(2).normal(3.0, 1.0, size=500))[::-1])
    assert narrow < wide / 3


def test_bootstrap_ci_coverage() -> None:
    """About 95% of the intervals over fresh normal samples hold the true mean."""
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(200):
        lo, hi = bootstrap_ci(rng.normal(0.0, 1.0, size=30), n_resamples=500, seed=int(rng.integers(1 << 30)))
        hits += lo <= 0.0 <= hi
    assert 0.88 <= hits / 200 <= 0.99
    with pytest.raises(ValueError):
        bootstrap_ci([1.0], level=1.5)
