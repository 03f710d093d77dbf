"""Interval estimates for the width-vs-quality reports of the benchmark scripts.

One model's metric at a width is one sample (one seed = one run). Per method and width: the
IQM over seeds (the mean below 5 seeds) with a 95% bootstrap interval. The US net against the
individually trained net at each width, and against each ablation over the whole range: the
relative difference ``(US - other) / |other|`` with an interval that resamples the seeds both
share (paired), its three-way verdict, and the probability of improvement ``P(US > other)``
with its interval. Estimators: ``usrl.stats``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from usrl.plots import Curve

TOLERANCE = 0.05  # the target: US at most 5% of |the individual net's value| below it
Cell = dict[str, Any]
Estimate = tuple[float, float, tuple[float, float]]  # width, statistic, 95% interval


def _by_seed(cells: list[Cell], value: Callable[[Cell], float | None]) -> dict[int, float]:
    return {c["seed"]: v for c in cells if (v := value(c)) is not None}


def interval_estimates(
    by_method: dict[str, list[Cell]],
    *,
    value: Callable[[Cell, float], float | None],
    widths_of: Callable[[Cell], list[float]],
    compare_widths: Sequence[float],
    area: Callable[[Cell], float],
    sandwich: Sequence[str],
    tolerance: float = TOLERANCE,
) -> dict[str, Any]:
    """Estimates from cells grouped by method: ``value(cell, w)`` is a cell's metric at width w,
    ``widths_of`` the widths a sandwich-method cell was evaluated at, ``area`` its metric over
    the range; ``individual_<w>`` cells are the individual nets for ``w`` in ``compare_widths``;
    ``sandwich[0]`` is the US method and the others its ablations. Returns the curves
    (per method: width, statistic, interval), the comparisons, the statistic's name and the
    tolerance."""
    from usrl.stats import (
        IQM_MIN_RUNS,
        aggregate,
        independent_bootstrap_ci,
        paired_bootstrap_ci,
        probability_of_improvement,
        relative_difference,
        stratified_bootstrap_ci,
    )
    from usrl.stats import verdict as three_way

    def curve(values_at: dict[float, list[float]]) -> list[Estimate]:
        return [(w, aggregate(v), stratified_bootstrap_ci(v)) for w, v in sorted(values_at.items()) if v]

    curves: dict[str, list[Estimate]] = {}
    for method in sandwich:
        cs = by_method.get(method, [])
        if cs:
            ws = widths_of(cs[0])
            curves[method] = curve({w: list(_by_seed(cs, lambda c, w=w: value(c, w)).values()) for w in ws})
    individual = {w: _by_seed(by_method.get(f"individual_{w}", []), lambda c, w=w: value(c, w)) for w in compare_widths}
    if any(individual.values()):
        curves["individual"] = curve({w: list(v.values()) for w, v in individual.items()})

    comparisons = []

    def compare(label: str, us: dict[int, float], other: dict[int, float], threshold: float) -> None:
        seeds = sorted(set(us) & set(other))
        if not seeds:
            return
        a, b = np.array([us[s] for s in seeds]), np.array([other[s] for s in seeds])
        rel_ci = paired_bootstrap_ci(a, b, relative_difference)
        comparisons.append(
            {
                "label": label,
                "seeds": len(seeds),
                "relative": relative_difference(a, b),
                "relative_ci": rel_ci,
                "verdict": three_way(rel_ci, threshold),
                "poi": probability_of_improvement(a, b),
                "poi_ci": independent_bootstrap_ci(a, b),
            }
        )

    us_cells = by_method.get(sandwich[0], [])
    for w in compare_widths:
        compare(f"w={w} vs individual", _by_seed(us_cells, lambda c, w=w: value(c, w)), individual[w], -tolerance)
    us_area = _by_seed(us_cells, area)
    for ablation in sandwich[1:]:
        compare(f"area vs {ablation}", us_area, _by_seed(by_method.get(ablation, []), area), 0.0)
    n_max = max((len(c) for c in by_method.values()), default=0)
    return {
        "statistic": "IQM" if n_max >= IQM_MIN_RUNS else "mean",
        "curves": curves,
        "comparisons": comparisons,
        "tolerance": tolerance,
    }


def spectrum_intervals(
    by_method: dict[str, list[Cell]],
    value: Callable[[Cell, float], float | None],
    grid: Sequence[float],
    widths: Sequence[float],
) -> dict[str, Any]:
    """:func:`interval_estimates` for the vision and SR benchmarks: ``us`` and its
    ``us_no_distill`` ablation evaluated on ``grid``, compared with the individual nets at
    ``widths``; a cell's area is its mean over ``widths``."""
    return interval_estimates(
        by_method,
        value=value,
        widths_of=lambda c: [w for w in grid if value(c, w) is not None],
        compare_widths=widths,
        area=lambda c: float(np.mean([value(c, w) for w in widths])),
        sandwich=["us", "us_no_distill"],
    )


def interval_lines(intervals: dict[str, Any], widths: Sequence[float], metric: str) -> list[str]:
    """The report section of :func:`interval_estimates`: a table of statistics with intervals per
    method and width, and one of comparisons with verdicts (markdown lines)."""
    tolerance = intervals["tolerance"]
    lines = [
        "## Interval estimates",
        "",
        f"{intervals['statistic']} over seeds of each model's {metric} (the IQM from 5 seeds on, the mean below) "
        "with a 95% percentile-bootstrap interval (`usrl.stats`, 2000 seeded resamples).",
        "",
        "| method | " + " | ".join(f"w={w}" for w in widths) + " |",
        "|---|" + "---:|" * len(widths),
    ]
    for method, curve in intervals["curves"].items():
        cell = {w: f"{e:.4g} [{ci[0]:.4g}, {ci[1]:.4g}]" for w, e, ci in curve}
        lines.append(f"| {method} | " + " | ".join(cell.get(w, "–") for w in widths) + " |")
    lines += [
        "",
        "Verdicts: the relative difference of the US net's statistic from the other's, `(US - other) / |other|`, "
        "with a 95% interval resampling the seeds both share (paired); *meets* when the interval lies at or above "
        f"the target (-{100 * tolerance:.0f}% against the individual net, 0 against an ablation's area), *misses* "
        "when it lies below, *inconclusive* when it straddles it: the seeds do not decide. P(US > other): the "
        "probability that a US run beats a run of the other (ties count one half), with a 95% interval resampling "
        "each method's seeds independently.",
        "",
        "| comparison | seeds | relative difference [95% CI] | verdict | P(US > other) [95% CI] |",
        "|---|---:|---:|---|---:|",
    ]
    for c in intervals["comparisons"]:
        lo, hi = c["relative_ci"]
        plo, phi = c["poi_ci"]
        lines.append(
            f"| {c['label']} | {c['seeds']} | {100 * c['relative']:+.1f}% [{100 * lo:+.1f}%, {100 * hi:+.1f}%] "
            f"| {c['verdict']} | {c['poi']:.2f} [{plo:.2f}, {phi:.2f}] |"
        )
    lines.append("")
    return lines


def poi_panel(ax: Any, intervals: dict[str, Any]) -> None:
    """Draw the comparisons' probabilities of improvement with their intervals on a matplotlib axis."""
    comps = intervals["comparisons"]
    if not comps:
        ax.axis("off")
        return
    ys = np.arange(len(comps))[::-1]
    est = np.array([c["poi"] for c in comps])
    err = np.abs(np.array([c["poi_ci"] for c in comps]).T - est)
    ax.errorbar(est, ys, xerr=err, fmt="o", color="tab:blue", capsize=3)
    ax.axvline(0.5, color="gray", ls="--", lw=1)
    ax.set_yticks(ys, [c["label"] for c in comps], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("P(US > other), 95% CI")
    ax.set_title("probability of improvement", fontsize=10)


def as_curve(label: str, curve: list[Estimate], macs: dict[float, float] | None = None, points: bool = False) -> Curve:
    """A method's statistic per width, with its intervals as the band, for :mod:`usrl.plots`
    (``macs``: per-sample MACs by width, for the MMACs panel; ``points``: separately trained nets)."""
    widths = [w for w, _, _ in curve]
    band = ([ci[0] for *_, ci in curve], [ci[1] for *_, ci in curve])
    return Curve(
        label, widths, [e for _, e, _ in curve], None if macs is None else [macs[w] for w in widths], band, points
    )


GENERATED_SECTIONS = ("## Interval estimates",)


def keep_notes(path: Path, text: str) -> str:
    """``text`` (a freshly generated report) followed by the sections a person added to the
    report at ``path`` (every ``## `` section the scripts do not generate), so that rebuilding a
    report from its cells never drops the reading written under it."""
    if not path.exists():
        return text
    notes, keep = [], False
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            keep = not line.startswith(GENERATED_SECTIONS)
        if keep:
            notes.append(line)
    if not notes:
        return text
    return text.rstrip("\n") + "\n\n" + "\n".join(notes).rstrip("\n") + "\n"
