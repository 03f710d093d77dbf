"""The actor-critic diagnostics: the gradient decomposition and SB3's identity tests over seeds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


def test_gradient_measurement_leaves_the_run_unchanged(load_benchmark: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A measured run ends with the returns of an unmeasured one (the random states are put back);
    a full-width critic has no students' gradient in the critic and no extra clipping."""
    acg = load_benchmark("ac_gradients")
    wvr = load_benchmark("width_vs_return")
    monkeypatch.setitem(wvr.TASKS, "cartpole", {**wvr.TASKS["cartpole"], "steps": 2048})
    monkeypatch.setattr(acg, "MEASURE_EVERY", 1_000_000)  # measure the first rollout only
    slim = {"policy_kwargs.slim_critic": True}
    measured = acg.run_one("cartpole", slim, 0)
    monkeypatch.setattr(acg, "measure", lambda model: {})
    plain = acg.run_one("cartpole", slim, 0)
    assert measured["returns"] == plain["returns"] and len(measured["rows"]) == 1
    row = measured["rows"][0]
    assert row["step"] == 256 and row["critic_ratio"] > 0 and 0 < row["clip_ratio"] <= 1
    monkeypatch.undo()
    monkeypatch.setitem(wvr.TASKS, "cartpole", {**wvr.TASKS["cartpole"], "steps": 256})
    full_critic = acg.run_one("cartpole", {"policy_kwargs.slim_critic": False}, 0)["rows"][0]
    assert full_critic["critic_ratio"] == 0 and full_critic["actor_ratio"] > 0


def test_identity_case_of_a_usrl_class_at_one_width_is_sb3s(load_benchmark: Any) -> None:
    """With n_widths=1 the usrl class trains as SB3's, so the two rewards of a case are equal."""
    idt = load_benchmark("sb3_identity")
    case = "discrete A2C IdentityEnv"
    assert idt.run_one(case, True, 1, {"n_widths": 1}) == idt.run_one(case, False, 1, {})
    assert idt.parse_seeds("0-2") == [0, 1, 2] and idt.parse_seeds("4,7") == [4, 7]
    assert idt.seeds_label([0, 1, 2]) == "0-2" and idt.seeds_label([0, 3, 5]) == "0,3,5" and idt.seeds_label([4]) == "4"


def test_identity_variants_share_sb3s_own_runs(load_benchmark: Any, tmp_path: Path) -> None:
    """A new variant takes SB3's runs from the shared cache (nothing trains here: every run is cached)."""
    idt = load_benchmark("sb3_identity")
    sb3 = {f"{case}|sb3|0": 12.5 for case in idt.CASES}
    (tmp_path / "sb3_identity_sb3.json").write_text(json.dumps(sb3))
    variant = tmp_path / "sb3_identity_student_weight-0.5.json"
    variant.write_text(json.dumps({f"{case}|usrl|0": 95.0 for case in idt.CASES}))
    assert idt.main(["--seeds", "0", "--out", str(tmp_path), "-params", "student_weight:0.5"]) == 0
    assert json.loads(variant.read_text()) == {**sb3, **{f"{case}|usrl|0": 95.0 for case in idt.CASES}}
    md = (tmp_path / "sb3_identity_student_weight-0.5.md").read_text()
    assert "| discrete A2C IdentityEnv | 0/1 | 1/1 | 12.5 | 95.0 |" in md
