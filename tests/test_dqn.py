"""US-DQN: SB3 integration, the sandwich update, save/load, widths at predict time."""

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import DQN
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.evaluation import evaluate_policy

from usrl import USDQN
from usrl.agents import USCnnPolicy, USMlpPolicy
from usrl.nn import get_width, kl_divergence, sandwich_widths


def _fill(model: DQN, n: int = 300) -> None:
    """Collect ``n`` random transitions into the model's replay buffer."""
    model.learning_starts = n + 1
    model.learn(n)


def _copy_weights(src: DQN, dst: DQN) -> None:
    dst.policy.load_state_dict(src.policy.state_dict())


def test_policy_aliases_and_public_imports() -> None:
    import usrl
    import usrl.agents

    m = USDQN("MlpPolicy", "CartPole-v1", learning_starts=10, buffer_size=1000)
    assert isinstance(m.policy, USMlpPolicy) and usrl.USDQN is USDQN
    assert usrl.agents.USCnnPolicy is USCnnPolicy
    assert m.policy.width_range == (0.25, 1.0)
    assert m.q_net.q_net[0].width_control is m.q_net_target.q_net[2].width_control


def test_n_widths_1_matches_sb3_dqn_on_the_same_batch() -> None:
    kwargs = dict(learning_starts=10, buffer_size=1000, batch_size=32, seed=3, policy_kwargs={"optimizer_kwargs": {}})
    us = USDQN("MlpPolicy", "CartPole-v1", n_widths=1, **kwargs)
    sb3 = DQN("MlpPolicy", "CartPole-v1", **kwargs)
    _fill(us)
    sb3.replay_buffer = us.replay_buffer
    _copy_weights(us, sb3)
    sb3.policy.q_net_target.load_state_dict(us.policy.q_net_target.state_dict())
    for model in (us, sb3):
        model._setup_learn(1)  # a logger for train()
    for step in range(3):
        np.random.seed(step)
        us.train(gradient_steps=1, batch_size=32)
        np.random.seed(step)
        sb3.train(gradient_steps=1, batch_size=32)
        assert us.logger.name_to_value["train/loss"] == pytest.approx(sb3.logger.name_to_value["train/loss"], rel=1e-6)
    for a, b in zip(us.policy.parameters(), sb3.policy.parameters(), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("distill", ["mse", "kl"])
def test_sandwich_gradients_and_distillation_never_reach_the_teacher(distill: str) -> None:
    """One train step's gradient equals TD(full) + distill(width, detached full) summed by hand."""
    m = USDQN(
        "MlpPolicy",
        "CartPole-v1",
        n_widths=3,
        distill=distill,
        distill_temperature=2.0,
        seed=1,
        learning_starts=10,
        buffer_size=1000,
    )
    _fill(m)
    m._setup_learn(1)
    gen_state = m.width_generator.get_state()
    np.random.seed(7)
    batch = m.replay_buffer.sample(32)
    np.random.seed(7)
    widths = sandwich_widths(3, 0.25, 1.0, torch.Generator().set_state(gen_state))
    policy = m.policy
    grads = {}
    step = policy.optimizer.step
    policy.optimizer.step = lambda *a, **k: (
        grads.update({n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}),
        step(*a, **k),
    )[1]
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    m.train(gradient_steps=1, batch_size=32)

    # by hand, with a copy of the pre-step weights
    ref = USDQN("MlpPolicy", "CartPole-v1", n_widths=3, seed=1, learning_starts=10, buffer_size=1000)
    with torch.no_grad():
        for n, p in ref.policy.named_parameters():
            p.copy_(before[n])
    q_net, q_t = ref.policy.q_net, ref.policy.q_net_target
    with torch.no_grad():
        ref.policy.set_width(1.0)
        target = batch.rewards + (1 - batch.dones) * m.gamma * q_t(batch.next_observations).max(1)[0].reshape(-1, 1)
    total = 0.0
    for i, w in enumerate(widths):
        ref.policy.set_width(w)
        q_all = q_net(batch.observations)
        if i == 0:
            teacher = q_all  # NOT detached here: the loss must detach it itself
            total = total + torch.nn.functional.smooth_l1_loss(q_all.gather(1, batch.actions.long()), target)
        elif distill == "mse":
            total = total + torch.nn.functional.mse_loss(q_all, teacher.detach())
        else:
            total = total + kl_divergence(q_all, teacher.detach(), 2.0)
    total.backward()
    torch.nn.utils.clip_grad_norm_(ref.policy.parameters(), m.max_grad_norm)
    for n, p in ref.policy.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(grads[n], p.grad, rtol=1e-4, atol=1e-6)
    assert not any(n.startswith("q_net_target") for n in grads)
    assert get_width(m.policy) == 1.0  # back at the rollout width


def test_predict_at_widths_and_bad_widths() -> None:
    m = USDQN("MlpPolicy", "CartPole-v1", learning_starts=10, buffer_size=1000, seed=0)
    obs = np.zeros((5, 4), dtype=np.float32) + np.arange(5, dtype=np.float32)[:, None]
    q = {}
    for w in (0.25, 0.5, 1.0):
        action, _ = m.predict(obs, deterministic=True, width=w)
        assert action.shape == (5,)
        with torch.no_grad():
            m.policy.set_width(w)
            q[w] = m.q_net(torch.as_tensor(obs))
    m.policy.set_width(1.0)
    assert not torch.allclose(q[0.25], q[1.0])
    assert get_width(m.policy) == 1.0
    for bad in (0.1, 1.5, float("nan"), "wide"):
        with pytest.raises(ValueError, match=r"\[0\.25, 1\.0\]"):
            m.predict(obs, width=bad)
        with pytest.raises(ValueError):
            m.set_width(bad)
        with pytest.raises(ValueError):
            m.policy.set_width(bad)
    m.set_width(0.5)
    assert m.rollout_width == 0.5 and get_width(m.policy) == 0.5
    for kwargs in ({"n_widths": 0}, {"distill": "l2"}, {"distill_weight": 1.5}, {"rollout_width": 0.1}):
        with pytest.raises(ValueError):
            USDQN("MlpPolicy", "CartPole-v1", **kwargs)
    with pytest.raises(ValueError, match="width range"):
        USDQN("MlpPolicy", "CartPole-v1", policy_kwargs={"width_range": (0.5, 0.2)})


def test_save_load_round_trip_in_a_fresh_process(tmp_path: Path) -> None:
    m = USDQN(
        "MlpPolicy", "CartPole-v1", n_widths=3, distill="kl", distill_weight=0.7, distill_temperature=2.0,
        learning_starts=10, buffer_size=1000, seed=0, policy_kwargs={"width_range": (0.3, 0.9), "net_arch": [32, 32]},
    )  # fmt: skip
    _fill(m, 200)
    m.learning_starts = 50
    m.learn(200, reset_num_timesteps=False)
    path = tmp_path / "model.zip"
    m.save(path)
    obs = torch.linspace(-1, 1, 20).reshape(5, 4)
    expected = {}
    for w in (0.3, 0.55, 0.9):
        m.policy.set_width(w)
        with torch.no_grad():
            expected[w] = m.q_net(obs).numpy().tolist()
    code = textwrap.dedent(
        f"""
        import json, torch
        torch.set_num_threads({torch.get_num_threads()})  # the same kernels as the parent: bit-identical Q
        from usrl import USDQN
        m = USDQN.load({str(path)!r})
        out = {{"settings": [m.n_widths, m.distill, m.distill_weight, m.distill_temperature, list(m.policy.width_range)]}}
        obs = torch.linspace(-1, 1, 20).reshape(5, 4)
        for w in (0.3, 0.55, 0.9):
            m.policy.set_width(w)
            with torch.no_grad():
                out[str(w)] = m.q_net(obs).numpy().tolist()
        print(json.dumps(out))
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    import json

    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["settings"] == [3, "kl", 0.7, 2.0, [0.3, 0.9]]
    for w in (0.3, 0.55, 0.9):
        np.testing.assert_array_equal(np.array(out[str(w)]), np.array(expected[w]))


def test_tensorboard_gets_per_width_losses(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    m = USDQN(
        "MlpPolicy",
        "CartPole-v1",
        learning_starts=50,
        buffer_size=1000,
        train_freq=4,
        tensorboard_log=str(tmp_path),
        seed=0,
    )
    m.learn(600, log_interval=1, tb_log_name="us")
    runs = list(tmp_path.glob("us_*"))
    assert len(runs) == 1
    acc = EventAccumulator(str(runs[0]))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/loss_w0.25", "train/loss_random_widths", "train/distill_loss"} <= tags


def test_drop_in_cnn_policy_in_plain_sb3_dqn_on_atari() -> None:
    import ale_py
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    gym.register_envs(ale_py)
    env = VecFrameStack(make_atari_env("PongNoFrameskip-v4", n_envs=1, seed=0), n_stack=4)
    model = DQN(
        USCnnPolicy,
        env,
        buffer_size=500,
        learning_starts=100,
        train_freq=4,
        batch_size=8,
        seed=0,
        optimize_memory_usage=False,
    )
    model.learn(300, progress_bar=False)
    obs = env.reset()
    for w in (0.25, 0.6, 1.0):
        model.policy.set_width(w)
        action, _ = model.predict(obs, deterministic=True)
        assert action.shape == (1,) and 0 <= action[0] < 6
    feats = model.q_net.features_extractor
    assert [m.shape_at(0.25)[1] for m in feats.cnn if hasattr(m, "shape_at")] == [8, 16, 16]
    assert feats.linear[0].shape_at(0.25) == (16 * 49, 128)
    mean, _ = evaluate_policy(model, env, n_eval_episodes=1)
    assert np.isfinite(mean)


def _one_update_and_its_reference(us: USDQN, target_shift: float) -> tuple[Any, Any]:
    """Fill ``us``'s buffer, shift its target network off the Q-network by ``target_shift``, run one
    ``train`` step on a seeded batch; return a copy of the policy from before the step and that batch."""
    import copy

    _fill(us)
    us.policy.q_net_target.load_state_dict({k: v + target_shift for k, v in us.policy.q_net.state_dict().items()})
    us._setup_learn(1)
    ref = copy.deepcopy(us.policy)
    np.random.seed(0)
    us.train(gradient_steps=1, batch_size=32)
    np.random.seed(0)
    return ref, us.replay_buffer.sample(32)


def _step_and_compare(us: USDQN, ref: Any, loss: torch.Tensor) -> None:
    """Take the reference's optimizer step on ``loss`` as USDQN does; its weights must equal ``us``'s."""
    ref.optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(ref.parameters(), us.max_grad_norm)
    ref.optimizer.step()
    for a, b in zip(us.policy.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("double_q", [True, False])
def test_double_q_target_by_hand(double_q: bool) -> None:
    """One full-width update equals a hand-built one with (Double) DQN targets on the same batch."""
    import torch.nn.functional as F

    us = USDQN("MlpPolicy", "CartPole-v1", n_widths=1, double_q=double_q, learning_starts=10, buffer_size=1000, seed=1)
    ref, data = _one_update_and_its_reference(us, 0.05)
    with torch.no_grad():
        next_target = ref.q_net_target(data.next_observations)
        if double_q:
            next_q = next_target.gather(1, ref.q_net(data.next_observations).argmax(dim=1, keepdim=True))
        else:
            next_q = next_target.max(dim=1, keepdim=True)[0]
        target = data.rewards + (1 - data.dones) * us.gamma * next_q
    loss = F.smooth_l1_loss(ref.q_net(data.observations).gather(1, data.actions.long()), target)
    assert us.logger.name_to_value["train/loss"] == pytest.approx(loss.item(), rel=1e-5)
    _step_and_compare(us, ref, loss)


@pytest.mark.parametrize("teacher", ["online", "target"])
def test_distill_teacher_by_hand(teacher: str) -> None:
    """A two-width update (full + smallest) equals a hand-built one: the smallest width distils the
    full width's Q-values of the online network, or of the target network with ``"target"``."""
    import torch.nn.functional as F

    us = USDQN(
        "MlpPolicy", "CartPole-v1", n_widths=2, distill_teacher=teacher, learning_starts=10, buffer_size=1000, seed=3
    )
    ref, data = _one_update_and_its_reference(us, -0.03)
    with torch.no_grad():
        target = data.rewards + (1 - data.dones) * us.gamma * ref.q_net_target(data.next_observations).max(1, True)[0]
        ref_teacher = ref.q_net_target(data.observations)
    full = ref.q_net(data.observations)
    ref.set_width(0.25)
    low = ref.q_net(data.observations)
    ref.set_width(1.0)
    teacher_q = ref_teacher if teacher == "target" else full.detach()
    loss = F.smooth_l1_loss(full.gather(1, data.actions.long()), target) + F.mse_loss(low, teacher_q)
    assert us.logger.name_to_value["train/distill_loss"] == pytest.approx(F.mse_loss(low, teacher_q).item(), rel=1e-5)
    _step_and_compare(us, ref, loss)


def test_distill_teacher_is_checked() -> None:
    with pytest.raises(ValueError, match="distill_teacher"):
        USDQN("MlpPolicy", "CartPole-v1", distill_teacher="ema")


def test_double_q_must_be_a_bool() -> None:
    with pytest.raises(ValueError, match="double_q"):
        USDQN("MlpPolicy", "CartPole-v1", double_q="yes")  # type: ignore[arg-type]


def test_a_users_own_sb3_q_policy_trains_exactly_as_sb3_dqn() -> None:
    from stable_baselines3.dqn.policies import DQNPolicy

    kwargs = dict(seed=2, learning_starts=50, train_freq=4, target_update_interval=100)
    with pytest.warns(UserWarning, match="DQNPolicy is not slimmable"):
        us = USDQN(DQNPolicy, "CartPole-v1", **kwargs)
    us.learn(400)
    sb3 = DQN(DQNPolicy, "CartPole-v1", **kwargs)
    sb3.learn(400)
    for a, b in zip(us.policy.parameters(), sb3.policy.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(TypeError, match="not slimmable"):
        us.set_width(0.5)
    with pytest.raises(ValueError, match="double_q"), pytest.warns(UserWarning):
        USDQN(DQNPolicy, "CartPole-v1", double_q=True)


def test_frame_stack_buffer_gets_the_n_step_settings() -> None:
    import warnings

    from usrl.agents import FrameStackReplayBuffer
    from usrl.envs import make_vec_env

    env = make_vec_env("Pong", n_envs=2, seed=0, wrapper_kwargs={"num_threads": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # SB3's "n_steps is ignored" warning would be wrong here
        m = USDQN("CnnPolicy", env, buffer_size=200, learning_starts=40, n_steps=3, gamma=0.9,
                  replay_buffer_class=FrameStackReplayBuffer, device="cpu", seed=0)  # fmt: skip
    assert isinstance(m.replay_buffer, FrameStackReplayBuffer)
    assert (m.replay_buffer.n_steps, m.replay_buffer.gamma, m.replay_buffer.buffer_size) == (3, 0.9, 100)
    m.learn(60)  # learns from rebuilt stacks and 3-step returns
    assert m._n_updates > 0
    env.close()


def test_a_saved_n_step_model_loads_without_the_n_steps_ignored_warning(tmp_path: Path) -> None:
    import warnings

    m = USDQN("MlpPolicy", "CartPole-v1", n_steps=3, gamma=0.9, buffer_size=100, device="cpu", seed=0)
    m.save(tmp_path / "m.zip")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the loaded buffer takes n_steps: SB3's warning would be wrong
        loaded = USDQN.load(tmp_path / "m.zip", env=m.get_env())
    assert (loaded.replay_buffer.n_steps, loaded.replay_buffer.gamma) == (3, 0.9)
    with pytest.warns(UserWarning, match="is ignored"):  # a buffer that really ignores it still warns
        USDQN("MlpPolicy", "CartPole-v1", n_steps=3, replay_buffer_class=ReplayBuffer, device="cpu")


def test_acting_zip_is_small_and_loads_for_acting_and_training(tmp_path: Path) -> None:
    from usrl.envs import make_vec_env

    env = make_vec_env("Pong", n_envs=2, seed=0, wrapper_kwargs={"num_threads": 1})
    m = USDQN("CnnPolicy", env, buffer_size=200, learning_starts=20, device="cpu", seed=0)
    m.learn(40)
    m.save(tmp_path / "full.zip")
    m.save_acting(tmp_path / "half.zip")
    m.save_acting(tmp_path / "single.zip", dtype=torch.float32)
    assert (tmp_path / "half.zip").stat().st_size < (tmp_path / "full.zip").stat().st_size / 6
    with pytest.warns(UserWarning, match="acting-only model"):
        exact = USDQN.load(tmp_path / "single.zip", env=env, device="cpu")
    with pytest.warns(UserWarning, match="acting-only model"):
        half = USDQN.load(tmp_path / "half.zip", env=env, device="cpu")
    obs = env.reset()
    x = torch.as_tensor(obs)
    for w in (0.25, 0.6, 1.0):
        for model in (m, exact, half):
            model.policy.set_width(w)
        with torch.no_grad():
            q, q_exact, q_half = m.q_net(x), exact.q_net(x), half.q_net(x)
        torch.testing.assert_close(q_exact, q)
        torch.testing.assert_close(q_half, q, rtol=0, atol=1e-3)  # float16 weights
    assert all(p.dtype == torch.float32 for p in half.policy.parameters())
    for a, b in zip(half.q_net.parameters(), half.q_net_target.parameters(), strict=True):
        torch.testing.assert_close(a, b)  # the target network is rebuilt from the Q-network
    half.learn(20)  # a fresh optimizer trains on
    env.close()
