"""FrameStackReplayBuffer: the same samples as SB3's stacked buffers, in a fraction of the memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import NStepReplayBuffer, ReplayBuffer

from usrl.agents.buffers import FrameStackReplayBuffer

STACK, SIZE = 4, 6


def _episodes(n_envs: int, n_steps: int, seed: int) -> list[tuple]:
    """Transitions as SB3's DQN stores them from a VecFrameStack: stacks zero-filled at each
    episode start, ``next_obs`` the terminal observation where an episode ends (done or timeout)."""
    rng = np.random.default_rng(seed)
    stack = np.zeros((n_envs, STACK, SIZE, SIZE), dtype=np.uint8)
    stack[:, -1] = rng.integers(0, 256, (n_envs, SIZE, SIZE))
    out = []
    for _ in range(n_steps):
        obs = stack.copy()
        stack[:, :-1] = stack[:, 1:]
        stack[:, -1] = rng.integers(0, 256, (n_envs, SIZE, SIZE))
        next_obs = stack.copy()
        terminated = rng.random(n_envs) < 0.08
        truncated = (rng.random(n_envs) < 0.05) & ~terminated
        done = terminated | truncated
        infos = [{"TimeLimit.truncated": bool(t)} for t in truncated]
        for i in np.flatnonzero(done):  # the env resets: a fresh, zero-filled stack
            stack[i] = 0
            stack[i, -1] = rng.integers(0, 256, (SIZE, SIZE))
        out.append(
            (obs, next_obs, rng.integers(0, 3, (n_envs, 1)), rng.normal(size=n_envs).astype(np.float32), done, infos)
        )
    return out


def _space() -> spaces.Box:
    return spaces.Box(0, 255, (STACK, SIZE, SIZE), dtype=np.uint8)


@pytest.mark.parametrize("n_steps", [1, 3])
@pytest.mark.parametrize("timeouts", [True, False])
@pytest.mark.parametrize("n_added", [40, 130])  # before and after the buffer wraps around
def test_samples_equal_sb3_stacked_buffer(n_steps: int, timeouts: bool, n_added: int) -> None:
    n_envs, size = 3, 3 * 32
    kwargs = dict(device="cpu", n_envs=n_envs, handle_timeout_termination=timeouts)
    ref_cls = NStepReplayBuffer if n_steps > 1 else ReplayBuffer
    extra = {"n_steps": n_steps, "gamma": 0.9} if n_steps > 1 else {}
    ref = ref_cls(size, _space(), spaces.Discrete(3), **kwargs, **extra)
    ours = FrameStackReplayBuffer(size, _space(), spaces.Discrete(3), **kwargs, n_steps=n_steps, gamma=0.9)
    transitions = _episodes(n_envs, n_added, seed=n_added)
    assert sum(t[4].sum() for t in transitions) >= 5  # episode boundaries are exercised
    for k, t in enumerate(transitions):
        ref.add(*t)
        ours.add(*t)
        if k in (0, 5, n_added - 1):  # sample mid-stream too: the newest rows' windows end early
            for draw in range(3):
                np.random.seed(draw)
                a = ref.sample(64)
                np.random.seed(draw)
                b = ours.sample(64)
                for name in ("observations", "actions", "next_observations", "dones", "rewards"):
                    th.testing.assert_close(getattr(b, name), getattr(a, name), rtol=0, atol=1e-6, msg=name)
                expected_discounts = a.discounts if a.discounts is not None else th.full_like(b.discounts, 0.9)
                th.testing.assert_close(b.discounts, expected_discounts)


def test_memory_is_one_frame_per_transition() -> None:
    space = spaces.Box(0, 255, (4, 84, 84), dtype=np.uint8)
    buf = FrameStackReplayBuffer(10_000, space, spaces.Discrete(6), device="cpu", n_envs=10, n_steps=3)
    assert buf.frames.nbytes == (1000 + 4) * 10 * 84 * 84
    assert buf.nbytes < 1.02 * buf.frames.nbytes


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"optimize_memory_usage": True}, "optimize_memory_usage"),
        ({"frame_channels": 3}, "frame_channels"),
        ({"n_steps": 0}, "n_steps"),
    ],
)
def test_bad_settings(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FrameStackReplayBuffer(100, _space(), spaces.Discrete(3), device="cpu", **kwargs)
    with pytest.raises(ValueError, match="image observations"):
        FrameStackReplayBuffer(100, spaces.Box(0, 1, (4,)), spaces.Discrete(3), device="cpu")
