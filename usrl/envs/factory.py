"""Resolve an environment name and build vectorised envs the way rl-zoo3 does.

* Atari: short names (``Pong``, ``breakout``, ``SpaceInvaders``; any case) become
  ``<Name>NoFrameskip-v4``; full ids (``PongNoFrameskip-v4``, ``ALE/Pong-v5``) work too. By
  default the games run in ale-py's vector env (:class:`usrl.envs.AtariVecEnv`: noop reset,
  frame skip 4, fire reset, 84x84 grey and a 4-frame stack; life loss and reward clipping for
  training). ``atari_backend="zoo"`` builds rl-zoo3's pipeline instead: SB3's ``AtariWrapper``
  and ``VecFrameStack``, one Python env per game (for ``ALE/*-v5`` ids the env is made with
  ``frameskip=1``, sticky actions kept, so the wrapper's skip stays the only one).
* Classic control and other vector-observation ids (``CartPole-v1``, ``Acrobot-v1``, ...).
* MinAtar (``MinAtar/Breakout-v1`` ...) with the optional ``minatar`` package: boards
  become channel-first float32 arrays.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.atari_wrappers import AtariWrapper
from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecFrameStack

ATARI_BACKENDS = ("ale", "zoo")


class UnknownEnvError(ValueError):
    """The environment name is not known; the message lists the closest known names."""


@dataclass(frozen=True)
class EnvSpec:
    """What an env name resolves to: the gymnasium id and its family (``atari``, ``minatar``, ``gym``)."""

    env_id: str
    family: str

    @property
    def short_name(self) -> str:
        """A name for run folders: ``Pong`` for ``PongNoFrameskip-v4``, ``MinAtar-Breakout-v1`` ..."""
        if self.family == "atari":
            base = self.env_id.split("/")[-1]
            return base.split("NoFrameskip")[0].split("-v")[0]
        return self.env_id.replace("/", "-")


_registered = False


def _register_optional_envs() -> None:
    global _registered
    if _registered:
        return
    import ale_py

    gym.register_envs(ale_py)
    try:
        from minatar.gym import register_envs

        if not any(k.startswith("MinAtar/") for k in gym.registry):
            register_envs()
    except ImportError:
        pass
    _registered = True


def _atari_games() -> dict[str, str]:
    """Lower-case short name -> ``<Name>NoFrameskip-v4`` for every registered v4 Atari game."""
    return {
        env_id[: -len("NoFrameskip-v4")].lower(): env_id
        for env_id in gym.registry
        if env_id.endswith("NoFrameskip-v4") and "/" not in env_id and "-ram" not in env_id.lower()
    }


def resolve_env(name: str) -> EnvSpec:
    """Turn a user's env name into an :class:`EnvSpec`; :class:`UnknownEnvError` with suggestions."""
    _register_optional_envs()
    if name in gym.registry:
        entry = str(gym.registry[name].entry_point)
        if "ale_py" in entry:
            return EnvSpec(name, "atari")
        if name.startswith("MinAtar/"):
            return EnvSpec(name, "minatar")
        return EnvSpec(name, "gym")
    games = _atari_games()
    if name.lower() in games:
        return EnvSpec(games[name.lower()], "atari")
    if name.startswith("MinAtar/"):
        raise UnknownEnvError(
            f'unknown environment {name!r}: MinAtar needs the optional extra: pip install -e ".[minatar]"'
        )
    known = [v.split("NoFrameskip")[0] for v in games.values()] + list(gym.registry)
    by_lower = {k.lower(): k for k in reversed(known)}  # case-insensitive, first spelling wins
    names = [by_lower[k] for k in difflib.get_close_matches(name.lower(), list(by_lower), n=5, cutoff=0.5)]
    hint = f"; closest: {', '.join(names)}" if names else ""
    raise UnknownEnvError(f"unknown environment {name!r}{hint}")


class ChannelFirstFloat(gym.ObservationWrapper):
    """HWC boolean/integer boards (MinAtar) as CHW float32 arrays in [0, 1]."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        shape = env.observation_space.shape
        if shape is None or len(shape) != 3:
            raise ValueError(f"ChannelFirstFloat needs HWC image observations, got shape {shape}")
        h, w, c = shape
        self.observation_space = spaces.Box(0.0, 1.0, shape=(c, h, w), dtype=np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.transpose(observation, (2, 0, 1)), dtype=np.float32)


def _atari_env_kwargs(env_id: str) -> dict[str, Any]:
    # Only NoFrameskip ids leave frame skipping to AtariWrapper; others (ALE/*-v5, Pong-v4) skip
    # frames themselves, which must be turned off so the wrapper's skip is the only one.
    return {} if "NoFrameskip" in env_id else {"frameskip": 1}


def _render(render: bool) -> dict[str, Any]:
    return {"render_mode": "rgb_array"} if render else {}


def make_vec_env(
    spec: EnvSpec | str,
    n_envs: int = 1,
    seed: int | None = None,
    monitor_dir: str | None = None,
    vec_env_cls: str = "dummy",
    frame_stack: int = 4,
    wrapper_kwargs: dict[str, Any] | None = None,
    eval_env: bool = False,
    atari_backend: str = "ale",
    render: bool = False,
    monitor_append: bool = False,
) -> VecEnv:
    """Vectorised envs with SB3 ``Monitor`` files and the family's wrappers.

    ``eval_env=True`` gives Atari evaluation envs: full games and raw scores reach the learner
    too (no life-loss terminals, no reward clipping), as rl-zoo3 evaluates. Atari episode
    statistics (``info["episode"]``, monitor files) are full games with raw scores either way.
    ``atari_backend`` is ``"ale"`` (ale-py's vector env, the default) or ``"zoo"`` (SB3's
    wrappers). ``wrapper_kwargs`` go to :class:`usrl.envs.AtariVecEnv` or to SB3's ``AtariWrapper``.
    ``render=True`` makes ``render()`` return RGB frames (Atari: with ``atari_backend="zoo"``).
    ``monitor_append=True`` continues existing monitor files (a resumed run) instead of
    starting them afresh.
    """
    if isinstance(spec, str):
        spec = resolve_env(spec)
    if atari_backend not in ATARI_BACKENDS:
        raise ValueError(f"atari_backend must be one of {ATARI_BACKENDS}, got {atari_backend!r}")
    cls = SubprocVecEnv if vec_env_cls == "subproc" else DummyVecEnv
    if monitor_dir is not None:
        os.makedirs(monitor_dir, exist_ok=True)
    if spec.family == "atari" and atari_backend == "ale":
        if render:
            raise ValueError("ale-py's vector env does not render frames; use atari_backend='zoo' to render")
        from usrl.envs.ale_vector import AtariVecEnv

        kwargs = {"terminal_on_life_loss": not eval_env, "clip_reward": not eval_env, **(wrapper_kwargs or {})}
        return AtariVecEnv(
            spec.env_id, n_envs=n_envs, seed=seed, frame_stack=frame_stack, monitor_dir=monitor_dir,
            monitor_append=monitor_append, **kwargs,
        )  # fmt: skip
    if spec.family == "atari":
        kwargs = dict(wrapper_kwargs or {})
        if eval_env:
            kwargs.update(terminal_on_life_loss=False, clip_reward=False)
        venv = sb3_make_vec_env(
            spec.env_id, n_envs=n_envs, seed=seed, monitor_dir=monitor_dir, wrapper_class=AtariWrapper,
            wrapper_kwargs=kwargs, env_kwargs={**_atari_env_kwargs(spec.env_id), **_render(render)}, vec_env_cls=cls,
            monitor_kwargs={"override_existing": not monitor_append},
        )  # fmt: skip
        return VecFrameStack(venv, n_stack=frame_stack) if frame_stack > 1 else venv
    wrapper = ChannelFirstFloat if spec.family == "minatar" else None
    return sb3_make_vec_env(
        spec.env_id, n_envs=n_envs, seed=seed, monitor_dir=monitor_dir, wrapper_class=wrapper, vec_env_cls=cls,
        env_kwargs=_render(render), monitor_kwargs={"override_existing": not monitor_append},
    )  # fmt: skip
