"""A replay buffer for frame-stacked images that stores every frame once.

SB3's ``ReplayBuffer`` keeps whole observations: with a 4-frame stack every frame is stored
four times, and eight with ``next_observations`` (100k Atari transitions: ~5.6 GB; its
``optimize_memory_usage`` halves that but cannot be combined with n-step returns).
:class:`FrameStackReplayBuffer` keeps each env's newest frame once per step and rebuilds the
stacks, and the n-step returns, when it samples: 100k Atari transitions take ~0.7 GB.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import BaseBuffer, ReplayBuffer
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.vec_env import VecNormalize


class FrameStackReplayBuffer(ReplayBuffer):
    """SB3's replay buffer (and its n-step returns) for frame-stacked image observations.

    Samples equal those of SB3's ``ReplayBuffer`` (``n_steps=1``) or ``NStepReplayBuffer``
    filled with the same transitions and drawn with the same NumPy random state, episode
    boundaries and timeouts included.

    Observations must be channel-first stacks ``(n_stack * frame_channels, H, W)`` built the way
    SB3's ``VecFrameStack`` (and :class:`usrl.envs.AtariVecEnv`) builds them: each step shifts in
    one new frame, and an episode's first observation is zeros but for its newest frame.

    :param n_steps: steps of the n-step return (1: one-step TD, as ``ReplayBuffer``).
    :param gamma: discount of the n-step return.
    :param frame_channels: channels per frame (1 for grayscale, 3 for RGB).
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        n_steps: int = 1,
        gamma: float = 0.99,
        frame_channels: int = 1,
    ) -> None:
        shape = getattr(observation_space, "shape", None)
        if not isinstance(observation_space, spaces.Box) or shape is None or len(shape) != 3:
            raise ValueError(f"FrameStackReplayBuffer needs (stack, H, W) image observations, got {observation_space}")
        if frame_channels < 1 or shape[0] % frame_channels:
            raise ValueError(f"frame_channels={frame_channels} does not divide the {shape[0]} observation channels")
        if optimize_memory_usage:
            raise ValueError("FrameStackReplayBuffer stores every frame once already: leave optimize_memory_usage off")
        if not (isinstance(n_steps, int) and n_steps >= 1):
            raise ValueError(f"n_steps must be an integer >= 1, got {n_steps!r}")
        # ReplayBuffer.__init__ would allocate whole observations; only the base class is set up here
        BaseBuffer.__init__(self, buffer_size, observation_space, action_space, device, n_envs=n_envs)
        self.buffer_size = max(buffer_size // n_envs, 1)
        self.optimize_memory_usage = False
        self.handle_timeout_termination = handle_timeout_termination
        self.n_steps, self.gamma = n_steps, float(gamma)
        self.frame_channels, self.n_stack = frame_channels, shape[0] // frame_channels
        # frame slots outlive their rows by a stack's length, so the oldest row's stack is intact
        n_slots = self.buffer_size + self.n_stack
        self.frames = np.zeros((n_slots, n_envs, frame_channels, *shape[1:]), dtype=observation_space.dtype)
        self.starts = np.zeros((n_slots, n_envs), dtype=bool)  # the slot's observation begins an episode
        self.rows = np.zeros(self.buffer_size, dtype=np.int64)  # each row's step number
        self.actions = np.zeros(
            (self.buffer_size, n_envs, self.action_dim), dtype=self._maybe_cast_dtype(action_space.dtype)
        )
        self.rewards = np.zeros((self.buffer_size, n_envs), dtype=np.float32)
        self.dones = np.zeros((self.buffer_size, n_envs), dtype=np.float32)
        self.timeouts = np.zeros((self.buffer_size, n_envs), dtype=np.float32)
        self.final_frames: dict[tuple[int, int], np.ndarray] = {}  # (row, env): newest frame of the terminal obs
        self.n_added = 0
        self._starting = np.ones(n_envs, dtype=bool)

    def reset(self) -> None:
        """Empty the buffer."""
        super().reset()
        self.final_frames.clear()
        self.n_added = 0
        self._starting[:] = True

    @property
    def nbytes(self) -> int:
        """Bytes held by the buffer's arrays."""
        arrays = (self.frames, self.starts, self.rows, self.actions, self.rewards, self.dones, self.timeouts)
        return sum(a.nbytes for a in arrays) + sum(f.nbytes for f in self.final_frames.values())

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        c = self.frame_channels
        step, row, n_slots = self.n_added, self.pos, self.frames.shape[0]
        if self.final_frames:
            for env in range(self.n_envs):
                self.final_frames.pop((row, env), None)
        slot, next_slot = step % n_slots, (step + 1) % n_slots
        self.frames[slot] = obs[:, -c:]
        self.starts[slot] = self._starting
        # the next observation's frame, in place until the next add writes the same frame
        self.frames[next_slot] = next_obs[:, -c:]
        self.starts[next_slot] = False
        ended = np.asarray(done, dtype=bool).reshape(self.n_envs)
        for ended_env in np.flatnonzero(ended):
            self.final_frames[(row, int(ended_env))] = np.array(next_obs[ended_env, -c:])
        self._starting = ended.copy()
        self.rows[row] = step
        self.actions[row] = np.asarray(action).reshape((self.n_envs, self.action_dim))
        self.rewards[row] = np.asarray(reward)
        self.dones[row] = ended
        if self.handle_timeout_termination:
            self.timeouts[row] = np.array([info.get("TimeLimit.truncated", False) for info in infos])
        self.n_added += 1
        self.pos += 1
        if self.pos == self.buffer_size:
            self.full = True
            self.pos = 0

    def _stacks(self, steps: np.ndarray, envs: np.ndarray, newest: np.ndarray | None = None) -> np.ndarray:
        """Observations of ``envs`` at step numbers ``steps``; ``newest`` replaces their newest frame
        (a terminal observation: the step after ``steps - 1``, in the same episode)."""
        n_slots, s, c = self.frames.shape[0], self.n_stack, self.frame_channels
        out = np.zeros((len(steps), s, c, *self.frames.shape[3:]), dtype=self.frames.dtype)
        in_episode = np.ones(len(steps), dtype=bool)
        for k in range(s):  # k frames back from the newest
            if k == 0:
                if newest is not None:
                    out[:, s - 1] = newest
                    continue
            elif newest is None or k > 1:
                # frame k is in the episode if none of the newer frames begins it
                in_episode &= ~self.starts[(steps - k + 1) % n_slots, envs]
            idx = np.flatnonzero(in_episode)
            out[idx, s - 1 - k] = self.frames[(steps[idx] - k) % n_slots, envs[idx]]
        return out.reshape(len(steps), s * c, *self.frames.shape[3:])

    def _get_samples(self, batch_inds: np.ndarray, env: VecNormalize | None = None) -> ReplayBufferSamples:
        env_indices = np.random.randint(0, self.n_envs, size=batch_inds.shape)
        n = self.n_steps
        # the newest row's window cannot reach past it: its next observation is the newest one
        last = self.pos - 1
        saved = self.timeouts[last].copy()
        self.timeouts[last] = np.logical_or(saved, np.logical_not(self.dones[last]))
        try:
            window = (batch_inds[:, None] + np.arange(n)[None, :]) % self.buffer_size
            rewards = self._normalize_reward(self.rewards[window, env_indices[:, None]], env)
            ended = np.logical_or(self.dones[window, env_indices[:, None]], self.timeouts[window, env_indices[:, None]])
            stop = np.where(ended.any(axis=1), ended.argmax(axis=1), n - 1)
            mask = np.arange(n)[None, :] <= stop[:, None]
            returns = (rewards * (self.gamma ** np.arange(n, dtype=np.float32))[None, :] * mask).sum(
                axis=1, keepdims=True
            )
            discounts = (self.gamma ** mask.sum(axis=1, keepdims=True)).astype(np.float32)
            last_rows = (batch_inds + stop) % self.buffer_size
            dones = self.dones[last_rows, env_indices] * (1.0 - self.timeouts[last_rows, env_indices])
        finally:
            self.timeouts[last] = saved

        obs = self._stacks(self.rows[batch_inds], env_indices)
        next_obs = self._stacks(self.rows[last_rows] + 1, env_indices)
        episode_ends = np.flatnonzero(self.dones[last_rows, env_indices])
        if len(episode_ends):
            rows_e, envs_e = last_rows[episode_ends], env_indices[episode_ends]
            newest = np.stack([self.final_frames[(int(r), int(e))] for r, e in zip(rows_e, envs_e, strict=True)])
            next_obs[episode_ends] = self._stacks(self.rows[rows_e] + 1, envs_e, newest=newest)
        return ReplayBufferSamples(
            observations=self.to_torch(self._normalize_obs(obs, env)),  # type: ignore[arg-type]
            actions=self.to_torch(self.actions[batch_inds, env_indices]),
            next_observations=self.to_torch(self._normalize_obs(next_obs, env)),  # type: ignore[arg-type]
            dones=self.to_torch(dones[:, None].astype(np.float32)),
            rewards=self.to_torch(returns.astype(np.float32)),
            discounts=self.to_torch(discounts),
        )
