"""benchmarks/compare_variants.py: one method under two settings, paired by seed."""

import json
from pathlib import Path
from typing import Any

WIDTHS = [0.25, 0.5, 0.75, 1.0]


def _write(wvr: Any, out: Path, params: dict[str, Any], seed: int, returns: list[float]) -> None:
    path = wvr.cell_file(out, "cartpole", "a2c", "final", params, "us", seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"width": w, "mean_return": r} for w, r in zip(WIDTHS, returns, strict=True)]
    path.write_text(json.dumps({"task": "cartpole", "algo": "a2c", "method": "us", "seed": seed, "rows": rows}))


def test_paired_difference_verdicts_and_missing_cells(load_benchmark, tmp_path: Path, run_main) -> None:  # type: ignore[no-untyped-def]
    wvr = load_benchmark("width_vs_return")
    cmp = load_benchmark("compare_variants")
    base, change = {"student_weight": 0.5}, {"teacher_guard": "drift"}
    # seed-to-seed spread far larger than the change: only pairing by seed decides it
    for seed in range(6):
        level = 100.0 * seed
        _write(wvr, tmp_path, base, seed, [level, level + 1, level + 2, level + 3])
        # +10 at the narrowest width in every seed; -5 or +5 at the widest (decides nothing)
        _write(
            wvr, tmp_path, {**base, **change}, seed, [level + 10, level + 1, level + 2, level + 3 + (-1) ** seed * 5]
        )
    argv = ["--task", "cartpole", "--algo", "a2c", "--seeds", "0-5", "--out", str(tmp_path)]
    argv += ["--base", "student_weight:0.5", "--change", "teacher_guard:drift"]
    code, err = run_main(cmp.main, argv)
    assert code == 0, err
    md = (tmp_path / "compare" / "cartpole_a2c_student_weight-0.5__teacher_guard-drift.md").read_text()
    assert md.startswith("# us on cartpole (CartPole-v1, A2C, final weights): `teacher_guard: drift` against the base")
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in md.splitlines() if line.startswith("| w=")}
    assert rows["w=0.25"][3].startswith("+10 [10, 10]") and rows["w=0.25"][4] == "better"
    assert rows["w=0.25"][5] == "6 / 0"
    assert rows["w=0.5"][3].startswith("+0 [0, 0]") and rows["w=0.5"][4] == "not decided"
    assert rows["w=1.0"][4] == "not decided" and rows["w=1.0"][5] == "3 / 3"
    # P(changed > base) pools every pair of runs: the spread over seeds swamps a +10
    assert 0.5 < float(rows["w=0.25"][6].split()[0]) < 0.65
    assert "| 5 | 501.5 | 502.3 | +0.8333 |" in md  # per-seed area: (505.5 + 501.5 + 500) / 3 against 501.5

    code, err = run_main(cmp.main, [*argv[:5], "0-6", *argv[6:]])
    assert code == 2 and "1 us cells missing (seeds 6)" in err
    assert "cartpole a2c final 6 us student_weight:0.5" in err
    code, err = run_main(cmp.main, [*argv[:-1], "student_weight:0.5"])
    assert code == 2 and "--change sets nothing the base does not already have" in err
    code, err = run_main(cmp.main, [*argv[:-1], "no_such_key:1"])
    assert code == 2 and "unknown hyperparameter 'no_such_key'" in err
