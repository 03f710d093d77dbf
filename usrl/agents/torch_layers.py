"""Slimmable feature extractors and MLPs with Stable-Baselines3's shapes and conventions."""

from __future__ import annotations

import gymnasium as gym
import torch as th
from gymnasium import spaces
from stable_baselines3.common.preprocessing import get_flattened_obs_dim, is_image_space
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from usrl.nn import USConv2d, USLinear


class USNatureCNN(BaseFeaturesExtractor):
    """The Nature-DQN CNN (conv 32-64-64, fc ``features_dim``) as in SB3's ``NatureCNN``, slimmable.

    The first conv's input channels (the frame stack) never slim; every other channel count,
    and the ``features_dim`` output, follows the width. The fc layer after the flatten takes the
    conv's channels in channel-major blocks of H*W features, so its input slice follows the
    conv's channel slice exactly. Images are normalised by the policy, as in SB3.

    :param observation_space: a channel-first image Box.
    :param features_dim: features at full width (512).
    :param normalized_image: as SB3's: skip the uint8 / [0, 255] checks (SB3's policies, and ours,
        set it when ``normalize_images=False``).
    :param divisor: channel rounding at smaller widths (1: ``round(C * w)``).
    :param slim_output: whether the ``features_dim`` features follow the width (``False``: every
        width outputs all of them, as each image encoder of :class:`USCombinedExtractor` does).

    Observation spaces SB3's ``NatureCNN`` rejects fail here the same way (``AssertionError``).
    """

    def __init__(
        self,
        observation_space: gym.Space,
        features_dim: int = 512,
        normalized_image: bool = False,
        divisor: int = 1,
        slim_output: bool = True,
    ) -> None:
        # SB3's NatureCNN asserts this very condition: code written against it catches AssertionError
        assert is_image_space(observation_space, check_channels=False, normalized_image=normalized_image), (
            f"USNatureCNN needs channel-first images, not {observation_space} (use MlpPolicy for vectors, "
            "MultiInputPolicy for dicts, or normalize_images=False for images that are already normalised)"
        )
        assert isinstance(observation_space, spaces.Box)
        super().__init__(observation_space, features_dim)
        self.slims_output = slim_output
        n_input_channels = observation_space.shape[0]
        self.cnn = nn.Sequential(
            USConv2d(n_input_channels, 32, kernel_size=8, stride=4, slim_in=False, divisor=divisor),
            nn.ReLU(),
            USConv2d(32, 64, kernel_size=4, stride=2, divisor=divisor),
            nn.ReLU(),
            USConv2d(64, 64, kernel_size=3, stride=1, divisor=divisor),
            nn.ReLU(),
            nn.Flatten(),
        )
        with th.no_grad():
            sample = th.as_tensor(observation_space.sample()[None]).float()
            n_flatten = self.cnn(sample).shape[1]
        spatial = n_flatten // 64  # H*W features per channel of the last conv
        self.linear = nn.Sequential(
            USLinear(n_flatten, features_dim, ratio=(spatial, 1), divisor=divisor, slim_out=slim_output), nn.ReLU()
        )

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.linear(self.cnn(observations))


class USCombinedExtractor(BaseFeaturesExtractor):
    """SB3's ``CombinedExtractor`` for Dict observations, with slimmable image encoders.

    Each image key goes through a :class:`USNatureCNN` whose channels follow the width while
    its ``cnn_output_dim`` features do not; other keys are flattened. The concatenation has the
    same size at every width, so the network after it slims from its first hidden layer on.
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        cnn_output_dim: int = 256,
        normalized_image: bool = False,
        divisor: int = 1,
    ) -> None:
        super().__init__(observation_space, features_dim=1)
        extractors: dict[str, nn.Module] = {}
        total = 0
        for key, subspace in observation_space.spaces.items():
            if is_image_space(subspace, normalized_image=normalized_image):
                extractors[key] = USNatureCNN(
                    subspace, cnn_output_dim, normalized_image=normalized_image, divisor=divisor, slim_output=False
                )
                total += cnn_output_dim
            else:
                extractors[key] = nn.Flatten()
                total += get_flattened_obs_dim(subspace)
        self.extractors = nn.ModuleDict(extractors)
        self._features_dim = total

    def forward(self, observations: dict[str, th.Tensor]) -> th.Tensor:
        return th.cat([extractor(observations[key]) for key, extractor in self.extractors.items()], dim=1)


class USMinAtarCNN(BaseFeaturesExtractor):
    """A small slimmable CNN for MinAtar's 10x10 boards: conv 3x3 (16) + fc ``features_dim`` (128).

    The network of the MinAtar paper (Young & Tian 2019), with the input channels fixed and the
    rest slimmable. Board channels are 0/1 values, so no image normalisation is needed.
    """

    def __init__(self, observation_space: gym.Space, features_dim: int = 128, divisor: int = 1) -> None:
        if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 3:
            raise ValueError(f"USMinAtarCNN needs a channel-first (C, H, W) Box, not {observation_space}")
        super().__init__(observation_space, features_dim)
        c, h, w = observation_space.shape
        self.cnn = nn.Sequential(
            USConv2d(c, 16, kernel_size=3, stride=1, slim_in=False, divisor=divisor), nn.ReLU(), nn.Flatten()
        )
        spatial = (h - 2) * (w - 2)
        self.linear = nn.Sequential(
            USLinear(16 * spatial, features_dim, ratio=(spatial, 1), divisor=divisor), nn.ReLU()
        )

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.linear(self.cnn(observations.float()))


def is_slimmable_extractor(extractor: nn.Module) -> bool:
    """True if ``extractor``'s output features follow the width (one of usrl's slimming extractors)."""
    if isinstance(extractor, USNatureCNN):
        return extractor.slims_output
    return isinstance(extractor, USMinAtarCNN)


def create_us_mlp(
    input_dim: int,
    output_dim: int,
    net_arch: list[int],
    activation_fn: type[nn.Module] = nn.ReLU,
    *,
    slim_input: bool = False,
    slim_output: bool = False,
    squash_output: bool = False,
    divisor: int = 1,
) -> list[nn.Module]:
    """SB3's ``create_mlp`` with slimmable layers: hidden layers follow the width.

    ``slim_input``: whether the input features slim (they do after a slimmable extractor, not
    after a flatten of observations). ``slim_output``: whether the output does (not for a head;
    yes for a latent layer that feeds another slimmable layer). ``output_dim <= 0`` means no
    output layer, as in SB3.
    """
    modules: list[nn.Module] = []
    last, last_slim = input_dim, slim_input
    for units in net_arch:
        modules += [USLinear(last, units, slim_in=last_slim, slim_out=True, divisor=divisor), activation_fn()]
        last, last_slim = units, True
    if output_dim > 0:
        modules.append(USLinear(last, output_dim, slim_in=last_slim, slim_out=slim_output, divisor=divisor))
    if squash_output:
        modules.append(nn.Tanh())
    return modules
