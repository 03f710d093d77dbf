"""Universally slimmable DQN policies: drop-in replacements for SB3's DQN policies."""

from __future__ import annotations

from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor
from stable_baselines3.common.type_aliases import Schedule
from stable_baselines3.dqn.policies import DQNPolicy, QNetwork
from torch import nn

from usrl.agents.common import SlimmablePolicyMixin, check_divisor, extractor_kwargs
from usrl.agents.torch_layers import USCombinedExtractor, USNatureCNN, create_us_mlp, is_slimmable_extractor
from usrl.nn import DEFAULT_WIDTH_RANGE, check_width_range, make_slimmable


class USQNetwork(QNetwork):
    """SB3's ``QNetwork`` with a slimmable Q-MLP: its input slims after a slimmable extractor,
    its outputs (one per action) never do."""

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Discrete,
        features_extractor: BaseFeaturesExtractor,
        features_dim: int,
        net_arch: list[int] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
        divisor: int = 1,
    ) -> None:
        super().__init__(
            observation_space, action_space, features_extractor, features_dim, net_arch, activation_fn, normalize_images
        )
        self.divisor = divisor
        slim_input = is_slimmable_extractor(features_extractor)
        q_net = create_us_mlp(
            self.features_dim,
            int(self.action_space.n),
            self.net_arch,
            self.activation_fn,
            slim_input=slim_input,
            divisor=divisor,
        )
        self.q_net = nn.Sequential(*q_net)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(divisor=self.divisor)
        return data


class USDQNPolicy(SlimmablePolicyMixin, DQNPolicy):
    """SB3's ``DQNPolicy`` whose Q-network (and target network) run at any width in ``width_range``.

    Takes SB3's parameters plus ``width_range=(low, high)`` and ``divisor`` (channel rounding,
    1 for exact ``round(C * w)``). The Q-network and its target share one width control;
    ``set_width`` chooses the width used by ``predict`` and ``forward``. Parameter shapes never
    depend on the width. Defaults to a fused Adam on CPU/CUDA (same updates as Adam, fewer kernels).
    """

    q_net: USQNetwork
    q_net_target: USQNetwork

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Discrete,
        lr_schedule: Schedule,
        net_arch: list[int] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        width_range: tuple[float, float] = DEFAULT_WIDTH_RANGE,
        divisor: int = 1,
    ) -> None:
        self.width_range = check_width_range(*width_range)
        self.divisor = check_divisor(divisor)
        features_extractor_kwargs = extractor_kwargs(
            features_extractor_class, features_extractor_kwargs, divisor, normalize_images
        )
        if optimizer_kwargs is None and optimizer_class is th.optim.Adam:
            optimizer_kwargs = {"fused": True}
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch,
            activation_fn,
            features_extractor_class,
            features_extractor_kwargs,
            normalize_images,
            optimizer_class,
            optimizer_kwargs,
        )
        make_slimmable(self, self.width_range)

    def make_q_net(self) -> USQNetwork:
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)
        return USQNetwork(**net_args, divisor=self.divisor).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(width_range=self.width_range, divisor=self.divisor)
        return data

    def acting_network(self) -> nn.Module:
        """The network that maps observations to actions (profiled for MACs and parameters)."""
        return self.q_net


USMlpPolicy = USDQNPolicy


class USCnnPolicy(USDQNPolicy):
    """:class:`USDQNPolicy` for images: a slimmable Nature-CNN extractor by default."""

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Discrete,
        lr_schedule: Schedule,
        net_arch: list[int] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        features_extractor_class: type[BaseFeaturesExtractor] = USNatureCNN,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        width_range: tuple[float, float] = DEFAULT_WIDTH_RANGE,
        divisor: int = 1,
    ) -> None:
        if net_arch is None:
            net_arch = []  # SB3's CnnPolicy: the head sits directly on the 512 features
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch,
            activation_fn,
            features_extractor_class,
            features_extractor_kwargs,
            normalize_images,
            optimizer_class,
            optimizer_kwargs,
            width_range,
            divisor,
        )


class USMultiInputPolicy(USDQNPolicy):
    """:class:`USDQNPolicy` for Dict observations (SB3's ``MultiInputPolicy``): a
    :class:`USCombinedExtractor` (slimmable image encoders, flattened vectors) by default."""

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Discrete,
        lr_schedule: Schedule,
        net_arch: list[int] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        features_extractor_class: type[BaseFeaturesExtractor] = USCombinedExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        width_range: tuple[float, float] = DEFAULT_WIDTH_RANGE,
        divisor: int = 1,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch,
            activation_fn,
            features_extractor_class,
            features_extractor_kwargs,
            normalize_images,
            optimizer_class,
            optimizer_kwargs,
            width_range,
            divisor,
        )
