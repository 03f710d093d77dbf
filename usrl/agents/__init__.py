"""Stable-Baselines3 plug-ins: slimmable policies and US algorithms."""

from usrl.agents.dqn import USDQN
from usrl.agents.dqn_policies import USCnnPolicy, USDQNPolicy, USMlpPolicy, USQNetwork
from usrl.agents.torch_layers import USMinAtarCNN, USNatureCNN, create_us_mlp

__all__ = [
    "USDQN",
    "USCnnPolicy",
    "USDQNPolicy",
    "USMinAtarCNN",
    "USMlpPolicy",
    "USNatureCNN",
    "USQNetwork",
    "create_us_mlp",
]
