"""AtariVecEnv: ale-py's vector env behind SB3's VecEnv API, with the zoo pipeline's meaning."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import DQN
from stable_baselines3.common.env_util import make_atari_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor, load_results
from stable_baselines3.common.vec_env import VecFrameStack, VecTransposeImage

from usrl.envs import AtariVecEnv, make_vec_env


def _play(env: AtariVecEnv, steps: int, seed: int = 0) -> list[tuple]:
    rng = np.random.default_rng(seed)
    env.reset()
    return [env.step(rng.integers(0, env.action_space.n, env.num_envs)) for _ in range(steps)]


def test_shapes_dtypes_and_zero_filled_reset() -> None:
    env = AtariVecEnv("PongNoFrameskip-v4", n_envs=3, seed=0, num_threads=1)
    assert env.observation_space.shape == (4, 84, 84) and env.observation_space.dtype == np.uint8
    assert env.action_space.n == 6 and env.get_action_meanings()[:2] == ["NOOP", "FIRE"]
    obs = env.reset()
    assert obs.shape == (3, 4, 84, 84) and obs.dtype == np.uint8
    assert not obs[:, :3].any() and obs[:, 3].any()  # VecFrameStack's zero-filled start
    obs2, rewards, dones, infos = env.step(np.zeros(3, dtype=int))
    assert rewards.dtype == np.float32 and dones.dtype == bool and len(infos) == 3
    np.testing.assert_array_equal(obs2[:, 2], obs[:, 3])  # one new frame shifted in
    assert env.env_is_wrapped(Monitor) == [True] * 3
    env.close()


def test_seeding_reproduces_games() -> None:
    runs = []
    for seed in (5, 5, 6):
        env = AtariVecEnv("BreakoutNoFrameskip-v4", n_envs=2, seed=seed, num_threads=1)
        runs.append(np.stack([o for o, *_ in _play(env, 60)]))
        env.close()
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])  # noop starts differ with the seed


def test_life_loss_ends_the_learners_episode_not_the_game() -> None:
    env = AtariVecEnv("BreakoutNoFrameskip-v4", n_envs=1, seed=0, num_threads=1)
    life_dones = games = 0
    prev_obs = env.reset()
    rng = np.random.default_rng(0)
    while games < 3:
        obs, _, dones, infos = env.step(rng.integers(0, 4, 1))
        for i in np.flatnonzero(dones):
            term = infos[i]["terminal_observation"]
            np.testing.assert_array_equal(term[:3], prev_obs[i, 1:])  # the episode's last stack
            assert not obs[i, :3].any()  # the next episode starts zero-filled
            if "episode" in infos[i]:
                games += 1
            else:
                life_dones += 1
                np.testing.assert_array_equal(obs[i, 3], term[3])  # the game went on: same frame
        prev_obs = obs
    assert life_dones == 4 * games  # Breakout: 5 lives, a terminal at each of the first 4 losses
    env.close()

    full = AtariVecEnv("BreakoutNoFrameskip-v4", n_envs=2, seed=0, num_threads=1, terminal_on_life_loss=False)
    for _, _, dones, infos in _play(full, 600):
        assert all("episode" in infos[i] for i in np.flatnonzero(dones))  # only game overs end episodes
    full.close()


def test_clipped_rewards_and_raw_episode_scores(tmp_path) -> None:
    clipped = AtariVecEnv("SpaceInvadersNoFrameskip-v4", n_envs=2, seed=3, num_threads=1, monitor_dir=tmp_path)
    raw = AtariVecEnv("SpaceInvadersNoFrameskip-v4", n_envs=2, seed=3, num_threads=1, clip_reward=False)
    steps_c, steps_r = _play(clipped, 1500), _play(raw, 1500)
    rc = np.stack([s[1] for s in steps_c])
    rr = np.stack([s[1] for s in steps_r])
    assert set(np.unique(rc)) <= {-1.0, 0.0, 1.0} and rr.max() > 1  # the same games, clipped or not
    np.testing.assert_array_equal(rc, np.sign(rr))
    scores = [info["episode"]["r"] for s in steps_c for info in s[3] if "episode" in info]
    assert scores and max(scores) > 50  # raw points, not the count of clipped rewards
    # each full game's score is the sum of its raw rewards
    ends = [(t, i) for t, s in enumerate(steps_c) for i in range(2) if "episode" in s[3][i]]
    t_end, env_i = ends[0]
    assert steps_c[t_end][3][env_i]["episode"]["r"] == pytest.approx(rr[: t_end + 1, env_i].sum())
    assert steps_c[t_end][3][env_i]["episode"]["l"] == t_end + 1
    clipped.close()
    raw.close()
    monitor = load_results(str(tmp_path))  # SB3's Monitor format
    assert list(monitor["r"]) == scores
    # a resumed run appends its games to the same file
    more = AtariVecEnv("SpaceInvadersNoFrameskip-v4", n_envs=2, seed=4, num_threads=1, monitor_dir=tmp_path,
                       monitor_append=True)  # fmt: skip
    extra = [info["episode"]["r"] for s in _play(more, 1500) for info in s[3] if "episode" in info]
    more.close()
    # (load_results orders rows by their time, which restarts with the appending segment)
    assert extra and sorted(load_results(str(tmp_path))["r"]) == sorted(scores + extra)


def test_truncation_is_a_timeout_with_the_terminal_observation() -> None:
    env = AtariVecEnv("PongNoFrameskip-v4", n_envs=1, seed=0, num_threads=1, max_episode_frames=400)
    steps = _play(env, 120)
    ends = [(t, s[3][0]) for t, s in enumerate(steps) if s[2][0]]
    t, info = ends[0]
    assert info["TimeLimit.truncated"] and "episode" in info and info["episode"]["l"] == t + 1
    assert info["terminal_observation"].shape == (4, 84, 84)
    env.close()


def test_observations_match_the_zoo_pipeline() -> None:
    """Same games, same preprocessing: the zoo's make_atari_env + VecFrameStack and ours give frames
    with the same static picture and brightness (the frame phase of a game differs by FIRE-reset timing)."""
    gym.register_envs(__import__("ale_py"))
    zoo = VecTransposeImage(
        VecFrameStack(make_atari_env("PongNoFrameskip-v4", n_envs=1, seed=0, wrapper_kwargs={"noop_max": 0}), 4)
    )
    ours = AtariVecEnv("PongNoFrameskip-v4", n_envs=1, seed=0, num_threads=1, noop_max=0)
    assert zoo.observation_space == ours.observation_space
    zoo.reset()
    ours.reset()
    z = np.stack([zoo.step(np.array([0]))[0][0, -1] for _ in range(200)]).astype(float)
    o = np.stack([ours.step(np.array([0]))[0][0, -1] for _ in range(200)]).astype(float)
    assert abs(z.mean() - o.mean()) < 0.5
    assert np.abs(np.median(z, axis=0) - np.median(o, axis=0)).mean() < 1.0
    zoo.close()
    ours.close()


def test_sb3_dqn_trains_and_evaluates_full_games() -> None:
    env = make_vec_env("Pong", n_envs=2, seed=0, wrapper_kwargs={"num_threads": 1})
    model = DQN("CnnPolicy", env, buffer_size=500, learning_starts=100, train_freq=4, seed=0, device="cpu")
    model.learn(300)
    eval_env = make_vec_env("Pong", n_envs=2, seed=1, eval_env=True, wrapper_kwargs={"num_threads": 1})
    returns, lengths = evaluate_policy(model, eval_env, n_eval_episodes=2, return_episode_rewards=True)
    assert len(returns) == 2 and all(-21 <= r <= 21 for r in returns) and min(lengths) > 500  # whole games
    env.close()
    eval_env.close()


def test_unknown_and_non_ale_ids() -> None:
    with pytest.raises(ValueError, match="unknown Atari id"):
        AtariVecEnv("NoSuchGameNoFrameskip-v4")
    with pytest.raises(ValueError, match="not an ALE environment"):
        AtariVecEnv("CartPole-v1")
