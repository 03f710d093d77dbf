"""US-PPO and US-A2C: SB3's PPO and A2C trained with the sandwich rule and inplace distillation."""

from __future__ import annotations

import copy
import warnings
from collections import defaultdict
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch as th
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, RolloutBufferSamples, Schedule
from stable_baselines3.common.utils import explained_variance

from usrl.agents.ac_policies import (
    USActorCriticCnnPolicy,
    USActorCriticPolicy,
    USMultiInputActorCriticPolicy,
    detach_distribution,
    distill_loss,
    distribution_outputs,
)
from usrl.agents.common import SlimmableAlgorithmMixin
from usrl.nn import SandwichLog, SandwichResult, sandwich_step, width_control
from usrl.nn.sandwich import DistillResult

DISTILL_MODES = ("kl", None)
TEACHER_GUARDS = ("entropy", "drift", None)
TEACHER_ENTROPY = "teacher_entropy"  # the first width's mean entropy among its own loss's parts
GUARD = "guard"  # the quantity of the full width that the students' step must not raise

# (values, log_prob, entropy) of one width -> (the algorithm's loss, its named parts); values is
# None for a width that does not learn the critic (a full-width critic learns once per minibatch)
OwnLoss = Callable[[th.Tensor | None, th.Tensor, th.Tensor | None], tuple[th.Tensor, dict[str, th.Tensor]]]
# the full width's detached action distribution (one per action part) and values (None: no
# value to distil, the critic does not depend on the width)
Teacher = tuple[list[th.distributions.Distribution], th.Tensor | None]


class USActorCriticMixin(SlimmableAlgorithmMixin):
    """The sandwich update shared by :class:`USPPO` and :class:`USA2C`.

    For one minibatch, each sandwich width runs the actor. The full width (first) learns the
    algorithm's own loss; with ``distill="kl"`` every other width learns ``KL(full-width action
    distribution || its own)`` against the full width's detached output (for Gaussian actions
    the KL at unit scale, half the squared distance of the means: see :func:`distill_loss`),
    mixed with its own loss by ``distill_weight``. A full-size critic (the policy's
    ``slim_critic=False``, the default for MLP policies) runs once per minibatch and learns
    from the first width's value loss only; a slimmable critic runs at every width, and the
    other widths also distil the full width's value (``vf_coef * MSE``). With ``distill=None``
    or ``width_sampling="random"`` every width learns the algorithm's own loss. The losses are
    summed (the non-full widths' times ``student_weight``) and clipped (``grad_clip``: the full
    width's gradient apart from the others', or one clip over the sum), then one optimizer step.
    """

    policy: USActorCriticPolicy
    teacher_guard: str | None
    vf_coef: float
    max_grad_norm: float
    rollout_buffer: RolloutBuffer
    action_space: spaces.Space
    logger: Any

    def _setup_model(self) -> None:
        super()._setup_model()  # type: ignore[misc]
        self._setup_widths(USActorCriticPolicy)

    def _maybe_recommend_cpu(self, mlp_class_name: str = "ActorCriticPolicy") -> None:
        """SB3's advice to run MLP policies on the CPU, given for usrl's MLP policy too."""
        if self.device != th.device("cpu") and self.policy_class is USActorCriticPolicy:  # type: ignore[attr-defined]
            sb3_name = next(c.__name__ for c in type(self).__mro__ if c.__module__.startswith("stable_baselines3."))
            warnings.warn(
                f"You are trying to run {sb3_name} on the GPU (as {type(self).__name__}), but it is primarily "
                "intended to run on the CPU when not using a CNN policy (you are using an MLP policy). See "
                "https://github.com/DLR-RM/stable-baselines3/issues/1245. Pass device='cpu' to use the CPU.",
                UserWarning,
                stacklevel=2,
            )

    def _actions(self, data: RolloutBufferSamples) -> th.Tensor:
        if isinstance(self.action_space, spaces.Discrete):
            return data.actions.long().flatten()
        return data.actions

    def _sandwich_loss(
        self, observations: th.Tensor, actions: th.Tensor, own_loss: OwnLoss, log: SandwichLog
    ) -> tuple[SandwichResult[Any], dict[str, th.Tensor]]:
        """The sandwich step of one minibatch over the step's widths (:func:`usrl.nn.sandwich_step`:
        its summed loss, split into the full width's and the others'), and the named parts of the
        first width's own loss (with its mean policy entropy under ``TEACHER_ENTROPY``, and under
        ``GUARD`` the quantity ``teacher_guard`` keeps the students' gradient from raising).

        A critic that does not depend on the width (``slim_critic=False``) runs once, and its
        value loss counts once, in the first width's own loss; the other widths then learn
        only their policy terms, and distil only the action distribution.
        """
        first: dict[str, th.Tensor] = {}
        policy = self.policy
        critic_slims = policy.critic_slims
        guard = self.teacher_guard if self.distill is not None and self.width_sampling == "sandwich" else None
        teacher_out: list[th.Tensor] = []  # the drift guard's: the first width's distribution outputs
        students_out: list[th.Tensor] = []  # and the other widths', detached
        values_once = None if critic_slims else policy.predict_values(observations).flatten()

        def forward(_learns_own: bool) -> tuple[Distribution, th.Tensor | None, th.Tensor]:
            if critic_slims:
                dist, values = policy.distribution_and_values(observations)
            else:
                dist, values = policy.get_distribution(observations), None
            return dist, values, dist.log_prob(actions)

        def width_own_loss(out: tuple[Distribution, th.Tensor | None, th.Tensor], is_first: bool) -> th.Tensor:
            dist, values, log_prob = out
            entropy = dist.entropy()
            loss, parts = own_loss(values_once if is_first and values is None else values, log_prob, entropy)
            if is_first:
                first.update(parts)
                if entropy is not None:  # None: a squashed Gaussian (gSDE with squash_output), no closed form
                    # kept now: the policy's distribution object is refilled by the next width's forward
                    first[TEACHER_ENTROPY] = entropy.mean()
                if guard == "drift":
                    teacher_out.append(distribution_outputs(dist))
            return loss

        def distill(out: tuple[Distribution, th.Tensor | None, th.Tensor], teacher: Teacher) -> DistillResult:
            if guard == "drift":
                students_out.append(distribution_outputs(out[0]).detach())
            kl = distill_loss(teacher[0], out[0]).mean()
            if out[1] is None or teacher[1] is None:
                return kl, {"kl": kl}
            value_mse = F.mse_loss(out[1], teacher[1])
            return kl + self.vf_coef * value_mse, {"kl": kl, "value": value_mse}

        control = width_control(policy)
        sandwich = self.width_sampling == "sandwich"
        fixed_teacher: Teacher | None = None
        if sandwich and self.distill is not None and self.distill_teacher == "rollout" and self.n_widths > 1:
            with th.no_grad():
                if critic_slims:
                    dist, rollout_values = self._rollout_teacher.distribution_and_values(observations)
                else:
                    dist, rollout_values = self._rollout_teacher.get_distribution(observations), None
            fixed_teacher = (detach_distribution(dist), rollout_values)
        step = sandwich_step(
            policy,
            self._step_widths(control.low, control.high),
            forward,
            width_own_loss,
            None if self.distill is None else distill,
            teacher=lambda out: (detach_distribution(out[0]), None if out[1] is None else out[1].detach()),
            fixed_teacher=fixed_teacher,
            distill_weight=self._distill_weight_now(),
            student_weight=self.student_weight,
            sandwich=sandwich,
        )
        log.add(step)
        if guard == "entropy" and TEACHER_ENTROPY in first:
            first[GUARD] = -first[TEACHER_ENTROPY]
        elif teacher_out and students_out:
            # raised, to first order, by the full width's outputs moving away from the students' mean
            apart = teacher_out[0].detach() - th.stack(students_out).mean(0)
            first[GUARD] = (teacher_out[0] * apart).sum(1).mean()
        return step, first

    def _step(self, step: SandwichResult[Any], first: dict[str, th.Tensor], norms: dict[str, list[float]]) -> None:
        """One optimizer step on a sandwich step's losses (``first``: the first width's named parts,
        from :meth:`_sandwich_loss`), keeping the gradient norms for the log."""
        guard = first.get(GUARD)
        measured, changed = self._apply_gradients(step, self.max_grad_norm, guard)
        if guard is not None:
            norms["guard_changed"].append(float(changed))
        keys = ("grad_norm",) if len(measured) == 1 else ("grad_norm_full_width", "grad_norm_students")
        for key, norm in zip(keys, measured, strict=True):
            norms[key].append(norm)

    def _refresh_rollout_teacher(self) -> None:
        """With ``distill_teacher="rollout"``: a frozen full-width copy of the policy as it
        collected the rollout, the teacher of every minibatch of this update."""
        if self.distill_teacher != "rollout" or self.distill is None or self.width_sampling != "sandwich":
            return
        if self.n_widths < 2:  # no students to teach
            return
        teacher = getattr(self, "_rollout_teacher", None)
        if teacher is None:
            optimizer, self.policy.optimizer = self.policy.optimizer, None  # type: ignore[assignment]
            try:
                teacher = copy.deepcopy(self.policy)
            finally:
                self.policy.optimizer = optimizer
            teacher.requires_grad_(False)
            self._rollout_teacher = teacher
        teacher.load_state_dict(self.policy.state_dict())
        teacher.set_training_mode(False)
        control = width_control(teacher)
        control.width = control.high

    def us_settings(self) -> dict[str, Any]:
        """The sandwich settings (:meth:`SlimmableAlgorithmMixin.us_settings`) and ``teacher_guard``."""
        return {**super().us_settings(), "teacher_guard": self.teacher_guard}

    def _init_guard(self, teacher_guard: str | None) -> None:
        if teacher_guard not in TEACHER_GUARDS:
            raise ValueError(f"teacher_guard must be one of {TEACHER_GUARDS}, got {teacher_guard!r}")
        self.teacher_guard = teacher_guard

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_rollout_teacher"]  # type: ignore[misc]

    def _record_width_logs(self, log: SandwichLog, norms: dict[str, list[float]]) -> None:
        for key, value in log.means().items():
            self.logger.record(key, value)
        for key, values in norms.items():
            self.logger.record(f"train/{key}", float(np.mean(values)))
        self._record_distill_weight()

    def _record_common(self) -> None:
        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())
        self.logger.record("train/explained_variance", explained_var)
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")  # type: ignore[attr-defined]


_US_DOC = """
    US settings (besides SB3's parameters):

    :param n_widths: widths per minibatch (sandwich rule): the largest, the smallest and
        ``n_widths - 2`` uniform random ones. ``1`` trains the full width only, exactly as SB3.
    :param distill: ``"kl"``: the other widths learn the full width's detached action
        distribution (KL; for Gaussian actions half the squared distance of the means) and
        value (MSE, weighted by ``vf_coef``); ``None``: every width
        learns the algorithm's own loss.
    :param distill_weight: in [0, 1]; the other widths' loss is
        ``w * distillation + (1 - w) * their own loss``.
    :param distill_warmup: fraction of training in [0, 1] over which ``w`` rises linearly from 0
        to ``distill_weight``: the students learn their own loss while the full width, their
        teacher, is still near its initialisation. ``0`` (the default): no warm-up.
    :param student_weight: > 0; each non-full width's loss is multiplied by it before the sum.
        ``None`` (the default): ``1 / (n_widths - 1)``, the students averaged, so that together
        they weigh as much as the full width (``1.0`` sums them, as the US-Nets paper does; on
        CartPole PPO that slowed the full width, ``benchmarks/results/ac_gradients_cartpole.md``).
    :param distill_teacher: ``"online"``: the full width's outputs in the same forward pass (the
        US-Nets definition); ``"rollout"`` (USPPO only): a frozen copy of the full width as it
        collected the rollout, the same teacher for every epoch and minibatch of the update.
    :param grad_clip: ``"apart"`` (USPPO's default): the full width's gradient is clipped by its
        own norm to ``max_grad_norm``, exactly as SB3 clips a one-width update, and the other
        widths' gradient by the same factor, or more where its own norm would stay over
        ``max_grad_norm`` (:func:`usrl.nn.backward_clipped`); the students never shrink the full
        width's step. ``"joint"`` (USA2C's default): one clip over the summed gradient (the
        US-Nets recipe). Measured in ``benchmarks/results/`` (``..._grad_clip-apart_...``): apart
        lifts US-PPO to its individual nets on CartPole and Acrobot, but slows US-A2C, whose
        students' KL then weighs more against its own one-step update.
    :param teacher_guard: ``"entropy"``: the other widths' gradient loses the component that
        would lower the full width's policy entropy (:func:`usrl.nn.backward_guarded`). The
        students share their weights with the full width, so pulling their output toward its
        output also pushes its output further the same way: it sharpens the teacher, which
        collapsed US-A2C's entropy early on SB3's identity tasks
        (``benchmarks/results/ac_sharpening.md``). ``"drift"``: the other widths' gradient loses
        the component that would move the full width's distribution outputs (action means,
        log-probabilities, logits: :func:`~usrl.agents.ac_policies.distribution_outputs`) further
        from the students' mean outputs, the same pull seen on any action distribution, Gaussian
        ones included (whose entropy, the shared ``log_std``, the students never move). ``"drift"``
        is the default of both: on SB3's identity tests USA2C passes 73 runs of 80 with it where
        SB3's A2C passes 57 and the unguarded USA2C 33, USPPO 66 as SB3's PPO (unguarded 61); on
        Acrobot A2C it never fails to learn where the unguarded net fails in 5 seeds of 20, and
        on Pendulum PPO it never collapses where the unguarded net does in 1 seed of 10, at a
        little return in most others (``benchmarks/results/sb3_identity_*``,
        ``acrobot_a2c_sampled_*``, ``compare/pendulum_ppo_*``). ``None``: no guard. Logs
        ``train/guard_changed``, the fraction of steps whose students' gradient it changed.
    :param rollout_width: width used to collect rollouts (default: the top of the range).
    :param width_sampling: ``"sandwich"``, or ``"random"`` (all widths of a step uniform
        random, each on its own loss: the "no sandwich rule" ablation).

    The width range is a policy kwarg (``policy_kwargs=dict(width_range=(0.25, 1.0))``), and so is
    ``slim_critic`` (``None``, the default: a full-size critic where its features do not slim,
    learning once per minibatch from the first width's value loss; ``True``: the US-Nets critic).
    gSDE (``use_sde=True``) works at every width: one exploration matrix, whose leading rows a
    narrower latent uses.
    Logs usrl's per-width keys (``train/loss_full_width``, ``train/loss_w<low>``,
    ``train/loss_random_widths``, ``train/distill_loss`` with its parts ``train/distill_kl``
    and, with a slimmable critic, ``train/distill_value``; see the README) besides SB3's own
    entries (computed at the first width of each step: the full width under the sandwich rule).
"""


class USPPO(USActorCriticMixin, PPO):
    __doc__ = "Universally slimmable PPO: one actor-critic trained for every width in its range.\n" + _US_DOC
    policy: USActorCriticPolicy

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": USActorCriticPolicy,
        "CnnPolicy": USActorCriticCnnPolicy,
        "MultiInputPolicy": USMultiInputActorCriticPolicy,
    }

    def __init__(
        self,
        policy: str | type[USActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 2048,
        batch_size: int = 64,
        n_epochs: int = 10,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_range: float | Schedule = 0.2,
        clip_range_vf: float | Schedule | None = None,
        normalize_advantage: bool = True,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        target_kl: float | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        n_widths: int = 4,
        distill: str | None = "kl",
        distill_weight: float = 1.0,
        distill_warmup: float = 0.0,
        rollout_width: float | None = None,
        width_sampling: str = "sandwich",
        student_weight: float | None = None,
        distill_teacher: str = "online",
        grad_clip: str = "apart",
        teacher_guard: str | None = "drift",
        _init_setup_model: bool = True,
    ) -> None:
        self._init_guard(teacher_guard)
        self._init_widths(n_widths, distill, DISTILL_MODES, distill_weight, rollout_width, width_sampling,
                          student_weight, distill_teacher, ("online", "rollout"), grad_clip, distill_warmup)  # fmt: skip
        super().__init__(
            policy, env, learning_rate=learning_rate, n_steps=n_steps, batch_size=batch_size, n_epochs=n_epochs,
            gamma=gamma, gae_lambda=gae_lambda, clip_range=clip_range, clip_range_vf=clip_range_vf,
            normalize_advantage=normalize_advantage, ent_coef=ent_coef, vf_coef=vf_coef, max_grad_norm=max_grad_norm,
            use_sde=use_sde, sde_sample_freq=sde_sample_freq, rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            target_kl=target_kl, stats_window_size=stats_window_size, tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs, verbose=verbose, seed=seed, device=device, _init_setup_model=False,
        )  # fmt: skip
        if _init_setup_model:
            self._setup_model()

    def _own_loss(
        self, data: RolloutBufferSamples, advantages: th.Tensor, clip_range: float, clip_range_vf: float | None
    ) -> OwnLoss:
        """PPO's loss of one minibatch at one width: clipped surrogate, entropy and value terms
        (no value term when the width's ``values`` is None)."""

        def own_loss(
            values: th.Tensor | None, log_prob: th.Tensor, entropy: th.Tensor | None
        ) -> tuple[th.Tensor, dict[str, th.Tensor]]:
            ratio = th.exp(log_prob - data.old_log_prob)
            policy_loss = -th.min(
                advantages * ratio, advantages * th.clamp(ratio, 1 - clip_range, 1 + clip_range)
            ).mean()
            entropy_loss = -th.mean(-log_prob) if entropy is None else -th.mean(entropy)
            total = policy_loss + self.ent_coef * entropy_loss
            parts = {"policy_loss": policy_loss, "entropy_loss": entropy_loss, "ratio": ratio, "log_prob": log_prob}
            if values is not None:
                if clip_range_vf is not None:
                    values = data.old_values + th.clamp(values - data.old_values, -clip_range_vf, clip_range_vf)
                parts["value_loss"] = F.mse_loss(data.returns, values)
                total = total + self.vf_coef * parts["value_loss"]
            return total, {"loss": total, **parts}

        return own_loss

    def train(self) -> None:
        """PPO's update (clipped surrogate, value and entropy losses, target-KL early stop) at the sandwich widths."""
        if not self.slimmable:
            return super().train()
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        clip_range = self.clip_range(self._current_progress_remaining)  # type: ignore[operator]
        clip_range_vf = None
        if self.clip_range_vf is not None:
            clip_range_vf = self.clip_range_vf(self._current_progress_remaining)  # type: ignore[operator]
        stats: dict[str, list[float]] = defaultdict(list)
        log = SandwichLog()
        norms: dict[str, list[float]] = defaultdict(list)
        approx_kl_divs: list[float] = []
        self._refresh_rollout_teacher()
        loss = th.zeros(())
        continue_training = True
        try:
            for epoch in range(self.n_epochs):
                approx_kl_divs = []
                for data in self.rollout_buffer.get(self.batch_size):
                    advantages = data.advantages
                    if self.normalize_advantage and len(advantages) > 1:
                        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

                    own_loss = self._own_loss(data, advantages, clip_range, clip_range_vf)
                    step, first = self._sandwich_loss(data.observations, self._actions(data), own_loss, log)
                    loss = first["loss"]
                    stats["pg"].append(first["policy_loss"].item())
                    stats["value"].append(first["value_loss"].item())
                    stats["entropy"].append(first["entropy_loss"].item())
                    stats["clip"].append(th.mean((th.abs(first["ratio"] - 1) > clip_range).float()).item())
                    with th.no_grad():
                        log_ratio = first["log_prob"] - data.old_log_prob
                        approx_kl_div = th.mean((th.exp(log_ratio) - 1) - log_ratio).item()
                    approx_kl_divs.append(approx_kl_div)
                    if self.target_kl is not None and approx_kl_div > 1.5 * self.target_kl:
                        continue_training = False
                        if self.verbose >= 1:
                            print(f"Early stopping at step {epoch} due to reaching max kl: {approx_kl_div:.2f}")
                        break
                    self._step(step, first, norms)
                self._n_updates += 1
                if not continue_training:
                    break
        finally:
            self._restore_rollout_width()

        self.logger.record("train/entropy_loss", np.mean(stats["entropy"]))
        self.logger.record("train/policy_gradient_loss", np.mean(stats["pg"]))
        self.logger.record("train/value_loss", np.mean(stats["value"]))
        self.logger.record("train/approx_kl", np.mean(approx_kl_divs))
        self.logger.record("train/clip_fraction", np.mean(stats["clip"]))
        self.logger.record("train/loss", loss.item())
        self.logger.record("train/clip_range", clip_range)
        if clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)
        self._record_common()
        self._record_width_logs(log, norms)


class USA2C(USActorCriticMixin, A2C):
    __doc__ = "Universally slimmable A2C: one actor-critic trained for every width in its range.\n" + _US_DOC
    policy: USActorCriticPolicy

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": USActorCriticPolicy,
        "CnnPolicy": USActorCriticCnnPolicy,
        "MultiInputPolicy": USMultiInputActorCriticPolicy,
    }

    def __init__(
        self,
        policy: str | type[USActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 7e-4,
        n_steps: int = 5,
        gamma: float = 0.99,
        gae_lambda: float = 1.0,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        rms_prop_eps: float = 1e-5,
        use_rms_prop: bool = True,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        normalize_advantage: bool = False,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        n_widths: int = 4,
        distill: str | None = "kl",
        distill_weight: float = 1.0,
        distill_warmup: float = 0.0,
        rollout_width: float | None = None,
        width_sampling: str = "sandwich",
        student_weight: float | None = None,
        distill_teacher: str = "online",
        grad_clip: str = "joint",
        teacher_guard: str | None = "drift",
        _init_setup_model: bool = True,
    ) -> None:
        self._init_guard(teacher_guard)
        # A2C makes one step per rollout: its online teacher is the rollout's policy already
        self._init_widths(n_widths, distill, DISTILL_MODES, distill_weight, rollout_width, width_sampling,
                          student_weight, distill_teacher, ("online",), grad_clip, distill_warmup)  # fmt: skip
        super().__init__(
            policy, env, learning_rate=learning_rate, n_steps=n_steps, gamma=gamma, gae_lambda=gae_lambda,
            ent_coef=ent_coef, vf_coef=vf_coef, max_grad_norm=max_grad_norm, rms_prop_eps=rms_prop_eps,
            use_rms_prop=use_rms_prop, use_sde=use_sde, sde_sample_freq=sde_sample_freq,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs, normalize_advantage=normalize_advantage,
            stats_window_size=stats_window_size, tensorboard_log=tensorboard_log, policy_kwargs=policy_kwargs,
            verbose=verbose, seed=seed, device=device, _init_setup_model=False,
        )  # fmt: skip
        if _init_setup_model:
            self._setup_model()

    def _own_loss(self, data: RolloutBufferSamples, advantages: th.Tensor) -> OwnLoss:
        """A2C's loss of the rollout at one width: policy gradient, entropy and value terms (no
        value term when the width's ``values`` is None)."""

        def own_loss(
            values: th.Tensor | None, log_prob: th.Tensor, entropy: th.Tensor | None
        ) -> tuple[th.Tensor, dict[str, th.Tensor]]:
            policy_loss = -(advantages * log_prob).mean()
            entropy_loss = -th.mean(-log_prob) if entropy is None else -th.mean(entropy)
            total = policy_loss + self.ent_coef * entropy_loss
            parts = {"policy_loss": policy_loss, "entropy_loss": entropy_loss}
            if values is not None:
                parts["value_loss"] = F.mse_loss(data.returns, values)
                total = total + self.vf_coef * parts["value_loss"]
            return total, parts

        return own_loss

    def train(self) -> None:
        """A2C's update (one step on the whole rollout) at the sandwich widths."""
        if not self.slimmable:
            return super().train()
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        log = SandwichLog()
        norms: dict[str, list[float]] = defaultdict(list)
        first: dict[str, th.Tensor] = {}
        try:
            for data in self.rollout_buffer.get(batch_size=None):
                advantages = data.advantages
                if self.normalize_advantage:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

                own_loss = self._own_loss(data, advantages)
                step, first = self._sandwich_loss(data.observations, self._actions(data), own_loss, log)
                self._step(step, first, norms)
        finally:
            self._restore_rollout_width()

        self._n_updates += 1
        self.logger.record("train/entropy_loss", first["entropy_loss"].item())
        self.logger.record("train/policy_loss", first["policy_loss"].item())
        self.logger.record("train/value_loss", first["value_loss"].item())
        self._record_common()
        self._record_width_logs(log, norms)
