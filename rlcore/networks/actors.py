"""Actors for continuous action sets: a deterministic one (CAQL's action function) and a tanh-squashed Gaussian
(SAC, VMBPO). Both return actions inside the action set."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from rlcore.networks.distributions import DiagGaussian
from rlcore.networks.mlp import mlp
from solvers import ActionSet

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
"""Range of the squashed Gaussian actor's log standard deviation (soft bounds, as in CleanRL)."""



class DeterministicActor(nn.Module):
    """``pi(s)``: a ReLU MLP whose tanh output is scaled to the action set's bounding box and projected
    onto the set, so its actions are always feasible."""

    def __init__(self, obs_dim: int, action_set: ActionSet, hidden_sizes: Sequence[int] = (32, 16)) -> None:
        super().__init__()
        self.body = nn.Sequential(*mlp(obs_dim, hidden_sizes, action_set.dim))
        self.action_set = action_set
        self.register_buffer("center", (action_set.low + action_set.high) / 2)
        self.register_buffer("half_width", action_set.half_width.clone())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        raw = self.center + self.half_width * torch.tanh(self.body(obs))
        return raw if self.action_set.kind == "box" else self.action_set.project(raw)



class SquashedGaussianActor(nn.Module):
    """``pi(a|s)``: a tanh-squashed diagonal Gaussian scaled to the action set's bounding box.

    ``dist(obs)`` gives the :class:`DiagGaussian`; ``sample(obs)`` a reparameterised action inside the
    action set and its log-probability; ``mode(obs)`` the deterministic action, also inside the set.
    """

    def __init__(self, obs_dim: int, action_set: ActionSet, hidden_sizes: tuple[int, ...]) -> None:
        super().__init__()
        self.action_set = action_set
        self.action_dim = action_set.dim
        self.body = nn.Sequential(*mlp(obs_dim, hidden_sizes, 2 * self.action_dim))
        self.register_buffer("low", action_set.low.clone())
        self.register_buffer("high", action_set.high.clone())

    def dist(self, obs: torch.Tensor) -> DiagGaussian:
        mean, raw_log_std = self.body(obs).chunk(2, dim=-1)
        # Soft bounds (CleanRL): a smooth map of the raw output onto [LOG_STD_MIN, LOG_STD_MAX].
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(raw_log_std) + 1)
        return DiagGaussian(mean, log_std, squash=True, low=self.low, high=self.high)

    def default_target_entropy(self) -> float:
        """SAC's entropy target, ``−dim(A)`` for actions normalised to ``[−1, 1]^D``, in the units of this actor's
        log-probabilities: ``−D + Σ_d log s_d``, ``s`` the half-widths of the action set's bounding box.

        The log-probabilities include the Jacobian of the map from ``[−1, 1]^D`` onto the box (``−Σ_d log s_d``), so
        a bare ``−D`` would ask a policy in a small box to be far more random relative to its box than one in a
        large box: on Hopper-v5 limited to ``[−0.25, 0.25]^3``, 4.2 nats more, close to uniform actions.
        Stable-Baselines3 takes log-probabilities in ``[−1, 1]^D`` and targets ``−D``: this is the same target."""
        return float(-self.action_dim + torch.log((self.high - self.low) / 2).sum())

    def _into_set(self, actions: torch.Tensor) -> torch.Tensor:
        # The squashed action is already in the bounding box; only a ball needs the projection.
        return actions if self.action_set.kind == "box" else self.action_set.project(actions)

    def sample(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        actions, log_prob = self.dist(obs).rsample_and_log_prob(generator)
        return self._into_set(actions), log_prob

    def mode(self, obs: torch.Tensor) -> torch.Tensor:
        return self._into_set(self.dist(obs).mode)

