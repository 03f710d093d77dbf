"""Atari on ale-py's own vector env (C++ threads, preprocessing inside), as an SB3 ``VecEnv``.

:class:`AtariVecEnv` gives SB3 algorithms what rl-zoo3's pipeline (``make_atari_env`` +
``VecFrameStack``) gives them, at a fraction of the Python cost:

* ale-py does noop resets (up to 30), frame skip 4 with a max-pool over the last two frames,
  84x84 grayscale and FIRE on reset; ``NoFrameskip-v4`` ids run without sticky actions,
  ``ALE/*-v5`` ids with their 0.25;
* the adapter stacks the last ``frame_stack`` frames channel-first, zero-filled at the start of
  every episode exactly as ``VecFrameStack`` does;
* with ``terminal_on_life_loss`` (training) a lost life ends the learner's episode (``done``,
  with ``terminal_observation``) while the game goes on, as SB3's ``EpisodicLifeEnv`` does;
  with ``clip_reward`` the learner sees ``sign(reward)``;
* whatever the learner sees, ``info["episode"]`` (SB3's ``Monitor`` convention) reports full
  games with their raw, unclipped score, once per game over; ``monitor_dir`` gets one
  ``monitor.csv`` in SB3's format.

Differences from the zoo pipeline: after a lost life the game continues from the frame where the
life was lost (the zoo takes one noop step and, in games with FIRE, presses FIRE); episode
lengths count agent steps (the zoo's ``Monitor`` sits under the frame skip and counts frames).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.monitor import Monitor, ResultsWriter
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

FRAME_SKIP = 4
FRAME_SIZE = 84


def ale_game_settings(env_id: str) -> dict[str, Any]:
    """The ROM name and the settings an ALE gymnasium id implies (sticky actions, action set, frame limit)."""
    import ale_py

    gym.register_envs(ale_py)
    if env_id not in gym.registry:
        raise ValueError(f"unknown Atari id {env_id!r}")
    kwargs = gym.registry[env_id].kwargs
    if "game" not in kwargs:
        raise ValueError(f"{env_id!r} is not an ALE environment")
    return {
        "game": kwargs["game"],
        "repeat_action_probability": float(kwargs.get("repeat_action_probability", 0.0)),
        "full_action_space": bool(kwargs.get("full_action_space", False)),
        "max_num_frames_per_episode": int(kwargs.get("max_num_frames_per_episode") or 108_000),
    }


class AtariVecEnv(VecEnv):
    """``n_envs`` Atari games stepped by ale-py's ``AtariVectorEnv``, behind SB3's ``VecEnv`` API.

    :param env_id: an ALE gymnasium id (``PongNoFrameskip-v4``, ``ALE/Pong-v5``).
    :param n_envs: games stepped together.
    :param seed: seeds the games (``seed + i`` for game ``i``) at the first reset; ``None``: random.
    :param frame_stack: frames per observation (observations are ``(frame_stack, 84, 84)`` uint8).
    :param terminal_on_life_loss: a lost life ends the learner's episode (the game goes on).
    :param clip_reward: the learner gets ``sign(reward)``; episode statistics keep the raw score.
    :param noop_max: at most this many noop actions at each game start.
    :param num_threads: ale-py's worker threads (default: half the CPU cores, at least one; the
        other half is left to torch, whose threads otherwise contend with ale-py's).
    :param max_episode_frames: a game is truncated after this many emulator frames (default: the
        id's, 108,000 = 30 minutes of play).
    :param monitor_dir: folder for ``monitor.csv`` (full games, raw scores); ``None``: no file.
    :param monitor_append: continue an existing ``monitor.csv`` (a resumed run) instead of overwriting it.
    """

    def __init__(
        self,
        env_id: str,
        n_envs: int = 1,
        seed: int | None = None,
        frame_stack: int = 4,
        terminal_on_life_loss: bool = True,
        clip_reward: bool = True,
        noop_max: int = 30,
        num_threads: int | None = None,
        max_episode_frames: int | None = None,
        monitor_dir: str | Path | None = None,
        monitor_append: bool = False,
    ) -> None:
        from ale_py.vector_env import AtariVectorEnv

        if n_envs < 1 or frame_stack < 1:
            raise ValueError(f"n_envs and frame_stack must be >= 1, got {n_envs} and {frame_stack}")
        settings = ale_game_settings(env_id)
        if num_threads is None:
            num_threads = max(1, (os.cpu_count() or 2) // 2)
        self.env_id = env_id
        self.terminal_on_life_loss = terminal_on_life_loss
        self.clip_reward = clip_reward
        self.render_mode = None
        self._ale = AtariVectorEnv(
            settings["game"], n_envs, num_threads=num_threads,
            repeat_action_probability=settings["repeat_action_probability"],
            full_action_space=settings["full_action_space"],
            max_num_frames_per_episode=max_episode_frames or settings["max_num_frames_per_episode"],
            autoreset_mode="SameStep", img_height=FRAME_SIZE, img_width=FRAME_SIZE, grayscale=True,
            stack_num=1, frameskip=FRAME_SKIP, maxpool=True, noop_max=noop_max,
            episodic_life=False, life_loss_info=False, reward_clipping=False, use_fire_reset=True,
        )  # fmt: skip
        action_space = self._ale.single_action_space
        assert isinstance(action_space, spaces.Discrete)
        n_actions = int(action_space.n)
        obs_space = spaces.Box(0, 255, (frame_stack, FRAME_SIZE, FRAME_SIZE), dtype=np.uint8)
        super().__init__(n_envs, obs_space, spaces.Discrete(n_actions))
        self._stack = np.zeros((n_envs, frame_stack, FRAME_SIZE, FRAME_SIZE), dtype=np.uint8)
        self._lives = np.zeros(n_envs, dtype=np.int64)
        self._returns = np.zeros(n_envs, dtype=np.float64)
        self._lengths = np.zeros(n_envs, dtype=np.int64)
        self._actions = np.zeros(n_envs, dtype=np.int64)
        self._t_start = time.time()
        self._writer = None
        if monitor_dir is not None:
            Path(monitor_dir).mkdir(parents=True, exist_ok=True)
            self._writer = ResultsWriter(
                str(Path(monitor_dir) / "monitor.csv"),
                header={"t_start": self._t_start, "env_id": env_id},
                override_existing=not monitor_append,
            )
        if seed is not None:
            self.seed(seed)

    # -- the VecEnv API -------------------------------------------------------------------------
    def reset(self) -> VecEnvObs:
        seeds = None if all(s is None for s in self._seeds) else np.array([-1 if s is None else s for s in self._seeds])
        obs, info = self._ale.reset(seed=seeds)
        self._reset_seeds()
        self._reset_options()
        self._stack[:] = 0
        self._stack[:, -1] = obs[:, 0]
        self._lives[:] = info["lives"]
        self._returns[:] = 0.0
        self._lengths[:] = 0
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return self._stack.copy()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.num_envs).astype(np.int32)

    def step_wait(self) -> VecEnvStepReturn:
        obs, reward, terminated, truncated, info = self._ale.step(self._actions)
        frames = obs[:, 0]
        raw = reward.astype(np.float64)
        self._returns += raw
        self._lengths += 1
        game_over = terminated | truncated
        lives = info["lives"].astype(np.int64)
        life_lost = (lives < self._lives) & ~game_over if self.terminal_on_life_loss else np.zeros_like(game_over)
        self._lives = lives  # after a game over: the new game's lives
        dones = game_over | life_lost

        self._stack[:, :-1] = self._stack[:, 1:]
        self._stack[:, -1] = frames
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for i in np.flatnonzero(dones):
            if game_over[i]:  # the game was reset in this step: its last frame is in final_obs
                self._stack[i, -1] = info["final_obs"][i, 0]
            infos[i]["terminal_observation"] = self._stack[i].copy()
            infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            if game_over[i]:
                infos[i]["episode"] = {
                    "r": float(self._returns[i]), "l": int(self._lengths[i]), "t": round(time.time() - self._t_start, 6)
                }  # fmt: skip
                if self._writer is not None:
                    self._writer.write_row(infos[i]["episode"])
                self._returns[i] = 0.0
                self._lengths[i] = 0
            self._stack[i] = 0
            self._stack[i, -1] = frames[i]
        rewards = np.sign(raw) if self.clip_reward else raw
        return self._stack.copy(), rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        self._ale.close()
        if self._writer is not None:
            self._writer.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self, attr_name)  # AttributeError as a wrapped env would raise
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        result = getattr(self, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        # The adapter reports Monitor's episode statistics itself (full games, raw scores), so
        # SB3's evaluate_policy counts games, not lives.
        return [issubclass(Monitor, wrapper_class) for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [self._stack[i, -1] for i in range(self.num_envs)]

    def get_action_meanings(self) -> list[str]:
        """Names of the actions (``NOOP``, ``FIRE``, ...)."""
        return [action.name for action in self._ale.ale.get_action_set()]

    def _get_indices(self, indices: VecEnvIndices) -> Iterable[int]:
        if indices is None:
            return range(self.num_envs)
        if isinstance(indices, int):
            return [indices]
        return indices
