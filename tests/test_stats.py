"""Interval estimates used by the benchmark reports (usrl.stats), against scipy's estimators
and rliable's intervals on a fixed sample."""

import numpy as np
import pytest
import scipy.stats

from usrl.stats import (
    bootstrap_ci,
    independent_bootstrap_ci,
    iqm,
    paired_bootstrap_ci,
    point_estimate,
    probability_of_improvement,
    relative_difference,
    stratified_bootstrap_ci,
    verdict,
)

# A fixed sample and what rliable 1.2.0 (arch 7.2.0, pandas 2.3.3, in a separate venv: its pins
# do not install beside our pandas 3) computed on it, with random_state=RandomState(0) and (1):
#   x = np.random.default_rng(3).normal(0, 1, (10, 4)); y = np.random.default_rng(4).normal(0.3, 1, (7, 4))
#   metrics.aggregate_iqm(x); metrics.probability_of_improvement(x, y)
#   rly.get_interval_estimates({"a": x}, metrics.aggregate_iqm, reps=20000, random_state=...)
#   rly.get_interval_estimates({"a": (x, y)}, metrics.probability_of_improvement, reps=20000, random_state=...)
RLIABLE_SAMPLE_SEEDS = (3, 4)
RLIABLE_IQM, RLIABLE_POI = -0.07644914680113164, 0.47857142857142854
RLIABLE_IQM_CIS = [(-0.35569575123919056, 0.2076361989779167), (-0.3553761868625672, 0.20319360209049725)]
RLIABLE_POI_CIS = [(0.33571428571428574, 0.625), (0.33214285714285713, 0.625)]


def _sample() -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(RLIABLE_SAMPLE_SEEDS[0]).normal(0.0, 1.0, (10, 4))
    y = np.random.default_rng(RLIABLE_SAMPLE_SEEDS[1]).normal(0.3, 1.0, (7, 4))
    return x, y


@pytest.mark.parametrize("n", [1, 3, 4, 5, 8, 10, 13])
def test_iqm_is_scipys_quarter_trimmed_mean(n: int) -> None:
    x = np.random.default_rng(n).normal(size=n)
    assert iqm(x) == pytest.approx(scipy.stats.trim_mean(x, 0.25))
    m = np.random.default_rng(n).normal(size=(n, 3))
    assert iqm(m) == pytest.approx(scipy.stats.trim_mean(m, 0.25, axis=None))
    assert iqm([100.0, 1, 2, 3]) == pytest.approx(2.5)  # the outlier is cut
    with pytest.raises(ValueError):
        iqm([])


def test_point_estimate_is_the_mean_below_five_runs_and_the_iqm_from_five() -> None:
    assert point_estimate([1.0, 2.0, 30.0]) == (pytest.approx(11.0), "mean")
    assert point_estimate([1.0, 2.0, 3.0, 4.0, 500.0]) == (pytest.approx(3.0), "IQM")


def test_probability_of_improvement_is_the_mann_whitney_statistic() -> None:
    x, y = _sample()
    per_task = [scipy.stats.mannwhitneyu(x[:, t], y[:, t], alternative="greater").statistic / 70 for t in range(4)]
    assert probability_of_improvement(x, y) == pytest.approx(np.mean(per_task))
    assert probability_of_improvement([1.0, 2.0], [1.0, 2.0]) == 0.5  # ties count one half
    assert probability_of_improvement([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert probability_of_improvement(y, x) == pytest.approx(1 - probability_of_improvement(x, y))
    with pytest.raises(ValueError, match="different numbers of tasks"):
        probability_of_improvement(x, y[:, :2])


def test_stratified_bootstrap_resamples_runs_within_each_task() -> None:
    # each task's runs are all equal: any resample within tasks keeps every column, so the
    # mean over the matrix cannot move (an unstratified bootstrap would mix the columns)
    m = np.tile([0.0, 10.0, 20.0], (6, 1))
    assert stratified_bootstrap_ci(m, np.mean) == (10.0, 10.0)
    x, _ = _sample()
    assert stratified_bootstrap_ci(x) == stratified_bootstrap_ci(x)  # seeded
    assert stratified_bootstrap_ci(x, seed=1) != stratified_bootstrap_ci(x, seed=2)


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


def test_pairing_by_seed_cancels_the_variation_both_methods_share() -> None:
    seeds_effect = np.random.default_rng(5).normal(0.0, 50.0, size=8)
    us, ref = 100.0 + seeds_effect, 104.0 + seeds_effect  # us is exactly 4 below on every seed
    diff = lambda a, b: float(a.mean() - b.mean())  # noqa: E731
    assert paired_bootstrap_ci(us, ref, diff) == pytest.approx((-4.0, -4.0))
    lo, hi = independent_bootstrap_ci(us, ref, diff)
    assert lo < -20 and hi > 10  # unpaired, the seeds' spread swamps the difference
    with pytest.raises(ValueError, match="equal shapes"):
        paired_bootstrap_ci(us, ref[:5], diff)


def test_relative_difference_and_three_way_verdicts() -> None:
    assert relative_difference([95.0, 95.0], [100.0, 100.0]) == pytest.approx(-0.05)
    assert relative_difference([-84.0], [-80.0]) == pytest.approx(-0.05)  # negative returns: 5% worse
    assert relative_difference([0.0], [0.0]) == 0.0
    assert verdict((-0.04, 0.02), -0.05) == "meets"
    assert verdict((-0.09, -0.06), -0.05) == "misses"
    assert verdict((-0.08, 0.01), -0.05) == "inconclusive"


def test_estimates_agree_with_rliable_on_a_fixed_sample() -> None:
    """Point estimates exactly; intervals within the spread of rliable's own two runs plus the
    Monte-Carlo error of 20000 resamples (about 0.005 for the IQM's bounds here)."""
    x, y = _sample()
    assert iqm(x) == pytest.approx(RLIABLE_IQM, abs=1e-12)
    assert probability_of_improvement(x, y) == pytest.approx(RLIABLE_POI, abs=1e-12)
    ours = np.array(stratified_bootstrap_ci(x, iqm, n_resamples=20000))
    assert np.abs(ours - np.mean(RLIABLE_IQM_CIS, axis=0)).max() < 0.02
    ours = np.array(independent_bootstrap_ci(x, y, n_resamples=20000))
    assert np.abs(ours - np.mean(RLIABLE_POI_CIS, axis=0)).max() < 0.01
