"""Universally slimmable actor-critic policies: drop-in replacements for SB3's ActorCriticPolicy."""

from __future__ import annotations

from typing import Any

import torch as th
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.distributions import Distribution, StateDependentNoiseDistribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor, create_mlp
from stable_baselines3.common.type_aliases import Schedule
from torch import nn
from torch.distributions import Bernoulli, Categorical, Normal, kl_divergence

from usrl.agents.common import SlimmablePolicyMixin, check_divisor, extractor_kwargs
from usrl.agents.torch_layers import USCombinedExtractor, USNatureCNN, create_us_mlp, is_slimmable_extractor
from usrl.nn import DEFAULT_WIDTH_RANGE, USConv2d, USLinear, check_width_range, make_slimmable, slimmable_modules


class USMlpExtractor(nn.Module):
    """SB3's ``MlpExtractor`` with slimmable hidden layers: the policy and value latents follow the width.

    ``net_arch`` as SB3's: a list (the same hidden sizes for two separate networks) or
    ``dict(pi=[...], vf=[...])``. ``slim_input``: whether the features slim (after a
    slimmable extractor). ``slim_critic=False`` builds the value network of plain layers,
    always at full size (its input must not slim). ``latent_pi_slims`` / ``latent_vf_slims``
    tell the heads whether their inputs follow the width.
    """

    def __init__(
        self,
        feature_dim: int,
        net_arch: list[int] | dict[str, list[int]],
        activation_fn: type[nn.Module],
        device: th.device | str = "auto",
        *,
        slim_input: bool = False,
        divisor: int = 1,
        slim_critic: bool = True,
    ) -> None:
        super().__init__()
        if not slim_critic and slim_input:
            raise ValueError("a full-width critic cannot take features that slim")
        if isinstance(net_arch, dict):
            pi_arch, vf_arch = list(net_arch.get("pi", [])), list(net_arch.get("vf", []))
        else:
            pi_arch, vf_arch = list(net_arch), list(net_arch)
        layers = dict(activation_fn=activation_fn, slim_input=slim_input, divisor=divisor)
        self.policy_net = nn.Sequential(*create_us_mlp(feature_dim, 0, pi_arch, **layers))  # type: ignore[arg-type]
        if slim_critic:
            self.value_net = nn.Sequential(*create_us_mlp(feature_dim, 0, vf_arch, **layers))  # type: ignore[arg-type]
        else:
            self.value_net = nn.Sequential(*create_mlp(feature_dim, 0, vf_arch, activation_fn))
        self.latent_dim_pi = pi_arch[-1] if pi_arch else feature_dim
        self.latent_dim_vf = vf_arch[-1] if vf_arch else feature_dim
        self.latent_pi_slims = bool(pi_arch) or slim_input
        self.latent_vf_slims = slim_critic and (bool(vf_arch) or slim_input)

    def forward(self, features: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features: th.Tensor) -> th.Tensor:
        return self.policy_net(features)

    def forward_critic(self, features: th.Tensor) -> th.Tensor:
        return self.value_net(features)


def _slim_head(head: nn.Linear, slim_in: bool, divisor: int) -> USLinear:
    """A head whose outputs never slim, holding ``head``'s parameters (the same tensors)."""
    # built on the meta device: no initialisation drawn from the global RNG, so rollouts stay as SB3's
    us = USLinear(head.in_features, head.out_features, bias=head.bias is not None, slim_in=slim_in, slim_out=False,
                  divisor=divisor, device="meta")  # fmt: skip
    us.weight = head.weight  # type: ignore[assignment]  # torch types it Tensor; it is the Parameter
    if head.bias is not None:
        us.bias = head.bias
    return us


class _ActorPath(nn.Module):
    """Observations to action-distribution parameters: what acting costs (the critic is not run)."""

    def __init__(self, policy: USActorCriticPolicy) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, obs: th.Tensor) -> th.Tensor:
        p = self.policy
        features = p.extract_features(obs, p.pi_features_extractor)
        assert isinstance(features, th.Tensor)  # one extractor given: one tensor
        return p.action_net(p.mlp_extractor.forward_actor(features))


class USActorCriticPolicy(SlimmablePolicyMixin, ActorCriticPolicy):
    """SB3's ``ActorCriticPolicy`` whose actor and critic run at any width in ``width_range``.

    Takes SB3's parameters plus ``width_range=(low, high)`` and ``divisor`` (channel
    rounding; 1 for exact ``round(C * w)``). The hidden layers (and a usrl extractor's
    channels) slim; the action head's and value head's inputs slim, their outputs (action
    parameters, one value) never do; ``log_std`` of Gaussian actions is shared by all widths.
    ``slim_critic=False`` keeps the critic (value network and head) at full size at every
    width: acting runs the actor only, so a small deployed net does not need a small critic,
    and US-PPO/US-A2C then train the critic at full width only, once per minibatch (it needs
    features that do not slim: an MLP policy, or a features extractor without slimmable
    layers). ``None`` (the default) chooses ``False`` where it can (a features extractor
    without slimmable layers, e.g. every MLP policy) and ``True`` otherwise (usrl's CNNs):
    distilling values into slimmed critics measurably slows the full width's learning
    (``benchmarks/results/ac_gradients_cartpole.md``). Orthogonal initialisation covers the
    slimmable layers as SB3 does its own. With gSDE
    (``use_sde=True``) one exploration matrix serves every width: a narrower latent uses its
    leading rows (the latent is zero-padded to full width before the noise is drawn).
    """

    mlp_extractor: USMlpExtractor  # type: ignore[assignment]  # SB3 annotates its own MlpExtractor; ours has its interface

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.Tanh,
        ortho_init: bool = True,
        use_sde: bool = False,
        log_std_init: float = 0.0,
        full_std: bool = True,
        use_expln: bool = False,
        squash_output: bool = False,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        share_features_extractor: bool = True,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        width_range: tuple[float, float] = DEFAULT_WIDTH_RANGE,
        divisor: int = 1,
        slim_critic: bool | None = None,
    ) -> None:
        self.width_range = check_width_range(*width_range)
        self.divisor = check_divisor(divisor)
        if slim_critic is not None and not isinstance(slim_critic, bool):
            raise ValueError(
                f"slim_critic must be True, False or None (full-size where it can be), got {slim_critic!r}"
            )
        self.slim_critic: bool | None = slim_critic
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch,
            activation_fn,
            ortho_init,
            use_sde,
            log_std_init,
            full_std,
            use_expln,
            squash_output,
            features_extractor_class,
            extractor_kwargs(features_extractor_class, features_extractor_kwargs, divisor, normalize_images),
            share_features_extractor,
            normalize_images,
            optimizer_class,
            optimizer_kwargs,
        )
        make_slimmable(self, self.width_range)

    def _build_mlp_extractor(self) -> None:
        if self.slim_critic is None:
            self.slim_critic = bool(slimmable_modules(self.features_extractor))
        if not self.slim_critic and slimmable_modules(self.features_extractor):
            raise ValueError(
                f"slim_critic=False needs a critic whose features do not slim, but {type(self.features_extractor).__name__} "
                "has slimmable layers (its copy for the critic too): use an MLP policy or a features extractor "
                "without slimmable layers (e.g. SB3's own)"
            )
        self.mlp_extractor = USMlpExtractor(
            self.features_dim,
            self.net_arch,
            self.activation_fn,
            self.device,
            slim_input=is_slimmable_extractor(self.features_extractor),
            divisor=self.divisor,
            slim_critic=bool(self.slim_critic),
        ).to(self.device)

    def _build(self, lr_schedule: Schedule) -> None:
        super()._build(lr_schedule)
        # SB3 built plain nn.Linear heads, initialised them and handed their parameters to the
        # optimizer; the slimmable heads take over those very parameters.
        self.action_net = _slim_head(self.action_net, self.mlp_extractor.latent_pi_slims, self.divisor)  # type: ignore[arg-type]
        if self.slim_critic:
            self.value_net = _slim_head(self.value_net, self.mlp_extractor.latent_vf_slims, self.divisor)  # type: ignore[assignment]

    @staticmethod
    def init_weights(module: nn.Module, gain: float = 1) -> None:
        """SB3's orthogonal initialisation, extended to usrl's slimmable layers."""
        if isinstance(module, (USLinear, USConv2d)):
            nn.init.orthogonal_(module.weight, gain=gain)
            if module.bias is not None:
                module.bias.data.fill_(0.0)
        else:
            ActorCriticPolicy.init_weights(module, gain)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(width_range=self.width_range, divisor=self.divisor, slim_critic=self.slim_critic)
        return data

    @property
    def critic_slims(self) -> bool:
        """Whether the values depend on the width (else the critic is the same network at every width)."""
        return self.mlp_extractor.latent_vf_slims or bool(slimmable_modules(self.vf_features_extractor))

    def _get_action_dist_from_latent(self, latent_pi: th.Tensor) -> Distribution:
        if isinstance(self.action_dist, StateDependentNoiseDistribution):
            missing = self.mlp_extractor.latent_dim_pi - latent_pi.shape[-1]
            mean_actions = self.action_net(latent_pi)
            return self.action_dist.proba_distribution(mean_actions, self.log_std, F.pad(latent_pi, (0, missing)))
        return super()._get_action_dist_from_latent(latent_pi)

    def distribution_and_values(self, obs: th.Tensor) -> tuple[Distribution, th.Tensor]:
        """The action distribution and the values (shape ``(batch,)``) at the current width.

        As everywhere in SB3, the returned ``Distribution`` object is the policy's own and is
        refilled by the next forward pass: use (or :func:`detach_distribution`) it before that.
        """
        features = self.extract_features(obs)
        if self.share_features_extractor:
            latent_pi, latent_vf = self.mlp_extractor(features)
        else:
            pi_features, vf_features = features
            latent_pi = self.mlp_extractor.forward_actor(pi_features)
            latent_vf = self.mlp_extractor.forward_critic(vf_features)
        return self._get_action_dist_from_latent(latent_pi), self.value_net(latent_vf).flatten()

    def acting_network(self) -> nn.Module:
        """The network that maps observations to actions (profiled for MACs and parameters)."""
        return _ActorPath(self)


class USActorCriticCnnPolicy(USActorCriticPolicy):
    """:class:`USActorCriticPolicy` for images: a slimmable Nature-CNN extractor, and (as SB3's
    CnnPolicy) the heads directly on its 512 features unless ``net_arch`` is given."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("features_extractor_class", USNatureCNN)
        if kwargs.get("net_arch") is None and len(args) < 4:
            kwargs["net_arch"] = []
        super().__init__(*args, **kwargs)


class USMultiInputActorCriticPolicy(USActorCriticPolicy):
    """:class:`USActorCriticPolicy` for Dict observations (SB3's ``MultiInputPolicy``): a
    :class:`USCombinedExtractor` (slimmable image encoders, flattened vectors) by default."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) < 8:  # features_extractor_class not given by position
            kwargs.setdefault("features_extractor_class", USCombinedExtractor)
        super().__init__(*args, **kwargs)


def _detached(d: th.distributions.Distribution) -> th.distributions.Distribution:
    if isinstance(d, Categorical):
        return Categorical(logits=d.logits.detach())
    if isinstance(d, Normal):
        return Normal(d.loc.detach(), d.scale.detach())
    if isinstance(d, Bernoulli):
        return Bernoulli(logits=d.logits.detach())
    raise TypeError(f"cannot distil a {type(d).__name__} action distribution")


def _parts(d: Distribution) -> list[th.distributions.Distribution]:
    inner = d.distribution
    return list(inner) if isinstance(inner, list) else [inner]


def distribution_outputs(d: Distribution) -> th.Tensor:
    """The outputs of the policy that parametrise an SB3 action distribution, one row per sample
    (shape ``(batch, k)``): a Gaussian's means, a categorical's normalised log-probabilities, a
    Bernoulli's logits, the parts of a multi-part distribution side by side. The state-independent
    ``log_std`` is not among them. Used to guard the teacher (``teacher_guard="drift"``)."""
    rows = []
    for part in _parts(d):
        if isinstance(part, Normal):
            out = part.loc
        elif isinstance(part, (Categorical, Bernoulli)):
            out = part.logits
        else:
            raise TypeError(f"cannot guard a {type(part).__name__} action distribution")
        rows.append(out.reshape(out.shape[0], -1))
    return th.cat(rows, dim=1)


def detach_distribution(d: Distribution) -> list[th.distributions.Distribution]:
    """The torch distributions behind an SB3 action distribution, cut from the graph (a teacher)."""
    return [_detached(part) for part in _parts(d)]


def distill_loss(teacher: list[th.distributions.Distribution], student: Distribution) -> th.Tensor:
    """Per-sample distillation loss of a student's action distribution against the teacher's
    (shape ``(batch,)``, summed over action dimensions); ``teacher`` comes from
    :func:`detach_distribution`, so gradients reach only the student.

    Categorical, multi-categorical and Bernoulli actions: ``KL(teacher || student)``. Diagonal
    Gaussian actions: the same KL at unit scale, ``0.5 * sum((mean_s - mean_t)^2)``: the student
    matches the teacher's action means, and the scale (``log_std``, shared by every width) is the
    full width's own loss to learn. The true Gaussian KL divides the squared distance by the
    variance, so as the policy's noise shrinks the students' gradients swamp the full width's
    in the weights they share, and they inflate ``log_std`` (KL falls as the scale grows).
    Measured on Pendulum-v1 (US-PPO, student_weight 1/3, 100k steps, seeds 1 and 2, full width):
    -885 / -1009 with the true KL, -133 / -162 with this loss; plain PPO -130.
    """
    total: th.Tensor | None = None
    for t, s in zip(teacher, _parts(student), strict=True):
        if isinstance(s, Normal) and isinstance(t, Normal):
            loss = 0.5 * (s.loc - t.loc).pow(2)
        else:
            loss = kl_divergence(t, s)
        if loss.dim() > 1:
            loss = loss.sum(dim=1)
        total = loss if total is None else total + loss
    assert total is not None
    return total
