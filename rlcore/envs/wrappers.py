"""A single-environment gymnasium wrapper for the same action constraint the batched envs apply.

Third-party agents (Stable-Baselines3 in the benchmarks) train on ordinary gymnasium environments;
wrapping them with :class:`ActionSetWrapper` gives them the very projection onto the action set
that :func:`rlcore.envs.make` applies, so both sides act under the same constraint.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from solvers import ActionSet


class ActionSetWrapper(gym.ActionWrapper):
    """Exposes the action set's bounding box as the action space and projects every action onto the set."""

    def __init__(self, env: gym.Env, action_set: ActionSet) -> None:
        super().__init__(env)
        native = env.action_space
        if not isinstance(native, gym.spaces.Box):
            raise ValueError(f"ActionSetWrapper needs a Box action space, got {type(native).__name__}.")
        low, high = torch.as_tensor(native.low), torch.as_tensor(native.high)
        self.action_set = action_set.with_dim(native.shape[0]).intersect_box(low, high)
        self.action_space = gym.spaces.Box(np.maximum(self.action_set.low.numpy(), native.low).astype(np.float32),
                                           np.minimum(self.action_set.high.numpy(), native.high).astype(np.float32),
                                           dtype=np.float32)

    def action(self, action: np.ndarray) -> np.ndarray:
        projected = self.action_set.project(torch.as_tensor(action, dtype=torch.float32).reshape(1, -1))
        return np.clip(projected.numpy()[0], self.env.action_space.low, self.env.action_space.high)
