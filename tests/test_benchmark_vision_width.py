"""benchmarks/vision_width.py: the tiny task runs end to end and skips finished cells."""

import json
from pathlib import Path


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
