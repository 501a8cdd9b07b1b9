"""Termination functions for model rollouts: ``done(obs, actions, next_obs) -> bool[B]`` per env id.

A learned dynamics model predicts the next state but not whether the episode ends there. For the
gymnasium v5 MuJoCo tasks the end is a known function of the next observation (the "healthy"
conditions in the environments' source, with their default arguments and
``exclude_current_positions_from_observation=True``):

==========================  =================================================================
Hopper-v5                   ends unless ``z > 0.7``, ``|angle| < 0.2``, ``|obs[1:]| < 100``
Walker2d-v5                 ends unless ``0.8 < z < 2.0`` and ``|angle| < 1``
InvertedPendulum-v5         ends when ``|obs[1]| > 0.2`` or an entry is not finite
HalfCheetah-v5, Swimmer-v5  never ends
==========================  =================================================================

(``z = obs[0]``, ``angle = obs[1]``.) For any other task :func:`termination_fn` returns ``None``: model
rollouts then never terminate, which is exact for tasks without terminal states and otherwise makes the
model optimistic about falling. Hopper's state check uses the observation, whose velocities are clipped
to [-10, 10], where gymnasium checks the unclipped velocities; both bounds are 100, so this only misses
velocities beyond 100.

:class:`LearnedTermination` is the alternative for any other task: a classifier of ``s'`` trained on the real
transitions' ``terminated`` flags.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from rlcore.networks.mlp import mlp
from rlcore.networks.normalizer import ObsNormalizer

TerminationFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def hopper_done(obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    z, angle = next_obs[:, 0], next_obs[:, 1]
    healthy = (z > 0.7) & (angle > -0.2) & (angle < 0.2) & (next_obs[:, 1:].abs() < 100).all(dim=1)
    return ~(healthy & torch.isfinite(next_obs).all(dim=1))


def walker2d_done(obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    z, angle = next_obs[:, 0], next_obs[:, 1]
    healthy = (z > 0.8) & (z < 2.0) & (angle > -1.0) & (angle < 1.0)
    return ~(healthy & torch.isfinite(next_obs).all(dim=1))


def inverted_pendulum_done(obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    return ~torch.isfinite(next_obs).all(dim=1) | (next_obs[:, 1].abs() > 0.2)


def never_done(obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    return torch.zeros(next_obs.shape[0], dtype=torch.bool, device=next_obs.device)


TERMINATION_FNS: dict[str, TerminationFn] = {
    "Hopper": hopper_done,
    "Walker2d": walker2d_done,
    "InvertedPendulum": inverted_pendulum_done,
    "HalfCheetah": never_done,
    "Swimmer": never_done,
}


def termination_fn(env_id: str) -> TerminationFn | None:
    """The known termination function of ``env_id`` (matched by name without version), or ``None``."""
    return TERMINATION_FNS.get(env_id.split("-v")[0].split("/")[-1])


class LearnedTermination(nn.Module):
    """``P(terminal | s')``: a classifier over the next observation, for tasks without a known termination function.

    Trained by logistic regression on real transitions (their ``terminated`` flags); a model transition ends where
    the predicted probability exceeds 1/2 (the Bayes decision for a termination that is a function of ``s'``, as in
    every gymnasium task). Unweighted: terminal transitions are rare, and a class weight would move the threshold
    and end healthy model rollouts. Observations are standardised with running statistics kept in the module.
    """

    def __init__(self, obs_dim: int, hidden_sizes: tuple[int, ...] = (64, 64)) -> None:
        super().__init__()
        self.normalizer = ObsNormalizer(obs_dim)
        self.net = nn.Sequential(*mlp(obs_dim, hidden_sizes, 1))

    def forward(self, next_obs: torch.Tensor) -> torch.Tensor:
        """Logits ``[B]`` of ``P(terminal | s')``."""
        return self.net(self.normalizer(next_obs)).squeeze(-1)

    def loss(self, next_obs: torch.Tensor, terminated: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy against the ``terminated`` flags (the running statistics are updated first)."""
        self.normalizer.update(next_obs)
        return F.binary_cross_entropy_with_logits(self(next_obs), terminated.to(next_obs.dtype))

    @torch.no_grad()
    def done(self, obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """A :data:`TerminationFn`: True where the predicted probability of termination exceeds 1/2."""
        return (self(next_obs) > 0) | ~torch.isfinite(next_obs).all(dim=1)
