"""What the width benchmarks share (width_vs_return.py, vision_width.py, sr_width.py): one JSON
file per (method, seed) cell, the cells still to train, a pool of one-thread workers with a time
limit, reading a value at a width, and the "mean ± std" entries of their markdown tables."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def one_thread() -> None:
    """Cells train on one torch thread: parallel multi-threaded workers would oversubscribe the
    cores, and one thread is what the recorded train times mean."""
    import torch

    torch.set_num_threads(1)


def cell_path(cell_dir: Path, method: str, seed: int) -> Path:
    """The JSON file of one cell."""
    return cell_dir / f"{method}_s{seed}.json"


def pending(cell_dir: Path, methods: Sequence[str], seeds: Sequence[int]) -> list[tuple[str, int]]:
    """The (method, seed) cells with no file yet, seed-major."""
    return [(m, s) for s in seeds for m in methods if not cell_path(cell_dir, m, s).exists()]


def load_cells(cell_dir: Path, methods: Sequence[str], seeds: Sequence[int]) -> list[dict[str, Any]]:
    """The cells' JSON, seed-major."""
    return [json.loads(cell_path(cell_dir, m, s).read_text()) for s in seeds for m in methods]


def run_pool(
    fn: Callable[..., Any],
    calls: Sequence[tuple[Any, ...]],
    jobs: int,
    time_limit_s: float | None = None,
    describe: Callable[[tuple[Any, ...]], str] = str,
) -> int:
    """Run ``fn(*call)`` for each call in order, ``jobs`` at a time in fresh worker processes (in
    this one for ``jobs=1`` without a time limit), each on one thread. At ``time_limit_s`` the
    unfinished calls are stopped (cells write their file whole or not at all). Returns how many
    failed; a failure is printed (with ``describe(call)``) and does not stop the others."""
    if not calls:
        return 0
    if jobs <= 1 and time_limit_s is None:
        one_thread()  # cells always train on one thread, so their train times compare across --jobs
        for call in calls:
            fn(*call)
        return 0
    import multiprocessing

    deadline = None if time_limit_s is None else time.monotonic() + time_limit_s
    failed = 0
    pool = multiprocessing.get_context().Pool(max(1, jobs), initializer=one_thread, maxtasksperchild=1)
    try:
        results = [(call, pool.apply_async(fn, call)) for call in calls]
        for call, result in results:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                result.get(left)
            except multiprocessing.TimeoutError:
                unfinished = sum(not r.ready() for _, r in results)
                print(f"time limit reached: {unfinished} cells stopped unfinished", flush=True)
                break
            except Exception as e:  # noqa: BLE001  (one cell's failure must not lose the others)
                failed += 1
                print(f"cell {describe(call)} failed: {type(e).__name__}: {e}", flush=True)
    finally:
        pool.terminate()
        pool.join()
    return failed


def value_at(rows: Sequence[dict[str, Any]], w: float, key: str) -> float | None:
    """``key`` of the row at width ``w`` (None if that width was not evaluated)."""
    return next((r[key] for r in rows if r["width"] is not None and abs(r["width"] - w) < 1e-6), None)


def mean_std(xs: Sequence[float], digits: int) -> str:
    """A table entry: mean ± std over seeds, or a dash without values."""
    return f"{np.mean(xs):.{digits}f} ± {np.std(xs):.{digits}f}" if len(xs) else "–"
