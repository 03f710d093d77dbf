"""US-PPO / US-A2C: SB3 equivalence at n_widths=1, the sandwich update, Gaussian actions,
save/load, bad widths, drop-in use in plain SB3, the CLI and the sweep."""

import json
import subprocess
import sys
import tempfile
import textwrap
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.policies import ActorCriticPolicy

from usrl import USA2C, USPPO
from usrl.agents import USActorCriticCnnPolicy, USActorCriticPolicy
from usrl.agents.ac_policies import detach_distribution, distill_loss
from usrl.nn import get_width, sandwich_widths, slimmable_modules


def test_aliases_public_imports_and_slimmed_heads() -> None:
    import usrl

    m = USPPO("MlpPolicy", "CartPole-v1", n_steps=64, policy_kwargs=dict(slim_critic=True))
    assert isinstance(m.policy, USActorCriticPolicy) and usrl.USPPO is USPPO and usrl.USA2C is USA2C
    assert USPPO.policy_aliases["CnnPolicy"] is USActorCriticCnnPolicy
    p = m.policy
    assert p.mlp_extractor.policy_net[0].shape_at(0.25) == (4, 16)  # the observation input never slims
    assert p.action_net.shape_at(0.25) == (16, 2) and p.value_net.shape_at(0.25) == (16, 1)
    assert p.action_net.width_control is p.mlp_extractor.value_net[2].width_control
    # orthogonal initialisation reached the slimmable layers (gain 0.01 for the action head)
    w = p.action_net.weight.detach()
    torch.testing.assert_close(w @ w.T, 1e-4 * torch.eye(2), atol=1e-7, rtol=0)


@pytest.mark.parametrize(
    ("us_cls", "sb3_cls", "slim_critic"), [(USPPO, PPO, True), (USA2C, A2C, True), (USPPO, PPO, False)]
)
def test_n_widths_1_trains_exactly_like_sb3(us_cls: type, sb3_cls: type, slim_critic: bool) -> None:
    """Same seed, same rollouts, same updates: identical parameters after several updates."""
    kwargs = dict(seed=3, n_steps=64)
    us = us_cls("MlpPolicy", "CartPole-v1", n_widths=1, policy_kwargs=dict(slim_critic=slim_critic), **kwargs)
    us.learn(640)
    sb3 = sb3_cls("MlpPolicy", "CartPole-v1", **kwargs)  # seeding resets the global RNGs
    sb3.learn(640)
    for a, b in zip(us.policy.parameters(), sb3.policy.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def _collect(model: USA2C | USPPO, n: int) -> None:
    """Fill the model's rollout buffer with ``n`` steps per env, without training."""
    _, callback = model._setup_learn(n)
    callback.on_training_start(locals(), globals())
    model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=n)


@pytest.mark.parametrize(("student_weight", "slim_critic"), [(1.0, True), (0.4, True), (0.4, False)])
def test_a2c_sandwich_gradient_equals_hand_built_loss(student_weight: float, slim_critic: bool) -> None:
    """One update's gradient without the teacher guard = own loss at full width + for each other
    width, times ``student_weight``, KL(detached full-width policy || its policy) + vf_coef *
    MSE(its value, detached full value); with a full-width critic the other widths have no value
    term."""
    pk = dict(slim_critic=slim_critic)
    m = USA2C("MlpPolicy", "CartPole-v1", n_widths=3, n_steps=16, ent_coef=0.01, seed=0, student_weight=student_weight,
              policy_kwargs=pk, teacher_guard=None)  # fmt: skip
    m.max_grad_norm = 1e9  # no clipping: compare raw gradients
    _collect(m, 16)
    widths = sandwich_widths(3, 0.25, 1.0, torch.Generator().set_state(m.width_generator.get_state()))
    assert widths[:2] == [1.0, 0.25] and 0.25 < widths[2] < 1.0
    policy = m.policy
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    data = next(m.rollout_buffer.get(batch_size=None))
    m.train()
    got = {n: p.grad.clone() for n, p in policy.named_parameters()}

    ref = USA2C("MlpPolicy", "CartPole-v1", n_widths=3, n_steps=16, seed=0, policy_kwargs=pk)
    with torch.no_grad():
        for n, p in ref.policy.named_parameters():
            p.copy_(before[n])
    rp = ref.policy
    actions = data.actions.long().flatten()
    total = torch.zeros(())
    for i, w in enumerate(widths):
        rp.set_width(w)
        dist, values = rp.distribution_and_values(data.observations)
        logits = dist.distribution.logits
        if i == 0:
            teacher_logits, teacher_values = logits, values  # detached below, by hand
            own = (
                -(data.advantages * dist.log_prob(actions)).mean()
                - 0.01 * dist.entropy().mean()
                + m.vf_coef * F.mse_loss(data.returns, values)
            )
            total = total + own
        else:
            t = teacher_logits.detach()
            kl = (t.softmax(-1) * (t.log_softmax(-1) - logits.log_softmax(-1))).sum(-1).mean()
            value_term = m.vf_coef * F.mse_loss(values, teacher_values.detach()) if slim_critic else 0.0
            total = total + student_weight * (kl + value_term)
    total.backward()
    for n, p in rp.named_parameters():
        torch.testing.assert_close(got[n], p.grad, rtol=1e-4, atol=1e-7)
    assert get_width(policy) == 1.0  # back at the rollout width


def test_full_width_critic() -> None:
    """``slim_critic=False``: plain full-size critic layers, the same values at every width, a
    slimmable actor; kept through save/load; refused where the critic's features would slim."""
    m = USPPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, n_epochs=1, seed=1,
              policy_kwargs=dict(slim_critic=False))  # fmt: skip
    p = m.policy
    assert not p.critic_slims
    assert USPPO("MlpPolicy", "CartPole-v1", n_steps=64, policy_kwargs=dict(slim_critic=True)).policy.critic_slims
    # the default: full-size where the critic's features do not slim (MLPs), slimmable with usrl's CNNs
    assert USPPO("MlpPolicy", "CartPole-v1", n_steps=64).policy.slim_critic is False
    image = gym.spaces.Box(0, 255, (1, 36, 36), np.uint8)
    cnn = USActorCriticCnnPolicy(image, gym.spaces.Discrete(2), lambda _: 1e-3)
    assert cnn.slim_critic is True and cnn.critic_slims
    assert not slimmable_modules(p.mlp_extractor.value_net) and type(p.value_net) is torch.nn.Linear
    assert p.action_net.shape_at(0.25) == (16, 2)
    obs = torch.randn(5, 4)
    p.set_width(0.25)
    low_dist, low_values = p.distribution_and_values(obs)
    low_logits = low_dist.distribution.logits  # SB3 refills its Distribution object on the next forward
    p.set_width(1.0)
    full_dist, full_values = p.distribution_and_values(obs)
    torch.testing.assert_close(low_values, full_values)
    assert not torch.allclose(low_logits, full_dist.distribution.logits)
    m.learn(128)
    assert get_width(p) == 1.0
    with tempfile.TemporaryDirectory() as tmp:
        m.save(f"{tmp}/m")
        loaded = USPPO.load(f"{tmp}/m")
    assert loaded.policy.slim_critic is False and not loaded.policy.critic_slims
    with pytest.raises(ValueError, match="slim_critic=False needs a critic whose features do not slim"):
        USActorCriticCnnPolicy(image, gym.spaces.Discrete(2), lambda _: 1e-3, slim_critic=False)
    with pytest.raises(ValueError, match="slim_critic must be True, False or None"):
        USPPO("MlpPolicy", "CartPole-v1", policy_kwargs=dict(slim_critic="no"))


def test_ppo_rollout_teacher() -> None:
    """``distill_teacher="rollout"``: the students distil a frozen copy of the rollout's policy.
    With one epoch of one minibatch that copy equals the online full width (same update as
    ``"online"``); with more epochs the two differ; the copy is not saved with the model."""

    def trained(teacher: str, n_epochs: int) -> USPPO:
        m = USPPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, n_epochs=n_epochs, n_widths=3,
                  distill_teacher=teacher, seed=4)  # fmt: skip
        m.learn(128)
        return m

    for a, b in zip(trained("online", 1).policy.parameters(), trained("rollout", 1).policy.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    online, rollout = trained("online", 4), trained("rollout", 4)
    assert any(
        not torch.equal(a, b) for a, b in zip(online.policy.parameters(), rollout.policy.parameters(), strict=True)
    )
    teacher = rollout._rollout_teacher
    assert teacher.optimizer is None and not any(p.requires_grad for p in teacher.parameters())
    assert get_width(teacher) == 1.0 and "_rollout_teacher" in rollout._excluded_save_params()
    with pytest.raises(ValueError, match="distill_teacher"):
        USA2C("MlpPolicy", "CartPole-v1", distill_teacher="rollout")
    with pytest.raises(ValueError, match="student_weight"):
        USPPO("MlpPolicy", "CartPole-v1", student_weight=0)


def test_distillation_gradients_never_reach_the_teacher() -> None:
    m = USPPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=64)
    obs = torch.randn(8, 3)
    m.policy.set_width(1.0)
    teacher, _ = m.policy.distribution_and_values(obs)
    t = teacher.distribution  # SB3 reuses its Distribution object: keep the torch one before the next forward
    teacher_parts = detach_distribution(teacher)
    m.policy.set_width(0.25)
    student, _ = m.policy.distribution_and_values(obs)
    s = student.distribution
    assert s is not t
    loss = distill_loss(teacher_parts, student).mean()
    assert torch.autograd.grad(loss, t.loc, retain_graph=True, allow_unused=True) == (None,)
    (g,) = torch.autograd.grad(loss, s.loc, retain_graph=True)
    assert g.abs().sum() > 0
    # Gaussian actions: half the squared distance of the means, summed over action dimensions
    torch.testing.assert_close(distill_loss(teacher_parts, student), 0.5 * ((s.loc - t.loc) ** 2).sum(-1))
    # the shared log_std learns from the full width's own loss only
    assert torch.autograd.grad(loss, m.policy.log_std, allow_unused=True) == (None,)


def test_discrete_distillation_is_the_kl_to_the_teacher() -> None:
    m = USPPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64)
    obs = torch.randn(8, 4)
    m.policy.set_width(1.0)
    teacher_parts = detach_distribution(m.policy.distribution_and_values(obs)[0])
    m.policy.set_width(0.25)
    student = m.policy.distribution_and_values(obs)[0]
    p_t, p_s = teacher_parts[0].probs, student.distribution.probs
    closed = (p_t * (p_t.log() - p_s.log())).sum(-1)
    torch.testing.assert_close(distill_loss(teacher_parts, student), closed)


def test_continuous_actions_train_and_run_at_several_widths() -> None:
    m = USPPO("MlpPolicy", "Pendulum-v1", n_steps=128, batch_size=64, n_epochs=2, seed=0)
    m.learn(256)
    logged = set(m.logger.name_to_value)
    assert {"train/distill_kl", "train/std"} <= logged and "train/distill_value" not in logged  # full-size critic
    obs = np.stack([m.observation_space.sample() for _ in range(4)])
    means = {}
    for w in (0.25, 0.5, 0.8, 1.0):
        action, _ = m.predict(obs, deterministic=True, width=w)
        assert action.shape == (4, 1) and np.all(np.abs(action) <= 2.0)
        with torch.no_grad():
            m.policy.set_width(w)
            means[w] = m.policy.get_distribution(torch.as_tensor(obs)).distribution.loc
    m.policy.set_width(1.0)
    assert not torch.allclose(means[0.25], means[1.0])


def test_predict_bad_widths_and_bad_settings() -> None:
    m = USA2C("MlpPolicy", "CartPole-v1", seed=0)
    obs = np.zeros((3, 4), dtype=np.float32)
    for bad in (0.1, 1.5, float("nan"), "wide"):
        with pytest.raises(ValueError, match=r"\[0\.25, 1\.0\]"):
            m.predict(obs, width=bad)
        with pytest.raises(ValueError):
            m.set_width(bad)
    m.set_width(0.5)
    assert m.rollout_width == 0.5 and get_width(m.policy) == 0.5
    for kwargs in (
        {"n_widths": 0},
        {"distill": "mse"},
        {"distill_weight": -0.1},
        {"distill_warmup": 1.5},
        {"distill_warmup": True},
        {"teacher_guard": "kl"},
        {"rollout_width": 2.0},
    ):
        with pytest.raises(ValueError):
            USPPO("MlpPolicy", "CartPole-v1", **kwargs)
    with pytest.raises(ValueError, match="width range"):
        USPPO("MlpPolicy", "CartPole-v1", policy_kwargs={"width_range": (0.6, 0.3)})


@pytest.mark.parametrize("algo", [USA2C, USPPO])
def test_distill_warmup_ramps_the_distillation_weight(algo: type, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``distill_warmup=0.5`` the students' distillation weight rises linearly from 0 over
    the first half of training, then stays at ``distill_weight``; the value reaches the log."""
    import usrl.agents.actor_critic as ac

    used: list[float] = []
    real = ac.sandwich_step

    def spy(*args: object, **kwargs: object) -> object:
        used.append(kwargs["distill_weight"])  # type: ignore[arg-type]
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ac, "sandwich_step", spy)
    extra = {"batch_size": 64, "n_epochs": 1} if algo is USPPO else {}
    m = algo("MlpPolicy", "CartPole-v1", n_steps=64, distill_weight=0.8, distill_warmup=0.5, seed=0, **extra)
    m.learn(256)  # four rollouts: the update after each sees 1/4, 1/2, 3/4, all of training done
    assert sorted(set(used)) == pytest.approx([0.4, 0.8]) and used[0] == pytest.approx(0.4)
    assert m.logger.name_to_value["train/distill_weight"] == pytest.approx(0.8)  # the last update's
    assert m.us_settings()["distill_warmup"] == 0.5


def _flat(grads: Sequence[torch.Tensor | None], params: list[torch.Tensor]) -> torch.Tensor:
    """Per-parameter gradients as one vector (zeros where a gradient is None)."""
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for g, p in zip(grads, params, strict=True)])


def _flat_grad(t: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    """The gradient of ``t`` over ``params`` as one vector (zeros where it does not reach)."""
    return _flat(torch.autograd.grad(t, params, retain_graph=True, allow_unused=True), params)


@pytest.mark.parametrize("algo", [USA2C, USPPO])
def test_teacher_guard_keeps_the_students_from_lowering_the_full_widths_entropy(algo: type) -> None:
    """With ``teacher_guard="entropy"`` the students' gradient loses its component that would lower
    the full width's entropy: the guarded step moves the entropy no lower (to first order) than
    the full width's own gradient alone does, the log says how often it acted, and the setting is
    recorded and saved; without distillation there is nothing to guard."""
    extra = {"batch_size": 64, "n_epochs": 1} if algo is USPPO else {}
    kwargs = dict(n_steps=64, seed=0, teacher_guard="entropy", **extra)
    m = algo("MlpPolicy", "CartPole-v1", **kwargs)
    m.learn(128)
    assert 0.0 <= m.logger.name_to_value["train/guard_changed"] <= 1.0
    assert m.us_settings()["teacher_guard"] == "entropy"
    with tempfile.TemporaryDirectory() as tmp:
        m.save(f"{tmp}/m")
        assert algo.load(f"{tmp}/m").teacher_guard == "entropy"
    # one step by hand: the applied gradient against the full width's own
    data = next(m.rollout_buffer.get(batch_size=None))
    policy = m.policy
    params = [p for p in policy.parameters() if p.requires_grad]
    own = m._own_loss(data, data.advantages) if algo is USA2C else m._own_loss(data, data.advantages, 0.2, None)
    from usrl.nn import SandwichLog

    step, first = m._sandwich_loss(data.observations, m._actions(data), own, SandwichLog())
    entropy = first["teacher_entropy"]  # the full width's, kept before the other widths ran
    with torch.no_grad():
        m.policy.set_width(1.0)
        fresh = policy.get_distribution(data.observations).entropy().mean()
    torch.testing.assert_close(entropy.detach(), fresh)

    grad_h, g_first = _flat_grad(entropy, params), _flat_grad(step.groups[0], params)
    m.max_grad_norm = 1e9  # no clipping: compare directions
    m._step(step, first, defaultdict(list))
    applied = _flat([p.grad for p in params], params)
    assert float(-(applied - g_first) @ grad_h) >= -1e-6 * float(applied.norm() * grad_h.norm())
    assert (
        algo("MlpPolicy", "CartPole-v1", distill=None, **kwargs)
        .learn(128)
        .logger.name_to_value.get("train/guard_changed")
        is None
    )


@pytest.mark.parametrize(("algo", "env_id"), [(USA2C, "Pendulum-v1"), (USPPO, "CartPole-v1")])
def test_drift_guard_keeps_the_full_width_from_moving_away_from_the_students(algo: type, env_id: str) -> None:
    """With ``teacher_guard="drift"`` the guarded quantity is the full width's distribution outputs
    (Gaussian means, categorical log-probabilities) dotted with their distance from the students'
    mean outputs, and the students' applied gradient does not raise it to first order; Gaussian
    actions, which the entropy guard leaves alone, are guarded too."""
    extra = {"batch_size": 64, "n_epochs": 1} if algo is USPPO else {}
    m = algo("MlpPolicy", env_id, n_steps=64, seed=0, teacher_guard="drift", **extra)
    m.learn(128)
    assert 0.0 <= m.logger.name_to_value["train/guard_changed"] <= 1.0
    data = next(m.rollout_buffer.get(batch_size=None))
    policy = m.policy
    params = [p for p in policy.parameters() if p.requires_grad]
    own = m._own_loss(data, data.advantages) if algo is USA2C else m._own_loss(data, data.advantages, 0.2, None)
    from usrl.agents.ac_policies import distribution_outputs
    from usrl.nn import SandwichLog

    step, first = m._sandwich_loss(data.observations, m._actions(data), own, SandwichLog())
    with torch.no_grad():
        students = []
        for w in step.widths[1:]:
            m.policy.set_width(w.width)
            students.append(distribution_outputs(policy.get_distribution(data.observations)))
        m.policy.set_width(1.0)
        teacher = distribution_outputs(policy.get_distribution(data.observations))
    expected = (teacher * (teacher - torch.stack(students).mean(0))).sum(1).mean()
    torch.testing.assert_close(first["guard"].detach(), expected)
    assert teacher.shape[1] == (1 if env_id == "Pendulum-v1" else 2)

    grad_guard, g_first = _flat_grad(first["guard"], params), _flat_grad(step.groups[0], params)
    m.max_grad_norm = 1e9  # no clipping: compare directions
    m._step(step, first, defaultdict(list))
    applied = _flat([p.grad for p in params], params)
    # descending along the students' part must not raise the guard: (g_applied - g_first) . grad_guard >= 0
    assert float((applied - g_first) @ grad_guard) >= -1e-6 * float(applied.norm() * grad_guard.norm())


class _ConstantValuePolicy(ActorCriticPolicy):
    """A user's own SB3 policy (not slimmable), as in SB3's GAE tests."""

    def forward(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, ...]:
        actions, values, log_prob = super().forward(obs, deterministic)
        return actions, torch.zeros_like(values), log_prob


@pytest.mark.parametrize(("us_cls", "sb3_cls"), [(USPPO, PPO), (USA2C, A2C)])
def test_a_users_own_sb3_policy_trains_exactly_as_sb3(us_cls: type, sb3_cls: type) -> None:
    kwargs = dict(seed=1, n_steps=64)
    with pytest.warns(UserWarning, match="_ConstantValuePolicy is not slimmable"):
        us = us_cls(_ConstantValuePolicy, "CartPole-v1", **kwargs)
    us.learn(128)
    sb3 = sb3_cls(_ConstantValuePolicy, "CartPole-v1", **kwargs)
    sb3.learn(128)
    for a, b in zip(us.policy.parameters(), sb3.policy.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(TypeError, match="not slimmable"):
        us.set_width(0.5)
    with pytest.raises(TypeError, match="not slimmable"):
        us.predict(np.zeros((1, 4), dtype=np.float32), width=0.5)


@pytest.mark.parametrize("full_std", [True, False])
def test_gsde_at_every_width_uses_the_leading_rows_of_one_exploration_matrix(full_std: bool) -> None:
    m = USPPO("MlpPolicy", "Pendulum-v1", use_sde=True, n_steps=64, batch_size=32, n_epochs=1, seed=0,
              policy_kwargs=dict(full_std=full_std))  # fmt: skip
    m.learn(128)
    p = m.policy
    assert p.log_std.shape[0] == 64  # sized by the full-width latent, shared by all widths
    obs = torch.as_tensor(np.stack([m.observation_space.sample() for _ in range(5)]))
    p.reset_noise(1)  # one exploration matrix for the whole batch
    for w in (0.25, 0.6, 1.0):
        p.set_width(w)
        with torch.no_grad():
            latent = p.mlp_extractor.forward_actor(p.extract_features(obs))
            dist = p.get_distribution(obs)
            k = latent.shape[1]
            assert k == round(64 * w)
            std = p.action_dist.get_std(p.log_std)[:k]
            torch.testing.assert_close(dist.distribution.scale, torch.sqrt((latent**2) @ (std**2) + 1e-6))
            noise = dist.sample() - dist.distribution.mean
            torch.testing.assert_close(noise, latent @ p.action_dist.exploration_mat[:k])
        action, _ = m.predict(obs.numpy(), width=w)
        assert action.shape == (5, 1)


def test_save_load_round_trip_in_a_fresh_process(tmp_path: Path) -> None:
    m = USPPO(
        "MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, n_epochs=2, n_widths=3, distill_weight=0.6, seed=0,
        policy_kwargs={"width_range": (0.3, 0.9), "net_arch": {"pi": [32], "vf": [48, 16]}},
    )  # fmt: skip
    m.learn(128)
    path = tmp_path / "ppo.zip"
    m.save(path)
    obs = torch.linspace(-1, 1, 20).reshape(5, 4)
    expected = {}
    for w in (0.3, 0.55, 0.9):
        m.policy.set_width(w)
        with torch.no_grad():
            dist, values = m.policy.distribution_and_values(obs)
            expected[w] = [dist.distribution.logits.tolist(), values.tolist()]
    code = textwrap.dedent(
        f"""
        import json, torch
        torch.set_num_threads({torch.get_num_threads()})
        from usrl import USPPO
        m = USPPO.load({str(path)!r})
        out = {{"settings": [m.n_widths, m.distill, m.distill_weight, list(m.policy.width_range)],
                "generator": m.width_generator.get_state().tolist()}}
        obs = torch.linspace(-1, 1, 20).reshape(5, 4)
        for w in (0.3, 0.55, 0.9):
            m.policy.set_width(w)
            with torch.no_grad():
                dist, values = m.policy.distribution_and_values(obs)
                out[str(w)] = [dist.distribution.logits.tolist(), values.tolist()]
        print(json.dumps(out))
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["settings"] == [3, "kl", 0.6, [0.3, 0.9]]
    assert out["generator"] == m.width_generator.get_state().tolist()
    for w in (0.3, 0.55, 0.9):
        assert out[str(w)] == expected[w]


def test_drop_in_cnn_policy_in_plain_sb3_ppo_on_atari() -> None:
    import ale_py
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    gym.register_envs(ale_py)
    env = VecFrameStack(make_atari_env("PongNoFrameskip-v4", n_envs=2, seed=0), n_stack=4)
    model = PPO(USActorCriticCnnPolicy, env, n_steps=32, batch_size=32, n_epochs=1, seed=0)
    model.learn(64)
    assert model.policy.net_arch == []  # as SB3's CnnPolicy: heads on the 512 features
    obs = env.reset()
    for w in (0.25, 0.6, 1.0):
        model.policy.set_width(w)
        action, _ = model.predict(obs, deterministic=True)
        assert action.shape == (2,) and np.all((0 <= action) & (action < 6))
    assert model.policy.action_net.shape_at(0.25) == (128, 6)
    assert model.policy.features_extractor.linear[0].shape_at(0.25) == (16 * 49, 128)


def test_cli_trains_ppo_and_a2c_and_sweeps_them(tmp_path: Path) -> None:
    from usrl.sweep import main as sweep_main
    from usrl.train import main as train_main

    for algo in ("ppo", "a2c"):
        args = ["--algo", algo, "--env", "CartPole-v1", "-n", "1024", "--eval-freq", "512", "--eval-episodes", "2",
                "--save-freq", "512", "--log-folder", str(tmp_path / "logs"), "--verbose", "0"]  # fmt: skip
        assert train_main(args) == 0
        run = tmp_path / "logs" / algo / "CartPole-v1_1"
        for name in ("CartPole-v1.zip", "best_model.zip", "config.yml", "evaluations.csv", "checkpoints/latest.json"):
            assert (run / name).is_file(), name
        assert sweep_main([str(run), "--widths", "0.25", "1.0", "--episodes", "2"]) == 0
        rows = json.loads((run / "sweep" / "sweep.json").read_text())["rows"]
        # the actor path of the 64-64 MLP: 4*h + h*h + h*2 MACs (the critic is not counted)
        assert [r["macs"] for r in rows] == [4 * h + h * h + h * 2 for h in (16, 64)]
    assert train_main(["--algo", "ppo", "--env", "CartPole-v1", "--distill", "mse",
                       "--log-folder", str(tmp_path / "bad")]) == 2  # fmt: skip
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").rglob("*.zip"))


def test_students_are_averaged_by_default() -> None:
    """``student_weight=None``: ``1 / (n_widths - 1)``; a number is kept; US-DQN keeps summing."""
    from usrl import USDQN

    assert USPPO("MlpPolicy", "CartPole-v1", n_steps=64).student_weight == pytest.approx(1 / 3)
    assert USA2C("MlpPolicy", "CartPole-v1", n_widths=2).student_weight == 1.0
    assert USA2C("MlpPolicy", "CartPole-v1", n_widths=1).student_weight == 1.0
    assert USPPO("MlpPolicy", "CartPole-v1", n_steps=64, student_weight=1.0).student_weight == 1.0
    assert USDQN("MlpPolicy", "CartPole-v1", buffer_size=100).student_weight == 1.0


def test_clipped_apart_the_full_width_steps_as_if_alone() -> None:
    """``grad_clip="apart"`` (US-PPO's default): the full width's gradient is clipped by its own norm,
    so a full-size critic (taught by the full width only) gets exactly the one-width update's
    gradient whatever the students do; one clip over the sum (``"joint"``) shrinks it."""
    m = USA2C("MlpPolicy", "CartPole-v1", n_widths=3, n_steps=16, seed=0, max_grad_norm=0.05, grad_clip="apart")
    assert not m.policy.critic_slims
    policy = m.policy
    with torch.no_grad():  # a trained-looking actor: its widths disagree, so the students' KL is large
        policy.action_net.weight.add_(torch.randn_like(policy.action_net.weight))
    _collect(m, 16)
    before = {n: p.detach().clone() for n, p in policy.state_dict().items()}
    critic = [n for n, _ in policy.named_parameters() if n.startswith(("mlp_extractor.value_net", "value_net"))]
    actor = [n for n, _ in policy.named_parameters() if n.startswith(("mlp_extractor.policy_net", "action_net"))]

    def grads_after_train(n_widths: int, grad_clip: str) -> dict[str, torch.Tensor]:
        policy.load_state_dict(before)
        m.n_widths, m.grad_clip = n_widths, grad_clip
        m.train()
        return {n: p.grad.clone() for n, p in policy.named_parameters()}

    apart = grads_after_train(3, "apart")
    logged = dict(m.logger.name_to_value)
    assert logged["train/grad_norm_full_width"] > 0.05 and logged["train/grad_norm_students"] > 0
    alone = grads_after_train(1, "apart")
    joint = grads_after_train(3, "joint")
    joint_norm = m.logger.name_to_value["train/grad_norm"]  # one clip: one norm, of the sum
    assert joint_norm != pytest.approx(logged["train/grad_norm_full_width"], rel=1e-4)
    for n in critic:
        torch.testing.assert_close(apart[n], alone[n], rtol=1e-5, atol=1e-9, msg=n)
        # one clip over the sum rescales the full width's critic step by the students' share of the norm
        ratio = logged["train/grad_norm_full_width"] / joint_norm
        torch.testing.assert_close(joint[n], alone[n] * ratio, rtol=1e-4, atol=1e-9, msg=n)
    assert any(not torch.allclose(apart[n], alone[n]) for n in actor)  # the students still teach the actor
    assert USPPO("MlpPolicy", "CartPole-v1", n_steps=64).grad_clip == "apart"
    assert USA2C("MlpPolicy", "CartPole-v1").grad_clip == "joint"
    with pytest.raises(ValueError, match="grad_clip must be one of"):
        USPPO("MlpPolicy", "CartPole-v1", grad_clip="per-width")
