"""One width of a US agent's acting path as plain torch layers: observations in, deterministic actions out."""

from __future__ import annotations

from typing import Any

import torch as th
from gymnasium import spaces
from torch import nn

from usrl.nn import export_fixed_width


class DeterministicActor(nn.Module):
    """Observations (float32, as the env gives them: images 0-255) to the actions ``predict(...,
    deterministic=True)`` takes: the argmax of Q-values or logits for discrete actions, the
    Gaussian mean clipped to the action bounds for continuous ones."""

    low: th.Tensor
    high: th.Tensor

    def __init__(self, net: nn.Module, action_space: spaces.Space) -> None:
        super().__init__()
        self.net = net
        self.discrete = isinstance(action_space, spaces.Discrete)
        if not self.discrete:
            if not isinstance(action_space, spaces.Box):
                raise TypeError(f"cannot export a policy over {type(action_space).__name__} actions")
            self.register_buffer("low", th.as_tensor(action_space.low, dtype=th.float32))
            self.register_buffer("high", th.as_tensor(action_space.high, dtype=th.float32))

    def forward(self, obs: th.Tensor) -> th.Tensor:
        out = self.net(obs)
        if self.discrete:
            return out.argmax(dim=1)
        return th.maximum(th.minimum(out, self.high), self.low)


def deterministic_actor(model: Any, width: float) -> DeterministicActor:
    """``model``'s (a ``USDQN``, ``USPPO`` or ``USA2C``) acting network at ``width`` as standard
    torch layers with the deterministic action on top, in eval mode on the CPU."""
    policy = model.policy
    if getattr(policy, "squash_output", False):
        raise TypeError("cannot export a policy with squashed (tanh) actions")
    static = export_fixed_width(policy.acting_network(), width)
    return DeterministicActor(static, model.action_space).cpu().eval()
