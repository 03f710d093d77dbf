"""benchmarks/vision_width.py: the tiny task runs end to end and skips finished cells."""

import json
from pathlib import Path

import pytest
import torch


def test_tiny_task_end_to_end(load_benchmark, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    mod = load_benchmark("vision_width")
    args = ["--task", "tiny", "--seeds", "0", "--methods", "us", "individual_0.5", "--out", str(tmp_path),
            "--data", str(tmp_path / "data")]  # fmt: skip
    assert mod.main(args) == 0
    cells = tmp_path / "cells" / "vision_tiny"
    us = json.loads((cells / "us_s0.json").read_text())
    assert [r["width"] for r in us["rows"]] == mod.GRID and mod.GRID[0] == 0.35 and mod.GRID[-1] == 1.0
    ind = json.loads((cells / "individual_0.5_s0.json").read_text())
    assert [r["width"] for r in ind["rows"]] == [0.5]
    # the individual net of width 0.5 is the US net's width-0.5 sub-network: same MACs and parameters
    us_05 = next(r for r in us["rows"] if r["width"] == 0.5)
    assert (ind["rows"][0]["macs"], ind["rows"][0]["params"]) == (us_05["macs"], us_05["params"])
    md = (tmp_path / "vision_tiny.md").read_text()
    assert "| us |" in md and "Command:" in md and "US minus individual" in md
    assert "## Interval estimates" in md and "| w=0.5 vs individual | 1 |" in md
    assert (tmp_path / "vision_tiny.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert mod.main(args) == 0
    assert "0 cells to train, 2 done already" in capsys.readouterr().out


def test_an_interrupted_cell_resumes_from_its_last_checkpoint(
    load_benchmark, tmp_path: Path, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    """A cell whose first attempt stopped after epoch 1 of 2 (its checkpoint saved) trains only
    epoch 2 when it runs again, counts both attempts' time, and leaves no checkpoint once saved."""
    import usrl.vision.train as vision_train

    mod = load_benchmark("vision_width")
    monkeypatch.setitem(mod.TASKS, "tiny", {**mod.TASKS["tiny"], "epochs": 2})
    data = tmp_path / "data"
    mod.write_tiny_data(data)
    cells = tmp_path / "cells"
    real = vision_train.main
    epochs_run: list[str] = []

    def stopped_after_one_epoch(argv: list[str]) -> int:
        assert argv[argv.index("--epochs") + 1] == "2"
        real([*argv, "--epochs", "1"])  # the last --epochs wins: the attempt ends after epoch 1
        return 1

    monkeypatch.setattr(vision_train, "main", stopped_after_one_epoch)
    with pytest.raises(RuntimeError, match="training failed"):
        mod.run_cell("tiny", "individual_0.5", 0, str(data), str(cells))
    run = load_benchmark("cells").trainer_folder(cells, "individual_0.5", 0)
    assert torch.load(run / "checkpoint.pt", weights_only=False)["epoch"] == 1

    def resumed(argv: list[str]) -> int:
        epochs_run.append(argv[0])
        assert argv[:2] == ["--resume", str(run)] and argv[argv.index("--epochs") + 1] == "2"
        return real(argv)

    monkeypatch.setattr(vision_train, "main", resumed)
    result = mod.run_cell("tiny", "individual_0.5", 0, str(data), str(cells))
    assert "resuming from its last checkpoint" in capsys.readouterr().out and epochs_run == ["--resume"]
    assert result["attempts"] == 2 and result["train_time_s"] > 0 and [r["width"] for r in result["rows"]] == [0.5]
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    assert ckpt["epoch"] == 2 and ckpt["args"]["epochs"] == 2
    mod.save_finished_cell(cells, "individual_0.5", 0, result)
    assert (cells / "individual_0.5_s0.json").is_file() and not mod.partial_dir(
        cells, "individual_0.5", 0
    ).parent.exists()
