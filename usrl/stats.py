"""Interval estimates over runs (seeds) for benchmark reports.

One run (one seed) is one sample. ``iqm`` is the interquartile mean of Agarwal et al. (2021,
"Deep RL at the Edge of the Statistical Precipice"): the mean of the middle 50% of the runs,
robust to one outlier seed yet less noisy than the median. ``bootstrap_ci`` is a percentile
bootstrap over runs, the interval those authors report (stratified over tasks when there are
several; our reports hold one task per table, so the strata are trivial).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def iqm(values: Sequence[float] | np.ndarray) -> float:
    """Interquartile mean: the mean of the runs between the 25th and 75th percentiles, each run
    weighted by the fraction of it inside that band (so ``n`` need not be a multiple of 4)."""
    x = np.sort(np.asarray(values, dtype=float).ravel())
    n = len(x)
    if n == 0:
        raise ValueError("iqm of no values")
    lo, hi = 0.25 * n, 0.75 * n
    # run i covers [i, i+1) on the rank axis; keep its overlap with [lo, hi)
    weights = np.clip(np.minimum(np.arange(1, n + 1), hi) - np.maximum(np.arange(n), lo), 0.0, None)
    return float((weights * x).sum() / weights.sum())


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    statistic: Callable[[np.ndarray], float] = np.mean,
    level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over runs: resample the runs with
    replacement ``n_resamples`` times (seeded, so reports are reproducible)."""
    x = np.asarray(values, dtype=float).ravel()
    if len(x) == 0:
        raise ValueError("bootstrap_ci of no values")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_resamples, len(x)))
    stats = np.array([statistic(x[i]) for i in idx])
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(stats, [tail, 1.0 - tail])
    return float(low), float(high)
