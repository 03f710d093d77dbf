"""benchmarks/sr_width.py: the tiny task runs end to end and skips finished cells."""

import json
from pathlib import Path


def test_tiny_task_end_to_end(load_benchmark, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    mod = load_benchmark("sr_width")
    args = ["--task", "tiny", "--seeds", "0", "--methods", "us", "individual_0.5", "--out", str(tmp_path),
            "--data", str(tmp_path / "data")]  # fmt: skip
    assert mod.main(args) == 0
    cells = tmp_path / "cells" / "sr_tiny"
    us = json.loads((cells / "us_s0.json").read_text())
    assert [r["width"] for r in us["rows"]] == [None, *mod.GRID]  # bicubic first
    ind = json.loads((cells / "individual_0.5_s0.json").read_text())
    assert [r["width"] for r in ind["rows"]][1:] == [0.5]
    # the individual net of width 0.5 is the US net's width-0.5 sub-network: same MACs
    assert ind["rows"][1]["macs"] == next(r["macs"] for r in us["rows"] if r["width"] == 0.5)
    md = (tmp_path / "sr_tiny.md").read_text()
    assert "| us |" in md and "Bicubic:" in md and "Command:" in md
    assert "## Interval estimates" in md and "P(US > other)" in md
    for name in ("sr_tiny.png", "sr_tiny_crops.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert us["attempts"] == 1 and not (cells / ".partial").exists()  # finished cells leave no checkpoints
    capsys.readouterr()
    assert mod.main(args) == 0
    assert "0 cells to train, 2 done already" in capsys.readouterr().out
