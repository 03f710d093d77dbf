"""Stable-Baselines3 plug-ins: slimmable policies and US algorithms."""

from usrl.agents.ac_policies import (
    USActorCriticCnnPolicy,
    USActorCriticPolicy,
    USMlpExtractor,
    USMultiInputActorCriticPolicy,
)
from usrl.agents.actor_critic import USA2C, USPPO
from usrl.agents.buffers import FrameStackReplayBuffer
from usrl.agents.dqn import USDQN
from usrl.agents.dqn_policies import USCnnPolicy, USDQNPolicy, USMlpPolicy, USMultiInputPolicy, USQNetwork
from usrl.agents.torch_layers import USCombinedExtractor, USMinAtarCNN, USNatureCNN, create_us_mlp

__all__ = [
    "FrameStackReplayBuffer",
    "USA2C",
    "USDQN",
    "USPPO",
    "USActorCriticCnnPolicy",
    "USActorCriticPolicy",
    "USCnnPolicy",
    "USCombinedExtractor",
    "USDQNPolicy",
    "USMinAtarCNN",
    "USMlpExtractor",
    "USMlpPolicy",
    "USMultiInputActorCriticPolicy",
    "USMultiInputPolicy",
    "USNatureCNN",
    "USQNetwork",
    "create_us_mlp",
]
