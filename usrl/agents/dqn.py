"""US-DQN: SB3's DQN trained with the sandwich rule and inplace distillation."""

from __future__ import annotations

import io
import math
import warnings
import zipfile
from pathlib import Path
from typing import Any, ClassVar

import torch as th
import torch.nn.functional as F
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from stable_baselines3.dqn import DQN

from usrl.agents.buffers import FrameStackReplayBuffer
from usrl.agents.common import SlimmableAlgorithmMixin
from usrl.agents.dqn_policies import USCnnPolicy, USDQNPolicy, USMlpPolicy, USMultiInputPolicy
from usrl.nn import SandwichLog, SandwichResult, get_distill_loss, kl_divergence, sandwich_step, width_control

DISTILL_MODES = ("mse", "huber", "kl", None)
TEACHERS = ("online", "target")


def _cat_obs(a: th.Tensor | dict[str, th.Tensor], b: th.Tensor | dict[str, th.Tensor]) -> Any:
    """Two observation batches as one (tensors, or dicts of tensors as from a Dict space)."""
    if isinstance(a, dict):
        return {k: th.cat([a[k], b[k]]) for k in a}  # type: ignore[index]
    return th.cat([a, b])  # type: ignore[list-item]


class USDQN(SlimmableAlgorithmMixin, DQN):
    """Universally slimmable DQN: one Q-network trained for every width in its range.

    Takes SB3 DQN's parameters, plus:

    :param n_widths: widths per gradient step (sandwich rule): the largest, the smallest and
        ``n_widths - 2`` uniform random ones. ``1`` trains the full width only, exactly as DQN.
    :param distill: how the other widths learn from the full width's detached Q-values of the
        same batch: ``"mse"``, ``"huber"``, ``"kl"`` (between ``softmax(Q / T)``), or ``None``
        (every width learns its own TD loss).
    :param distill_weight: in [0, 1]; the other widths' loss is
        ``w * distillation + (1 - w) * their own TD loss``.
    :param distill_warmup: fraction of training in [0, 1] over which the distillation weight
        rises linearly from 0 to ``distill_weight`` (``0``: no warm-up, the US-Nets recipe).
    :param distill_temperature: ``T`` for ``"kl"``.
    :param distill_teacher: which full-width Q-values the other widths distil: ``"online"``,
        the Q-network's own in the same forward pass (the US-Nets definition), or ``"target"``,
        the target network's (a copy of the Q-network refreshed every ``target_update_interval``
        steps). With ``"online"`` the distillation chases a teacher that every student step moves,
        like Q-learning without a target network; ``"target"`` holds it still between copies
        (measured: ``benchmarks/results/dqn_teacher.md``). It costs one more target forward.
    :param student_weight: > 0; each non-full width's loss is multiplied by it before the sum
        (``1 / (n_widths - 1)`` averages the students: they then weigh as much as the full width).
    :param rollout_width: width used to act while collecting experience (default: the top of
        the policy's ``width_range``).
    :param width_sampling: ``"sandwich"`` (above), or ``"random"``: all ``n_widths`` widths of
        a step drawn uniformly from the range, each on its own TD loss (there is no full-width
        teacher) — the "no sandwich rule" ablation of the US-Nets paper.
    :param double_q: Double DQN targets: the online network (full width) picks the next action,
        the target network values it. SB3's DQN has no such option; ``False`` is SB3's target.

    With ``replay_buffer_class=usrl.agents.FrameStackReplayBuffer`` (frames stored once) the
    n-step return settings (``n_steps``, ``gamma``) are passed to the buffer as SB3 does for
    its own ``NStepReplayBuffer``.

    The width range is a policy kwarg (``policy_kwargs=dict(width_range=(0.25, 1.0))``).
    Each step computes the TD targets once with the full-width target network, runs the widths
    on the same batch (the fixed-input stem once for all of them), sums their losses, then one
    backward, one gradient clip and one optimizer step (:func:`usrl.nn.sandwich_step`).
    ``train/loss`` is SB3's key, the full width's TD loss; the per-width keys of every usrl
    trainer are added (``train/loss_full_width``, ``train/loss_w<low>``,
    ``train/loss_random_widths``, ``train/distill_loss``; see the README).
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": USMlpPolicy,
        "CnnPolicy": USCnnPolicy,
        "MultiInputPolicy": USMultiInputPolicy,
    }
    policy: USDQNPolicy

    def __init__(
        self,
        policy: str | type[USDQNPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 1e-4,
        buffer_size: int = 1_000_000,
        learning_starts: int = 100,
        batch_size: int = 32,
        tau: float = 1.0,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 4,
        gradient_steps: int = 1,
        replay_buffer_class: Any = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        n_steps: int = 1,
        target_update_interval: int = 10000,
        exploration_fraction: float = 0.1,
        exploration_initial_eps: float = 1.0,
        exploration_final_eps: float = 0.05,
        max_grad_norm: float = 10,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        n_widths: int = 4,
        distill: str | None = "mse",
        distill_weight: float = 1.0,
        distill_warmup: float = 0.0,
        distill_temperature: float = 1.0,
        distill_teacher: str = "online",
        student_weight: float = 1.0,
        rollout_width: float | None = None,
        width_sampling: str = "sandwich",
        double_q: bool = False,
        _init_setup_model: bool = True,
    ) -> None:
        self._init_widths(n_widths, distill, DISTILL_MODES, distill_weight, rollout_width, width_sampling,
                          student_weight, distill_teacher, TEACHERS, distill_warmup=distill_warmup)  # fmt: skip
        if not (
            isinstance(distill_temperature, (int, float))
            and math.isfinite(distill_temperature)
            and distill_temperature > 0
        ):
            raise ValueError(f"distill_temperature must be > 0, got {distill_temperature!r}")
        self.distill_temperature = float(distill_temperature)
        if not isinstance(double_q, bool):
            raise ValueError(f"double_q must be True or False, got {double_q!r}")
        self.double_q = double_q
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            buffer_size=buffer_size,
            learning_starts=learning_starts,
            batch_size=batch_size,
            tau=tau,
            gamma=gamma,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            optimize_memory_usage=optimize_memory_usage,
            n_steps=n_steps,
            target_update_interval=target_update_interval,
            exploration_fraction=exploration_fraction,
            exploration_initial_eps=exploration_initial_eps,
            exploration_final_eps=exploration_final_eps,
            max_grad_norm=max_grad_norm,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
        )
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        frame_buffer = isinstance(self.replay_buffer_class, type) and issubclass(
            self.replay_buffer_class, FrameStackReplayBuffer
        )
        if frame_buffer and self.replay_buffer is None:
            self.replay_buffer_kwargs = {"n_steps": self.n_steps, "gamma": self.gamma, **self.replay_buffer_kwargs}
        with warnings.catch_warnings():
            # SB3 warns that n_steps is ignored whenever a buffer class is set, also when the buffer
            # takes it: ours, or SB3's NStepReplayBuffer of a loaded model (its kwargs hold n_steps)
            if frame_buffer or self.replay_buffer_kwargs.get("n_steps") == self.n_steps:
                warnings.filterwarnings("ignore", message=r"`n_steps=\d+` is ignored")
            super()._setup_model()
        self._setup_widths(USDQNPolicy)
        if self.double_q and not self.slimmable:
            raise ValueError("double_q=True needs a usrl Q-network policy (USDQNPolicy or a subclass)")

    def save_acting(self, path: str | Path, dtype: th.dtype = th.float16) -> None:
        """Save a small zip for acting, sweeping and watching: the Q-network's weights only (in
        ``dtype``), no target network, no optimizer state. ``USDQN.load`` accepts it, rebuilds the
        target network as a copy of the Q-network and starts a fresh optimizer (with a warning)."""
        buf = io.BytesIO()
        self.save(buf)
        weights = {
            k: (v.to(dtype) if v.is_floating_point() else v)
            for k, v in self.policy.state_dict().items()
            if not k.startswith("q_net_target.")
        }
        policy_bytes = io.BytesIO()
        th.save(weights, policy_bytes)
        buf.seek(0)
        with zipfile.ZipFile(buf) as full, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
            for name in full.namelist():
                if name == "policy.optimizer.pth":
                    continue
                out.writestr(name, policy_bytes.getvalue() if name == "policy.pth" else full.read(name))

    def set_parameters(
        self, load_path_or_dict: str | dict[str, Any], exact_match: bool = True, device: th.device | str = "auto"
    ) -> None:
        """SB3's ``set_parameters``; also takes the acting-only weights of :meth:`save_acting`."""
        if isinstance(load_path_or_dict, dict):
            params = load_path_or_dict
        else:
            _, loaded, _ = load_from_zip_file(load_path_or_dict, device=device, load_data=False)
            params = loaded or {}
        policy: dict[str, th.Tensor] = params.get("policy", {})
        if policy and not any(k.startswith("q_net_target.") for k in policy):
            warnings.warn(
                "acting-only model (no target network, no optimizer state): the target network is a copy of "
                "the Q-network and the optimizer starts fresh",
                stacklevel=2,
            )
            dtype = next(iter(self.policy.parameters())).dtype
            full = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in policy.items()}
            full.update(
                {"q_net_target." + k[len("q_net.") :]: v.clone() for k, v in full.items() if k.startswith("q_net.")}
            )
            # SB3 annotates a flat TensorDict but takes {object name: state_dict}, as here
            super().set_parameters({"policy": full}, exact_match=False, device=device)  # type: ignore[dict-item]
            self.policy.load_state_dict(full, strict=True)  # every weight is there: fail loudly otherwise
            return
        super().set_parameters(params, exact_match=exact_match, device=device)

    def _distill(self, q_all: th.Tensor, teacher: th.Tensor) -> th.Tensor:
        """A non-full width's distillation loss against the full width's Q-values."""
        assert self.distill is not None
        if self.distill == "kl":
            return kl_divergence(q_all, teacher, self.distill_temperature)
        return get_distill_loss(self.distill)(q_all, teacher)

    def _sandwich(
        self,
        widths: list[float],
        obs: th.Tensor | dict[str, th.Tensor],
        actions: th.Tensor,
        td_targets: th.Tensor,
        teacher_q: th.Tensor | None,
    ) -> SandwichResult[th.Tensor]:
        """The TD loss (Huber) of the Q-network at each width, with inplace distillation."""
        q_net = self.q_net
        return sandwich_step(
            q_net,
            widths,
            forward=lambda _learns_own: q_net.q_net(q_net.features_extractor(obs)),
            own_loss=lambda q_all, _first: F.smooth_l1_loss(th.gather(q_all, 1, actions), td_targets),
            distill=None if self.distill is None else self._distill,
            fixed_teacher=teacher_q,
            distill_weight=self._distill_weight_now(),
            student_weight=self.student_weight,
            sandwich=self.width_sampling == "sandwich",
        )

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        """DQN's TD update at the sandwich widths (SB3's own update for a non-slimmable policy)."""
        if not self.slimmable:
            return super().train(gradient_steps, batch_size)
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        control = width_control(self.policy)
        high = control.high
        q_net, q_target = self.q_net, self.q_net_target
        sandwich = self.width_sampling == "sandwich"
        target_teacher = self.distill_teacher == "target" and sandwich and self.distill is not None

        log = SandwichLog()
        try:
            for _ in range(gradient_steps):
                replay_data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
                discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma
                widths = self._step_widths(control.low, high)

                teacher_q = None
                with th.no_grad():
                    control.width = high
                    if target_teacher:  # one target forward for the TD targets and the teacher
                        both = q_target(_cat_obs(replay_data.next_observations, replay_data.observations))
                        next_q_all, teacher_q = both.split(len(replay_data.actions))
                    else:
                        next_q_all = q_target(replay_data.next_observations)
                    if self.double_q:
                        next_actions = q_net(replay_data.next_observations).argmax(dim=1, keepdim=True)
                        next_q_values = next_q_all.gather(1, next_actions)
                    else:
                        next_q_values = next_q_all.max(dim=1)[0].reshape(-1, 1)
                    target_q_values = replay_data.rewards + (1 - replay_data.dones) * discounts * next_q_values

                obs = preprocess_obs(
                    replay_data.observations, self.observation_space, normalize_images=q_net.normalize_images
                )
                step = self._sandwich(widths, obs, replay_data.actions.long(), target_q_values, teacher_q)
                log.add(step)
                self._apply_gradients(step, self.max_grad_norm)
        finally:
            self._restore_rollout_width()

        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        means = log.means()
        self.logger.record("train/loss", means.get("train/loss_full_width", means.get("train/loss_random_widths")))
        for key, value in means.items():
            self.logger.record(key, value)
        self._record_distill_weight()
