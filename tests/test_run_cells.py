"""benchmarks/run_cells.py: a plan of several grids trains in one pool, in order, within a time limit."""

import json
import os
import time
from pathlib import Path

import pytest


def test_plan_trains_its_cells_once_where_width_vs_return_finds_them(load_benchmark, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    rc = load_benchmark("run_cells")
    plan = tmp_path / "plan.txt"
    plan.write_text(
        "# two grids sharing the individual net\n"
        "tiny ppo final 0 us,individual_1.0 student_weight:0.5\n"
        "\n"
        "tiny ppo final 0 individual_1.0   # already planned above\n"
    )
    assert rc.main([str(plan), "--jobs", "2", "--out", str(tmp_path)]) == 0
    assert "2 cells to train" in capsys.readouterr().out
    assert (tmp_path / "cells" / "tiny_ppo" / "individual_1.0_s0.json").is_file()
    us = json.loads((tmp_path / "cells" / "tiny_ppo_student_weight-0.5" / "us_s0.json").read_text())
    assert us["method"] == "us" and us["params"] == {"student_weight": 0.5}
    assert rc.main([str(plan), "--out", str(tmp_path)]) == 0
    assert "0 cells to train" in capsys.readouterr().out


def test_time_limit_stops_unfinished_cells_without_writing_them(load_benchmark, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    rc = load_benchmark("run_cells")
    plan = tmp_path / "plan.txt"
    plan.write_text("cartpole ppo final 0 us\n")
    assert rc.main([str(plan), "--time-limit", "1", "--out", str(tmp_path)]) == 0
    assert "time limit reached: 1 cells stopped unfinished" in capsys.readouterr().out
    assert not list(tmp_path.rglob("*.json"))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("tiny ppo final 0", "expected TASK ALGO SELECT SEEDS METHODS"),
        ("nope ppo final 0 us", "unknown task 'nope'"),
        ("tiny sac final 0 us", "unknown algo 'sac'"),
        ("tiny ppo last 0 us", "unknown select 'last'"),
        ("tiny dqn final-sampled 0 us", "sampled actions are for PPO and A2C"),
        ("tiny ppo final 0-x us", "bad seeds '0-x'"),
        ("tiny ppo final 3-1 us", "bad seeds '3-1'"),
        ("tiny ppo final 0 us,teacher", "unknown method 'teacher'"),
        ("tiny ppo final 0 us student_weight", "expected key:value"),
        ("tiny ppo final 0 us n_timesteps:10", "n_timesteps is not used"),
    ],
)
def test_bad_plan_line_is_one_error_naming_the_line(
    load_benchmark, tmp_path: Path, capsys, line: str, message: str
) -> None:  # type: ignore[no-untyped-def]
    rc = load_benchmark("run_cells")
    plan = tmp_path / "plan.txt"
    plan.write_text(f"# header\n{line}\n")
    with pytest.raises(SystemExit) as exc:
        rc.main([str(plan), "--out", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "plan line 2: " in err and message in err
    assert not (tmp_path / "cells").exists()


def _cell(x: int) -> dict:
    if x == 2:
        raise ValueError("bad cell")
    return {"x": x}


def test_local_pool_saves_each_finished_cell_and_reports_a_failing_one(load_benchmark, capsys) -> None:  # type: ignore[no-untyped-def]
    cells = load_benchmark("cells")
    saved: list[int] = []
    failed = cells.run_pool(_cell, [(1,), (2,), (3,)], 2, save=lambda call, r: saved.append(r["x"]),
                            describe=lambda call: f"x={call[0]}")  # fmt: skip
    assert failed == 1 and sorted(saved) == [1, 3]  # saved here, in the driver, as each one finished
    assert "cell x=2 failed: ValueError: bad cell" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # a cluster flag needs the ray backend
        load_benchmark("run_cells").main(["plan.txt", "--gpus-per-cell", "1"])


def _cell_with_a_child(x: int) -> dict:
    import multiprocessing

    child = multiprocessing.get_context().Process(target=abs, args=(x,))  # as a DataLoader worker is
    child.start()
    child.join()
    return {"x": x, "child_exit": child.exitcode}


def test_local_pool_workers_may_start_processes(load_benchmark) -> None:  # type: ignore[no-untyped-def]
    cells = load_benchmark("cells")
    saved: list[dict] = []
    assert cells.run_pool(_cell_with_a_child, [(1,), (2,)], 2, save=lambda call, r: saved.append(r)) == 0
    assert sorted(r["x"] for r in saved) == [1, 2] and all(r["child_exit"] == 0 for r in saved)


def _stubborn_or_dying_cell(kind: str) -> dict:
    import signal

    if kind == "ignores_sigterm":  # a worker that misses its SIGTERM
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(600)
    if kind == "dies":  # as the OOM killer or a segfault ends one
        os._exit(9)
    return {"kind": kind}


def test_local_pool_reports_a_dead_worker_and_stops_one_that_ignores_sigterm(
    load_benchmark, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    cells = load_benchmark("cells")
    monkeypatch.setattr(cells, "_STOP_GRACE_S", 0.5)
    saved: list[dict] = []
    calls = [("dies",), ("ok",), ("ignores_sigterm",)]
    start = time.monotonic()
    failed = cells.run_pool(_stubborn_or_dying_cell, calls, 3, 8.0, describe=lambda call: call[0],
                            save=lambda call, r: saved.append(r))  # fmt: skip
    assert time.monotonic() - start < 60  # not waited on forever
    out = capsys.readouterr().out
    assert failed == 1 and saved == [{"kind": "ok"}]
    assert "cell dies failed: its worker process died (exit code 9) before returning" in out
    assert "time limit reached: 1 cells stopped unfinished" in out


DRIVER = """
import os, sys, time
sys.path.insert(0, {benchmarks!r})
import cells

def cell(x):
    open(os.path.join({tmp!r}, f"worker_{{os.getpid()}}"), "w").close()
    time.sleep(600)
    return {{}}

cells.run_pool(cell, [(1,), (2,)], 2, save=lambda call, r: None)
"""


def test_sigterm_to_the_driver_stops_its_workers(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    code = DRIVER.format(benchmarks=str(Path(__file__).resolve().parents[1] / "benchmarks"), tmp=str(tmp_path))
    driver = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(tmp_path.glob("worker_*"))) < 2:
        time.sleep(0.05)
    workers = [int(p.name.split("_")[1]) for p in tmp_path.glob("worker_*")]
    assert len(workers) == 2
    driver.send_signal(signal.SIGTERM)
    _, stderr = driver.communicate(timeout=60)
    assert driver.returncode == 143, stderr
    for pid in workers:  # gone, not left training as orphans
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_trainer_run_resumes_only_its_own_checkpoint(load_benchmark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A trainer CLI's cell resumes where an attempt with the same arguments left a checkpoint (that
    attempt's time counted up to the checkpoint), and starts over where the arguments changed."""
    cells = load_benchmark("cells")
    args = ["--data", "d", "--epochs", "20", "--seed", "3"]
    first = cells.trainer_run(tmp_path, "us", 3, args, "cpu", "--epochs")
    run = cells.trainer_folder(tmp_path, "us", 3)
    assert first == [*args, "--out", str(run), "--device", "cpu"]
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"saved")
    started = json.loads((run.parent / "segments.json").read_text())[0]["started"]
    os.utime(run / "checkpoint.pt", (started + 42.0, started + 42.0))  # the killed attempt's last checkpoint
    assert cells.trainer_run(tmp_path, "us", 3, args, "cuda", "--epochs") == [
        "--resume", str(run), "--device", "cuda", "--epochs", "20"
    ]  # fmt: skip
    total, attempts = cells.trainer_wall_time(tmp_path, "us", 3)
    assert attempts == 2 and 42.0 <= total < 60.0
    # other arguments (a changed task): the old checkpoint is not resumed
    assert cells.trainer_run(tmp_path, "us", 3, [*args[:3], "10", *args[4:]], "cpu", "--epochs")[0] == "--data"
    assert not (run / "checkpoint.pt").exists()
    assert cells.resuming_note([run.parent, tmp_path / "nothing"]) == ", 1 of them from their last checkpoint"
    cells.discard_partial(tmp_path, "us", 3)
    assert not (tmp_path / cells.PARTIAL).exists() and cells.resuming_note([run.parent]) == ""
