"""One plot for every "metric vs width" figure: a metric against width (left) and, when the
curves carry MACs, against MMACs (right). ``usrl.sweep`` (return), ``usrl.vision.evaluate``
(top-1), ``usrl.sr.evaluate`` (PSNR) and the benchmark reports (with interval bands) draw with it.
Needs matplotlib (a usrl dependency), imported when called."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from usrl.utils import atomic_write

Values = Sequence[float] | np.ndarray


@dataclass
class Curve:
    """One method's metric at several widths.

    ``macs`` (per sample) places it on the MMACs panel too; ``band`` (lower, upper) is drawn
    as a shaded area, or as error bars when ``points`` (separately trained nets: one marker per
    net, no line between them).
    """

    label: str
    widths: Values
    values: Values
    macs: Values | None = None
    band: tuple[Values, Values] | None = None
    points: bool = False


def draw_curves(ax: Any, curves: Sequence[Curve], by_macs: bool = False) -> None:
    """Draw ``curves`` on a matplotlib axis against width (or MMACs, skipping curves without MACs)."""
    for curve in curves:
        if by_macs and curve.macs is None:
            continue
        x = np.asarray(curve.macs, dtype=float) / 1e6 if by_macs else np.asarray(curve.widths, dtype=float)
        y = np.asarray(curve.values, dtype=float)
        if curve.points:
            err = None if curve.band is None else np.abs(np.asarray(curve.band, dtype=float) - y)
            ax.errorbar(x, y, yerr=err, fmt="ks", capsize=4, label=curve.label)
            continue
        (line,) = ax.plot(x, y, marker="o", ms=3, label=curve.label)
        if curve.band is not None:
            ax.fill_between(x, curve.band[0], curve.band[1], color=line.get_color(), alpha=0.15)


def plot_spectrum(
    curves: Sequence[Curve],
    ylabel: str,
    title: str,
    path: Path,
    macs_label: str = "MMACs per sample",
    reference: tuple[str, float] | None = None,
) -> list[str]:
    """Write ``path`` (PNG, atomically): the curves against width and, if any carries MACs,
    against MMACs (``macs_label``), with ``reference`` (label, value; e.g. bicubic PSNR) as a
    dashed line. Returns the legend labels of the width panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_macs = any(c.macs is not None for c in curves)
    fig, axes = plt.subplots(1, 2 if by_macs else 1, figsize=(11 if by_macs else 7, 4.3), squeeze=False)
    panels = [(axes[0][0], False, "width")] + ([(axes[0][1], True, macs_label)] if by_macs else [])
    for ax, macs, xlabel in panels:
        draw_curves(ax, curves, macs)
        if reference is not None:
            ax.axhline(reference[1], color="gray", ls="--", label=reference[0])
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"), suffix=".png")
    labels = [t.get_text() for t in axes[0][0].get_legend().get_texts()]
    plt.close(fig)
    return labels
