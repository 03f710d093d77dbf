"""Train width-vs-return cells of several tasks, algorithms and overrides in one process pool.

`width_vs_return.py` trains one (task, algo, overrides) grid at a time; on a machine with many
cores, or for a fixed slot of machine time, it is better to fill every core from a list of
grids in priority order and stop at a time limit. This script does that and only trains: the
cells land where `width_vs_return.py` looks for them (finished cells are skipped), and running
`width_vs_return.py` with the same task, algo, seeds and overrides then writes the report.

A plan file holds one group of cells per line, in priority order (blank lines and # comments
are skipped):

    TASK ALGO SELECT SEEDS METHODS [KEY:VALUE ...]

SEEDS is ``0-2`` or ``0,3,5``; METHODS a comma list of width_vs_return methods or ``all``;
KEY:VALUE pairs are -params overrides. A greedy final cell whose best-checkpoint cell is in the
plan too trains once, as that cell (which writes both). Example:

    pendulum ppo final 0-2 us,individual_1.0 student_weight:0.3333
    acrobot a2c final 0-2 all

    python benchmarks/run_cells.py plan.txt --jobs 16 --time-limit 540
    python benchmarks/run_cells.py plan.txt --backend ray --address auto --time-limit 3600
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from cells import add_backend_arguments, backend_from_args, cell_device, parse_seeds  # noqa: E402
from width_vs_return import (  # noqa: E402
    METHODS,
    RESULTS,
    SELECTIONS,
    TASKS,
    CellArgs,
    pending_cells,
    resuming,
    run_cells,
    selection_error,
    train_finals_with_best,
)


class PlanError(ValueError):
    """A malformed plan line."""


def parse_plan(text: str) -> list[tuple[str, str, str, list[int], list[str], dict[str, Any]]]:
    """The plan's groups as (task, algo, select, seeds, methods, params); :class:`PlanError` names
    the first bad line."""
    from usrl.hyperparams import HyperparamError, check_keys, parse_params
    from usrl.train import algorithms

    groups = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        try:
            if len(fields) < 5:
                raise PlanError("expected TASK ALGO SELECT SEEDS METHODS [KEY:VALUE ...]")
            task, algo, select, seeds_text, methods_text, *items = fields
            if task not in TASKS:
                raise PlanError(f"unknown task {task!r} (one of {', '.join(sorted(TASKS))})")
            if algo not in algorithms():
                raise PlanError(f"unknown algo {algo!r} (one of {', '.join(sorted(algorithms()))})")
            if select not in SELECTIONS:
                raise PlanError(f"unknown select {select!r} (one of {', '.join(SELECTIONS)})")
            if error := selection_error(algo, select):
                raise PlanError(error)
            try:
                seeds = parse_seeds(seeds_text)
            except ValueError:
                seeds = []
            if not seeds:
                raise PlanError(f"bad seeds {seeds_text!r}: expected e.g. 0-2 or 0,3,5")
            methods = METHODS if methods_text == "all" else methods_text.split(",")
            unknown = [m for m in methods if m not in METHODS]
            if unknown:
                raise PlanError(f"unknown method {unknown[0]!r} (one of {', '.join(METHODS)}, or all)")
            params = parse_params(items)
            check_keys(params, algorithms()[algo], "the plan")
            if "n_timesteps" in params:
                raise PlanError("n_timesteps is not used: every model trains its task's steps")
        except (PlanError, HyperparamError) as e:
            raise PlanError(f"plan line {number}: {e}") from None
        groups.append((task, algo, select, seeds, methods, params))
    if not groups:
        raise PlanError("the plan holds no cells")
    return groups


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("plan", type=Path, help="plan file (format above)")
    p.add_argument("--jobs", type=int, default=1, help="cells trained in parallel (processes, one thread each)")
    p.add_argument("--time-limit", type=float, default=None, metavar="SECONDS", help="stop unfinished cells then")
    p.add_argument("--out", type=Path, default=RESULTS)
    add_backend_arguments(p)
    args = p.parse_args(argv)
    backend = backend_from_args(p, args)
    if args.jobs < 1:
        p.error("--jobs must be >= 1")
    try:
        groups = parse_plan(args.plan.read_text())
    except OSError as e:
        p.error(f"cannot read plan: {e}")
    except PlanError as e:
        p.error(str(e))
    todo: list[CellArgs] = []
    for task, algo, select, seeds, methods, params in groups:
        for cell in pending_cells(args.out, task, algo, select, params, methods, seeds, cell_device(backend)):
            if cell not in todo:  # cells shared between groups train once
                todo.append(cell)
    todo = train_finals_with_best(todo)
    print(f"{len(todo)} cells to train{resuming(todo)}", flush=True)
    return run_cells(todo, args.jobs, args.time_limit, backend)


if __name__ == "__main__":
    raise SystemExit(main())
