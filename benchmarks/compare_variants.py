"""One method under two settings, paired by seed: did a change to the method help?

``width_vs_return.py`` puts the US net beside individual nets and its ablations under one set of
overrides. Deciding whether to change the method itself (a guard on or off, another teacher, a
new default) needs the same method's cells under both settings, seed by seed: seeds that are hard
for one setting tend to be hard for the other, so the paired difference is far tighter than two
separate intervals. Per width of the report (and the area, the mean return over the range):

  * each setting's IQM over seeds (the mean below 5 seeds) with its 95% bootstrap interval;
  * the difference ``changed - base`` of the seeds' mean, with a 95% interval resampling the
    seeds both share, and the verdict: *better* (interval above 0), *worse* (below) or
    *not decided* (it straddles 0);
  * the seeds where the change scored higher / lower, and ``P(changed > base)`` with its interval;
  * and a per-seed table of the areas, which shows a bimodal task's seeds that never learn.

It trains nothing: it reads the cells ``width_vs_return.py`` or ``run_cells.py`` left (both
settings' cells must exist, trained with the current code's settings) and names a plan line that
trains the missing ones. The report goes to
``benchmarks/results/compare/<base name>__<change>.md``.

    python benchmarks/compare_variants.py --task acrobot --algo a2c --seeds 0-19 \\
        --base policy_kwargs.slim_critic:False student_weight:0.3333 grad_clip:joint teacher_guard:null \\
        --change teacher_guard:drift
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from cells import load_cells, params_tag, parse_seeds, pending, seeds_label  # noqa: E402
from width_vs_return import (  # noqa: E402
    METHODS,
    RESULTS,
    SELECTIONS,
    TASKS,
    WIDTHS,
    at,
    auc,
    cell_file,
    result_name,
    selection_parts,
    stale_cells,
)

SWEPT = [m for m in METHODS if not m.startswith("individual_")]  # the methods evaluated at every width


def paired_verdict(interval: tuple[float, float]) -> str:
    """*better* / *worse* when the difference's interval lies strictly above / below 0."""
    low, high = interval
    return "better" if low > 0 else "worse" if high < 0 else "not decided"


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _interval(ci: tuple[float, float]) -> str:
    return f"[{_fmt(ci[0])}, {_fmt(ci[1])}]"


def paired_rows(base: dict[int, dict[str, Any]], changed: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per width of the report and for the area: both settings' statistics and the paired
    comparison, from cells keyed by seed (the same seeds in both)."""
    from usrl.stats import (
        aggregate,
        bootstrap_ci,
        independent_bootstrap_ci,
        paired_bootstrap_ci,
        probability_of_improvement,
    )

    seeds = sorted(base)
    metrics: list[tuple[str, Any]] = [(f"w={w}", lambda c, w=w: at(c["rows"], w)) for w in WIDTHS]
    metrics.append(("area", lambda c: auc(c["rows"])))
    out = []
    for label, value in metrics:
        a = np.array([value(base[s]) for s in seeds], dtype=float)
        b = np.array([value(changed[s]) for s in seeds], dtype=float)
        diff_ci = paired_bootstrap_ci(b, a, lambda x, y: float(np.mean(x - y)))
        out.append(
            {
                "label": label,
                "base": (aggregate(a), bootstrap_ci(a, aggregate)),
                "changed": (aggregate(b), bootstrap_ci(b, aggregate)),
                "difference": (float(np.mean(b - a)), diff_ci),
                "verdict": paired_verdict(diff_ci),
                "higher": int(np.sum(b > a)),
                "lower": int(np.sum(b < a)),
                "poi": (probability_of_improvement(b, a), independent_bootstrap_ci(b, a)),
            }
        )
    return out


def report(
    task: str,
    algo: str,
    select: str,
    method: str,
    base_params: dict[str, Any],
    change: dict[str, Any],
    base: dict[int, dict[str, Any]],
    changed: dict[int, dict[str, Any]],
    command: str,
) -> str:
    """The markdown report of :func:`paired_rows` and the per-seed areas."""
    from usrl.stats import IQM_MIN_RUNS

    seeds = sorted(base)
    statistic = "IQM" if len(seeds) >= IQM_MIN_RUNS else "mean"
    chosen, sampled = selection_parts(select)
    which = ("final weights" if chosen == "final" else "best checkpoints") + (", sampled actions" if sampled else "")
    given = ", ".join(f"`{k}: {v}`" for k, v in sorted(base_params.items())) or "none (the preset)"
    changes = ", ".join(f"`{k}: {v}`" for k, v in sorted(change.items()))
    lines = [
        f"# {method} on {task} ({TASKS[task]['env']}, {algo.upper()}, {which}): {changes} against the base",
        "",
        f"Command: `{command}`  ",
        f"Base overrides: {given}; the change adds {changes}  ",
        f"Seeds: {seeds_label(seeds)} ({len(seeds)}, the same in both); {TASKS[task]['steps']} env steps per model; "
        "each model's mean return over the width_vs_return evaluation episodes.",
        "",
        f"{statistic} over seeds with a 95% bootstrap interval; the difference is the seeds' mean of"
        " `changed - base`, with a 95% interval resampling the seeds (paired): *better* / *worse* when the"
        " interval lies above / below 0, *not decided* when it straddles 0. Higher / lower: seeds where the"
        " change scored above / below the base. P(changed > base): over all pairs of runs, ties one half,"
        " its interval resampling each setting's seeds independently.",
        "",
        f"| | base {statistic} | changed {statistic} | difference | verdict | higher / lower | P(changed > base) |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in paired_rows(base, changed):
        lines.append(
            f"| {r['label']} | {_fmt(r['base'][0])} {_interval(r['base'][1])}"
            f" | {_fmt(r['changed'][0])} {_interval(r['changed'][1])}"
            f" | {r['difference'][0]:+.4g} {_interval(r['difference'][1])} | {r['verdict']}"
            f" | {r['higher']} / {r['lower']} | {r['poi'][0]:.2f} [{r['poi'][1][0]:.2f}, {r['poi'][1][1]:.2f}] |"
        )
    lines += ["", "Area (mean return over the width range) per seed:", "", "| seed | base | changed | difference |"]
    lines.append("|---:|---:|---:|---:|")
    for s in seeds:
        a, b = auc(base[s]["rows"]), auc(changed[s]["rows"])
        lines.append(f"| {s} | {_fmt(a)} | {_fmt(b)} | {b - a:+.4g} |")
    return "\n".join(lines) + "\n"


def _params(values: Sequence[str] | None, flag: str, algo: str, p: argparse.ArgumentParser) -> dict[str, Any]:
    from usrl.hyperparams import HyperparamError, check_keys, parse_params
    from usrl.train import algorithms

    try:
        params = parse_params(list(values or []))
        check_keys(params, algorithms()[algo], flag)
    except HyperparamError as e:
        p.error(str(e))
    return params


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=sorted(TASKS), required=True)
    p.add_argument("--algo", choices=["dqn", "ppo", "a2c"], default="dqn")
    p.add_argument("--select", choices=SELECTIONS, default="final")
    p.add_argument(
        "--method", choices=SWEPT, default="us", help="the method (swept across widths) whose two settings are compared"
    )
    p.add_argument("--seeds", required=True, help="seeds, 0-19 or 0,3,5")
    p.add_argument("--base", nargs="*", metavar="KEY:VALUE", help="the base setting's -params overrides")
    p.add_argument("--change", nargs="+", required=True, metavar="KEY:VALUE", help="overrides the change adds")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError:
        p.error(f"--seeds: expected 0-19 or 0,3,5, got {args.seeds!r}")
    base_params = _params(args.base, "--base", args.algo, p)
    change = _params(args.change, "--change", args.algo, p)
    if all(base_params.get(k, object()) == v for k, v in change.items()):
        p.error("--change sets nothing the base does not already have")
    changed_params = {**base_params, **change}

    loaded = []
    for params in (base_params, changed_params):
        cell_dir = cell_file(args.out, args.task, args.algo, args.select, params, args.method, seeds[0]).parent
        missing = [s for _, s in pending(cell_dir, [args.method], seeds)]
        if missing:
            plan = " ".join(f"{k}:{v}" for k, v in sorted(params.items()))
            print(
                f"error: {len(missing)} {args.method} cells missing (seeds {seeds_label(missing)}); train them with "
                f"this run_cells.py plan line: {args.task} {args.algo} {args.select} {seeds_label(missing)} "
                f"{args.method} {plan}".rstrip(),
                file=sys.stderr,
            )
            return 2
        found = dict(zip(seeds, load_cells(cell_dir, [args.method], seeds), strict=True))
        stale = stale_cells(args.task, args.algo, params, list(found.values()))
        if stale:
            print(
                f"error: cells trained with other settings than the current code's: {'; '.join(stale)}", file=sys.stderr
            )
            return 2
        loaded.append(found)

    command = "python benchmarks/compare_variants.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = report(args.task, args.algo, args.select, args.method, base_params, change, *loaded, command)
    path = (
        args.out / "compare" / f"{result_name(args.task, args.algo, args.select, base_params)}_{params_tag(change)}.md"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(text)
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
