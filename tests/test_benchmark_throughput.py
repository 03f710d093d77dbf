"""benchmarks/throughput.py at a tiny budget: the Pong preset's arguments reach both agents."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch


def test_throughput_runs_both_agents_on_the_pong_recipe(load_benchmark: Any, tmp_path: Path) -> None:
    """SB3's DQN gets the preset without usrl's own arguments (the script once handed it
    ``distill_teacher`` and broke), both agents train, and the report names their rates and ratios."""
    tp = load_benchmark("throughput")
    kwargs, n_envs = tp.recipe()
    assert {"n_widths", "distill", "distill_teacher"} <= tp.US_ONLY and "n_widths" in kwargs
    assert not tp.US_ONLY & {"learning_rate", "buffer_size", "batch_size", "gamma", "replay_buffer_class"}
    out = tmp_path / "throughput.md"
    args = ["--warmup", "100", "--steps", "60", "--runs", "1", "--repeats", "2", "--out", str(out)]
    assert tp.main(args) == 0
    md = out.read_text()
    assert md.startswith("# Training throughput on PongNoFrameskip-v4") and f"({n_envs} games" in md
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| (SB3 DQN|US-DQN) \| ([\d.]+) \| [\d.]+ \|", md, re.M)}
    assert set(rows) == {"SB3 DQN", "US-DQN"} and all(float(v) > 0 for v in rows.values())
    ratio = re.search(r"US-DQN's update is ([\d.]+)x its floor", md)
    assert ratio is not None and float(ratio.group(1)) > 0


def test_throughput_rejects_an_unavailable_device(load_benchmark: Any, tmp_path: Path) -> None:
    tp = load_benchmark("throughput")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit) as e:
        tp.main(["--device", "cuda", "--out", str(tmp_path / "t.md")])
    assert e.value.code == 2 and not (tmp_path / "t.md").exists()
