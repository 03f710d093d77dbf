"""Interval estimates over runs (seeds) for benchmark reports.

The estimators of Agarwal et al. (2021, "Deep RL at the Edge of the Statistical Precipice"),
as their ``rliable`` library computes them, on numpy alone:

* one run (one seed) is one sample; a score matrix is ``(runs, tasks)``, and "tasks" are our
  strata (the widths of one curve, say);
* :func:`iqm`: the interquartile mean (25% trimmed from each end, as ``scipy.stats.trim_mean``);
* :func:`stratified_bootstrap_ci`: percentile bootstrap resampling the runs of each task
  separately (``rliable.library.StratifiedBootstrap``);
* :func:`probability_of_improvement`: ``P(X > Y)`` per task (the Mann-Whitney U statistic over
  ``n_x * n_y`` pairs, ties counting 1/2), averaged over tasks, with
  :func:`independent_bootstrap_ci` for its interval (``StratifiedIndependentBootstrap``);
* :func:`paired_bootstrap_ci`: for methods run on the same seeds, the seeds resampled jointly;
* :func:`verdict`: meets / misses / inconclusive from where an interval lies.

Every bootstrap is seeded, so a report rebuilt from the same cells prints the same intervals.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

ArrayLike = Sequence[float] | Sequence[Sequence[float]] | np.ndarray
IQM_MIN_RUNS = 5  # below this a trimmed mean drops (almost) nothing worth dropping: report the mean


def _matrix(scores: ArrayLike, name: str) -> np.ndarray:
    x = np.asarray(scores, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty (runs,) or (runs, tasks) array, got shape {x.shape}")
    return x


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")


def iqm(values: ArrayLike) -> float:
    """Interquartile mean over all runs (and tasks): ``int(0.25 * n)`` values cut from each
    end of the sorted scores, the rest averaged (rliable's ``aggregate_iqm``)."""
    x = np.sort(np.asarray(values, dtype=float).ravel())
    n = len(x)
    if n == 0:
        raise ValueError("iqm of no values")
    cut = int(0.25 * n)
    return float(x[cut : n - cut].mean())


def point_estimate(values: ArrayLike) -> tuple[float, str]:
    """The statistic a report gives for a set of runs: the IQM from ``IQM_MIN_RUNS`` runs on,
    the mean below that; returns the value and ``"IQM"`` or ``"mean"``."""
    x = _matrix(values, "point_estimate")
    if x.shape[0] >= IQM_MIN_RUNS:
        return iqm(x), "IQM"
    return float(x.mean()), "mean"


def aggregate(values: ArrayLike) -> float:
    """:func:`point_estimate`'s value alone (a statistic to bootstrap)."""
    return point_estimate(values)[0]


def _interval(stats: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(stats, [tail, 1.0 - tail])
    return float(low), float(high)


def _resample(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One stratified resample: the runs of each task (column) drawn with replacement."""
    rows = rng.integers(0, x.shape[0], size=x.shape)
    return x[rows, np.arange(x.shape[1])]


def stratified_bootstrap_ci(
    scores: ArrayLike,
    statistic: Callable[[np.ndarray], float] = aggregate,
    level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` (of a ``(runs, tasks)`` matrix): each
    resample draws every task's runs with replacement, separately per task."""
    x = _matrix(scores, "stratified_bootstrap_ci")
    _check_level(level)
    rng = np.random.default_rng(seed)
    return _interval(np.array([statistic(_resample(x, rng)) for _ in range(n_resamples)]), level)


def bootstrap_ci(
    values: ArrayLike,
    statistic: Callable[[np.ndarray], float] = np.mean,
    level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over the runs of one task (the mean by
    default): :func:`stratified_bootstrap_ci` with one stratum."""
    x = np.asarray(values, dtype=float).ravel()
    if len(x) == 0:
        raise ValueError("bootstrap_ci of no values")
    return stratified_bootstrap_ci(x, lambda m: statistic(m.ravel()), level, n_resamples, seed)


def probability_of_improvement(x: ArrayLike, y: ArrayLike) -> float:
    """``P(X > Y)``: for each task the fraction of (run of X, run of Y) pairs where X scores
    higher, ties counting 1/2; averaged over tasks. 0.5 means no difference."""
    a, b = _matrix(x, "probability_of_improvement x"), _matrix(y, "probability_of_improvement y")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"x and y hold different numbers of tasks ({a.shape[1]} and {b.shape[1]})")
    diff = a[:, None, :] - b[None, :, :]  # (runs_x, runs_y, tasks)
    per_task = ((diff > 0).sum(axis=(0, 1)) + 0.5 * (diff == 0).sum(axis=(0, 1))) / (a.shape[0] * b.shape[0])
    return float(per_task.mean())


def independent_bootstrap_ci(
    x: ArrayLike,
    y: ArrayLike,
    statistic: Callable[[np.ndarray, np.ndarray], float] = probability_of_improvement,
    level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a two-sample ``statistic``, resampling the runs of x
    and of y independently, each stratified by task (for runs that do not pair up)."""
    a, b = _matrix(x, "independent_bootstrap_ci x"), _matrix(y, "independent_bootstrap_ci y")
    _check_level(level)
    rng = np.random.default_rng(seed)
    stats = np.array([statistic(_resample(a, rng), _resample(b, rng)) for _ in range(n_resamples)])
    return _interval(stats, level)


def paired_bootstrap_ci(
    x: ArrayLike,
    y: ArrayLike,
    statistic: Callable[[np.ndarray, np.ndarray], float],
    level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a two-sample ``statistic`` for runs paired by seed
    (row i of x and of y share a seed): each resample draws the same rows from both, so the
    seed-to-seed variation both methods share cancels."""
    a, b = _matrix(x, "paired_bootstrap_ci x"), _matrix(y, "paired_bootstrap_ci y")
    if a.shape != b.shape:
        raise ValueError(f"paired runs need equal shapes, got {a.shape} and {b.shape}")
    _check_level(level)
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_resamples):
        rows = rng.integers(0, a.shape[0], size=a.shape[0])
        stats.append(statistic(a[rows], b[rows]))
    return _interval(np.array(stats), level)


def relative_difference(x: ArrayLike, y: ArrayLike) -> float:
    """``(agg(x) - agg(y)) / |agg(y)|`` with ``agg`` = :func:`aggregate`: how far x is above y
    as a fraction of y's magnitude (sound for negative returns too); 0 when both are 0."""
    ax, ay = aggregate(x), aggregate(y)
    if ay == 0:
        return 0.0 if ax == 0 else float(np.sign(ax) * np.inf)
    return (ax - ay) / abs(ay)


def verdict(interval: tuple[float, float], threshold: float) -> str:
    """``"meets"`` if the whole interval lies at or above ``threshold``, ``"misses"`` if it lies
    below, ``"inconclusive"`` if it straddles it: the seeds do not decide."""
    low, high = interval
    if low >= threshold:
        return "meets"
    if high < threshold:
        return "misses"
    return "inconclusive"
