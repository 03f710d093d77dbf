"""benchmarks/latency_budget.py and benchmarks/dqn_teacher.py on small inputs."""

import json
import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from usrl.nn import USLinear, make_slimmable


def test_summarize_by_hand(load_benchmark) -> None:  # type: ignore[no-untyped-def]
    lb = load_benchmark("latency_budget")
    trace = [(0.0, 1.0, 5.0, False), (0.1, 1.0, 12.0, True), (0.2, 0.5, 8.0, True), (0.3, 0.5, 4.0, False)]
    s = lb.summarize(trace, budget_ms=10.0, quality={0.5: 80.0, 1.0: 90.0})
    assert s["quiet"]["calls"] == 2 and s["quiet"]["miss_rate"] == 0.0 and s["quiet"]["quality"] == pytest.approx(85.0)
    assert s["loaded"]["miss_rate"] == 0.5 and s["loaded"]["mean_width"] == pytest.approx(0.75)
    assert s["all"]["calls"] == 4 and s["all"]["miss_rate"] == 0.25


def test_frame_loop_keeps_the_full_width_on_a_free_machine(load_benchmark) -> None:  # type: ignore[no-untyped-def]
    """No load: one call per budget period; the controller stays at the widest width."""
    from usrl.deploy import measure_latency

    lb = load_benchmark("latency_budget")
    torch.manual_seed(0)
    net = make_slimmable(nn.Sequential(USLinear(16, 256, slim_in=False), nn.ReLU(), USLinear(256, 4, slim_out=False)))
    widths = [0.25, 0.5, 1.0]
    work = lb.Workload("tiny", "tiny MLP", net, torch.randn(8, 16), widths, {0.25: 1.0, 0.5: 2.0, 1.0: 3.0}, "q")
    prof = measure_latency(net, work.example, widths, rounds=10)
    budget = 20.0  # ms: far above a tiny MLP's latency, so the loop is paced by the frames
    never = mp.get_context("spawn").Event()
    for policy, width in (("full width", 1.0), ("narrowest", 0.25), ("controller", max(prof.pareto))):
        trace = lb.frame_loop(work, policy, budget, prof, duration=0.5, period=10.0, load_on=never)
        assert 10 <= len(trace) <= 26  # ~25 frames of 20 ms in 0.5 s
        assert {t[1] for t in trace} == {width} and not any(t[3] for t in trace)
        assert np.mean(np.diff([t[0] for t in trace])) >= budget / 1e3 * 0.9  # paced by the frames


def test_latency_budget_rejects_bad_flags(load_benchmark, capsys) -> None:  # type: ignore[no-untyped-def]
    lb = load_benchmark("latency_budget")
    for bad in (["--budget-factor", "0.9"], ["--duration", "0"], ["--load-threads", "0"]):
        assert lb.main(bad) == 2
        assert "latency_budget: need" in capsys.readouterr().err


def test_dqn_teacher_runs_resumes_and_reports(load_benchmark, tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    dt = load_benchmark("dqn_teacher")
    monkeypatch.setattr(dt, "VARIANTS", {k: dt.VARIANTS[k] for k in ("n_widths=1", "target, averaged")})
    out = tmp_path / "t.md"
    assert dt.main(["--seeds", "0", "--steps", "1500", "--out", str(out)]) == 0
    cells = json.loads(out.with_suffix(".json").read_text())
    assert sorted(cells) == ["n_widths=1|0|1500", "target, averaged|0|1500"]
    run = cells["n_widths=1|0|1500"]
    assert set(run["greedy"]) == {"0.25", "0.50", "0.75", "1.00"} and 0.0 <= run["train_success_1500"] <= 1.0
    md = out.read_text()
    assert "| n_widths=1 | " in md and "| target, averaged | " in md and out.with_suffix(".png").exists()
    capsys.readouterr()
    assert dt.main(["--seeds", "0", "--steps", "1500", "--out", str(out)]) == 0  # cached: nothing retrained
    assert "[1/" not in capsys.readouterr().out
    assert dt.main(["--seeds", "x", "--out", str(out)]) == 2
    assert dt.main(["--steps", "100", "--out", str(out)]) == 2
