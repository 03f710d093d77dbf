"""The sandwich rule: which widths one training step trains."""

from __future__ import annotations

import torch

from usrl.nn.width import check_width_range


def sandwich_widths(n: int, low: float, high: float, generator: torch.Generator | None = None) -> list[float]:
    """Widths for one training step: ``[high, low]`` plus ``n - 2`` uniform random widths in between.

    ``n = 1`` gives ``[high]`` (plain training at full width) and ``n = 2`` gives ``[high, low]``.
    The largest width comes first so that it can serve as the teacher of the others.
    Pass a seeded ``torch.Generator`` for reproducible widths.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of sandwich widths must be an integer >= 1, got {n!r}")
    low, high = check_width_range(low, high)
    if n == 1:
        return [high]
    middle = torch.rand(n - 2, generator=generator, dtype=torch.float64) * (high - low) + low
    return [high, low, *(float(w) for w in middle)]
