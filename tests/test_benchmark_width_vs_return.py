"""benchmarks/width_vs_return.py: the tiny preset runs end to end and skips finished cells."""

import json
from pathlib import Path

import pytest


def test_tiny_preset_end_to_end_and_resume(load_benchmark, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    wvr = load_benchmark("width_vs_return")
    methods = ["us", "us_no_sandwich", "individual_0.25", "individual_1.0"]
    assert wvr.main(["--task", "tiny", "--seeds", "0", "--methods", *methods, "--out", str(tmp_path)]) == 0
    cells = tmp_path / "cells" / "tiny"
    files = sorted(p.name for p in cells.glob("*.json"))
    assert files == sorted(f"{m}_s0.json" for m in methods)
    us = json.loads((cells / "us_s0.json").read_text())
    assert [r["width"] for r in us["rows"]] == [0.25, 0.5, 0.75, 1.0]
    ind = json.loads((cells / "individual_0.25_s0.json").read_text())
    assert [r["width"] for r in ind["rows"]] == [0.25]
    # the individual net of width 0.25 is a plain 64-64 MLP: same MACs as the US net at 0.25
    assert ind["rows"][0]["macs"] == us["rows"][0]["macs"]
    md = (tmp_path / "tiny.md").read_text()
    assert "| us |" in md and "individual" in md and "Command:" in md
    # one seed: the interval collapses onto the value, and the verdict follows it
    assert "## Interval estimates" in md and "| w=1.0 vs individual | 1 |" in md
    assert any(v in md for v in ("| meets |", "| misses |"))
    assert (tmp_path / "tiny.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    mtime = (cells / "us_s0.json").stat().st_mtime
    with open(tmp_path / "tiny.md", "a") as f:  # a reading written under the report by hand
        f.write("\n## Reading these numbers\n\n- a note\n")
    assert wvr.main(["--task", "tiny", "--seeds", "0", "--methods", *methods, "--out", str(tmp_path)]) == 0
    assert "0 cells to train, 4 done already" in capsys.readouterr().out
    assert (cells / "us_s0.json").stat().st_mtime == mtime
    md = (tmp_path / "tiny.md").read_text()  # rebuilt from the cells, the note kept once
    assert md.count("## Reading these numbers\n\n- a note") == 1 and md.count("## Interval estimates") == 1
    assert not (cells / load_benchmark("cells").PARTIAL).exists()  # finished cells leave no checkpoints behind


def test_tiny_preset_with_ppo(load_benchmark, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    wvr = load_benchmark("width_vs_return")
    methods = ["us", "us_no_distill", "individual_0.5"]
    args = ["--task", "tiny", "--algo", "ppo", "--seeds", "1", "--methods", *methods, "--out", str(tmp_path)]
    assert wvr.main(args) == 0
    cells = tmp_path / "cells" / "tiny_ppo"
    assert sorted(p.name for p in cells.glob("*.json")) == sorted(f"{m}_s1.json" for m in methods)
    ind = json.loads((cells / "individual_0.5_s1.json").read_text())
    us = json.loads((cells / "us_s1.json").read_text())
    assert ind["algo"] == "ppo" and [r["width"] for r in ind["rows"]] == [0.5]
    # the individual 32-32 actor costs what the US actor costs at width 0.5
    assert ind["rows"][0]["macs"] == next(r["macs"] for r in us["rows"] if r["width"] == 0.5)
    assert "US-PPO" in (tmp_path / "tiny_ppo.md").read_text()
    assert (tmp_path / "tiny_ppo.png").is_file()
    # each cell records its resolved sandwich settings; a cell whose settings the current code
    # would no longer give it (a default changed since) stops the report instead of entering it
    assert us["settings"]["grad_clip"] == "apart" and us["settings"]["student_weight"] == pytest.approx(1 / 3)
    assert ind["settings"]["n_widths"] == 1
    us["settings"]["grad_clip"] = "joint"
    (cells / "us_s1.json").write_text(json.dumps(us))
    ind["settings"]["grad_clip"] = "joint"  # no matter to a net trained at one width
    (cells / "individual_0.5_s1.json").write_text(json.dumps(ind))
    report = (tmp_path / "tiny_ppo.md").read_text()
    assert wvr.main(args) == 2
    err = capsys.readouterr().err
    assert "1 cells were trained with other settings" in err and "us seed 1: grad_clip='joint' (now 'apart')" in err
    assert (tmp_path / "tiny_ppo.md").read_text() == report
    # a cell recorded before a setting existed trained with what SETTINGS_BEFORE_RECORDED says
    us["settings"]["grad_clip"] = "apart"
    del us["settings"]["distill_warmup"]
    (cells / "us_s1.json").write_text(json.dumps(us))
    assert wvr.main(args) == 0
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(wvr.SETTINGS_BEFORE_RECORDED, "distill_warmup", 0.5)
        assert wvr.main(args) == 2
    assert "us seed 1: distill_warmup=0.5 (now 0.0)" in capsys.readouterr().err
    # cells from before teacher_guard existed trained unguarded, which is no longer the default
    del us["settings"]["teacher_guard"]
    (cells / "us_s1.json").write_text(json.dumps(us))
    assert wvr.main(args) == 2
    assert "us seed 1: teacher_guard=None (now 'drift')" in capsys.readouterr().err


def test_sampled_actions_evaluate_the_same_training_into_their_own_cells(  # type: ignore[no-untyped-def]
    load_benchmark, tmp_path: Path, run_main
) -> None:
    wvr = load_benchmark("width_vs_return")
    args = ["--task", "tiny", "--algo", "a2c", "--seeds", "0", "--methods", "us", "--out", str(tmp_path)]
    assert wvr.main(args) == 0
    assert wvr.main([*args, "--select", "final-sampled"]) == 0
    greedy = json.loads((tmp_path / "cells" / "tiny_a2c" / "us_s0.json").read_text())
    sampled = json.loads((tmp_path / "cells" / "tiny_a2c_sampled" / "us_s0.json").read_text())
    assert sampled["select"] == "final-sampled" and sampled["settings"] == greedy["settings"]
    # one trained model, two ways of acting: a barely trained policy is far from one-hot
    assert [r["mean_length"] for r in sampled["rows"]] != [r["mean_length"] for r in greedy["rows"]]
    assert "actions sampled from the policy" in (tmp_path / "tiny_a2c_sampled.md").read_text()
    assert "greedy actions" in (tmp_path / "tiny_a2c.md").read_text()
    code, err = run_main(wvr.main, ["--task", "tiny", "--select", "best-sampled", "--out", str(tmp_path)])
    assert code == 2 and "sampled actions are for PPO and A2C" in err
    assert wvr.result_name("acrobot", "ppo", "best-sampled", {"gamma": 0.9}) == "acrobot_ppo_best_sampled_gamma-0.9"


def test_tiny_preset_best_checkpoint_selection(load_benchmark, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    wvr = load_benchmark("width_vs_return")
    methods = ["us", "individual_0.5"]
    args = ["--task", "tiny", "--select", "best", "--seeds", "0", "--methods", *methods, "--out", str(tmp_path)]
    assert wvr.main(args) == 0
    cells = tmp_path / "cells" / "tiny_best"
    us = json.loads((cells / "us_s0.json").read_text())
    steps = [s for s, _ in us["selection_history"]]
    assert steps == [40 * k for k in range(1, 11)]  # every tenth of the 400 steps
    best = max(us["selection_history"], key=lambda h: h[1])
    assert us["select"] == "best" and us["selected_step"] == best[0]
    assert 0 < us["selection_time_s"] and 0 < us["train_time_s"]
    ind = json.loads((cells / "individual_0.5_s0.json").read_text())
    assert ind["selected_step"] > 0
    # the same number of selection episodes for every model: a third at each of 3 widths, or all at its own
    n = wvr.SELECT_EPISODES
    assert us["selection_widths"] == [0.25, 0.625, 1.0] and us["selection_episodes_per_width"] == n // 3
    assert len(ind["selection_widths"]) == 1 and ind["selection_episodes_per_width"] == n
    md = (tmp_path / "tiny_best.md").read_text()
    assert "best checkpoint" in md and (tmp_path / "tiny_best.png").is_file()
    assert not (tmp_path / "tiny.md").exists()
    # the run's final weights went to the --select final cells: the same weights a final run trains
    twin = json.loads((tmp_path / "cells" / "tiny" / "us_s0.json").read_text())
    assert twin["select"] == "final" and twin["trained_with_select"] == "best" and "selected_step" not in twin
    assert wvr.FINAL_WEIGHTS not in us and twin["train_time_s"] == us["train_time_s"]
    alone = tmp_path / "alone"
    assert wvr.main(["--task", "tiny", "--seeds", "0", "--methods", "us", "--out", str(alone)]) == 0
    assert json.loads((alone / "cells" / "tiny" / "us_s0.json").read_text())["rows"] == twin["rows"]
    mtime = (alone / "cells" / "tiny" / "us_s0.json").stat().st_mtime
    assert wvr.main(["--task", "tiny", "--select", "best", "--seeds", "0", "--methods", "us", "--out", str(alone)]) == 0
    assert (alone / "cells" / "tiny" / "us_s0.json").stat().st_mtime == mtime  # a final cell on disk stays
    assert wvr.main(["--task", "tiny", "--seeds", "0", "--methods", *methods, "--out", str(tmp_path)]) == 0
    assert "0 cells to train, 2 done already" in capsys.readouterr().out


def test_a_final_cell_trains_as_its_best_checkpoint_twin_when_both_are_pending(load_benchmark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    wvr = load_benchmark("width_vs_return")
    cells = load_benchmark("cells")

    def pending(select: str, methods: list[str], params: dict | None = None) -> list:  # type: ignore[type-arg]
        return wvr.pending_cells(tmp_path, "tiny", "dqn", select, params or {}, methods, [0, 1])

    final, best = pending("final", ["us", "individual_0.5"]), pending("best", ["us"])
    merged = wvr.train_finals_with_best(final + best)
    # us trains once, as its best cell, at the final cell's place; the individual nets as planned
    assert [(c[2], c[3], c[5]) for c in merged] == [
        ("us", 0, "best"), ("individual_0.5", 0, "final"), ("us", 1, "best"), ("individual_0.5", 1, "final")
    ]  # fmt: skip
    assert wvr.final_weights_dir("tiny", "dqn", merged[0][4], {}) == tmp_path / "cells" / "tiny"
    # other overrides, sampled actions and a final cell already part-trained are not merged
    other = pending("best", ["us"], {"gamma": 0.9})
    assert wvr.train_finals_with_best(final + other) == final + other
    sampled = wvr.pending_cells(tmp_path, "tiny", "a2c", "final-sampled", {}, ["us"], [0])
    sampled_best = wvr.pending_cells(tmp_path, "tiny", "a2c", "best-sampled", {}, ["us"], [0])
    assert wvr.train_finals_with_best(sampled + sampled_best) == sampled + sampled_best
    cells.partial_dir(final[0][4], "us", 0).mkdir(parents=True)
    assert [(c[2], c[3], c[5]) for c in wvr.train_finals_with_best(final + best)][:2] == [
        ("us", 0, "final"), ("individual_0.5", 0, "final")
    ]  # fmt: skip


def test_a_cell_killed_mid_training_resumes_from_its_last_checkpoint(
    load_benchmark, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from stable_baselines3.common.callbacks import BaseCallback

    wvr = load_benchmark("width_vs_return")
    out = tmp_path / "cells"

    class Killed(Exception):
        pass

    # checkpoints fall due every 40 of the 400 steps and are saved between rollouts (50 steps each
    # here): the process dies at step 250, after the checkpoint of step 200
    class DieAt(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps >= 250:
                raise Killed
            return True

    progress = wvr.progress_callback
    monkeypatch.setattr(wvr, "progress_callback", lambda label, total: DieAt())
    with pytest.raises(Killed):
        wvr.run_cell("tiny", "dqn", "us", 0, str(out), "best")
    folder = wvr.partial_dir(out, "us", 0)
    entry = json.loads((folder / "checkpoints" / "latest.json").read_text())
    assert entry["timesteps"] == 200 and "replay_buffer" in entry and "extra" in entry
    monkeypatch.setattr(wvr, "progress_callback", progress)
    cell = wvr.run_cell("tiny", "dqn", "us", 0, str(out), "best")
    assert cell["env_steps"] == 400 == cell["steps"]
    assert [(s["start_steps"], s["end_steps"]) for s in cell["segments"]] == [(0, 200), (200, 400)]
    assert cell["train_time_s"] > 0
    # the selection carried over the kill: one evaluation per tenth, none repeated, none lost
    assert [s for s, _ in cell["selection_history"]] == [40 * k for k in range(1, 11)]
    assert cell["selected_step"] == max(cell["selection_history"], key=lambda h: h[1])[0]
    # the driver deletes the checkpoints once the cell's file is written
    shared = load_benchmark("cells")
    shared.discard_partial(out, "us", 0)
    assert not (out / shared.PARTIAL).exists()
    # a checkpoint of another configuration is not resumed: that cell starts over
    monkeypatch.setattr(wvr, "progress_callback", lambda label, total: DieAt())
    with pytest.raises(Killed):
        wvr.run_cell("tiny", "dqn", "us", 0, str(out), "best")
    monkeypatch.setattr(wvr, "progress_callback", progress)
    cell = wvr.run_cell("tiny", "dqn", "us", 0, str(out), "final")
    assert [s["start_steps"] for s in cell["segments"]] == [0]


def test_params_override_the_preset_into_their_own_cells(load_benchmark, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    wvr = load_benchmark("width_vs_return")
    args = ["--task", "tiny", "--seeds", "0", "--methods", "us", "--out", str(tmp_path)]
    assert wvr.main([*args, "-params", "distill_weight:0.5", "gradient_steps:2"]) == 0
    stem = "tiny_distill_weight-0.5_gradient_steps-2"
    us = json.loads((tmp_path / "cells" / stem / "us_s0.json").read_text())
    assert us["params"] == {"distill_weight": 0.5, "gradient_steps": 2}
    md = (tmp_path / f"{stem}.md").read_text()
    assert "Preset overrides, for every method: `distill_weight: 0.5`, `gradient_steps: 2`" in md
    assert not (tmp_path / "cells" / "tiny").exists() and not (tmp_path / "tiny.md").exists()
    for bad in (["-params", "distill_weight"], ["-params", "no_such_key:1"], ["-params", "n_timesteps:100"]):
        with pytest.raises(SystemExit) as exc:
            wvr.main([*args, *bad])
        assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "expected key:value" in err and "unknown hyperparameter 'no_such_key'" in err
    assert "n_timesteps is not used here" in err


def test_gap_is_relative_to_the_magnitude_of_the_other_value(load_benchmark) -> None:  # type: ignore[no-untyped-def]
    wvr = load_benchmark("width_vs_return")
    assert wvr.relative_gap(96.0, 100.0) == pytest.approx(-0.04)
    # negative returns (Acrobot): -85 is 6.25% worse than -80, -70 is 12.5% better
    assert wvr.relative_gap(-85.0, -80.0) == pytest.approx(-0.0625)
    assert wvr.relative_gap(-70.0, -80.0) == pytest.approx(0.125)
    assert wvr.relative_gap(0.0, 0.0) == 0.0 and wvr.relative_gap(1.0, 0.0) == float("inf")


def test_sandwich_only_overrides_share_the_one_width_cells(load_benchmark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    wvr = load_benchmark("width_vs_return")
    methods = ["us", "us_no_sandwich", "individual_1.0"]
    args = ["--task", "tiny", "--seeds", "0", "--methods", *methods, "--out", str(tmp_path)]
    assert wvr.main([*args, "-params", "student_weight:0.5"]) == 0
    own, shared = tmp_path / "cells" / "tiny_student_weight-0.5", tmp_path / "cells" / "tiny"
    assert sorted(p.name for p in own.glob("*.json")) == ["us_s0.json"]
    assert sorted(p.name for p in shared.glob("*.json")) == ["individual_1.0_s0.json", "us_no_sandwich_s0.json"]
    assert json.loads((shared / "individual_1.0_s0.json").read_text())["params"] == {}
    cell = json.loads((own / "us_s0.json").read_text())
    assert cell["params"] == {"student_weight": 0.5} and set(cell["machine"]) == {"cpu", "cpus", "torch"}
    md = (tmp_path / "tiny_student_weight-0.5.md").read_text()
    assert (
        "Preset overrides: `student_weight: 0.5`; not all change every model: the cells of individual_1.0, "
        "us_no_sandwich are shared" in md
    )
    assert "Trained on" in md
    # a full-width critic leaves an individual (full-width MLP) net as it is, not the no-sandwich ablation
    slim = {"policy_kwargs.slim_critic": False}
    assert wvr.cell_params("individual_0.5", slim) == {} and wvr.cell_params("us_no_sandwich", slim) == slim
    # a one-width method keeps only the overrides that change its model
    assert wvr.cell_params("us_no_sandwich", {**slim, "student_weight": 0.5}) == slim
    # the no-distillation ablation is the same model whatever the distillation settings say
    distilling = {"distill_weight": 0.5, "distill_warmup": 0.2, "teacher_guard": "entropy", "student_weight": 0.5}
    assert wvr.cell_params("us_no_distill", distilling) == {"student_weight": 0.5}
    assert wvr.cell_params("us", distilling) == distilling
    # an override that changes every model keeps every method's cells apart
    assert wvr.main([*args[:-2], "--methods", "individual_1.0", "--out", str(tmp_path), "-params", "gamma:0.9"]) == 0
    assert (tmp_path / "cells" / "tiny_gamma-0.9" / "individual_1.0_s0.json").is_file()


@pytest.mark.parametrize(
    ("task", "method", "params"),
    [
        # no updates (learning starts after the budget): an untrained net's game is short
        ("pong", "individual_1.0", {"buffer_size": 1000, "learning_starts": 1000, "n_envs": 2}),
        ("minatar-space-invaders", "individual_0.5", {"buffer_size": 1000, "learning_starts": 100}),
    ],
)
def test_atari_and_minatar_tasks_run_a_tiny_budget_end_to_end(  # type: ignore[no-untyped-def]
    load_benchmark, tmp_path: Path, monkeypatch, task: str, method: str, params: dict
) -> None:
    wvr = load_benchmark("width_vs_return")
    monkeypatch.setitem(wvr.TASKS, task, {**wvr.TASKS[task], "steps": 300, "episodes": 1})
    cell = wvr.run_cell(task, "dqn", method, 0, str(tmp_path), "final", params)
    assert cell["env_steps"] == 300 and cell["train_time_s"] > 0
    widths = [r["width"] for r in cell["rows"]]
    assert widths == [float(method.split("_")[1])]
    if task == "pong":  # full games with raw scores: an untrained agent loses, 21 points to at most 20
        assert all(-21 <= r["mean_return"] <= -1 for r in cell["rows"])
        (rows,), measure = wvr.normalised(task, [cell])
        assert measure.startswith("normalised score")
        assert [r["mean_return"] for r in rows["rows"]] == [(r["mean_return"] + 21) / 42 for r in cell["rows"]]
