"""US-PPO learns CartPole (100k steps, its preset's budget) at the full and the smallest width;
a file of its own so that the two slowest tests run on different test processes."""

from pathlib import Path

from test_learning import check_cartpole_preset_learns


def test_ppo_cartpole_preset_learns_at_full_and_smallest_width(tmp_path: Path) -> None:
    check_cartpole_preset_learns("ppo", 100_000, tmp_path)
