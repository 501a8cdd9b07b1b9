"""Small networks shared by the algorithms."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from solvers import ActionSet


def mlp(in_dim: int, hidden_sizes: Sequence[int], out_dim: int) -> list[nn.Module]:
    """Layers of a ReLU MLP ``in -> hidden... -> out`` with Glorot-uniform weights and zero biases."""
    layers: list[nn.Module] = []
    sizes = [in_dim, *hidden_sizes]
    for fan_in, fan_out in itertools.pairwise(sizes):
        layers += [_glorot(nn.Linear(fan_in, fan_out)), nn.ReLU()]
    layers.append(_glorot(nn.Linear(sizes[-1], out_dim)))
    return layers


def _glorot(layer: nn.Linear) -> nn.Linear:
    # TensorFlow's default initialisation, which the CAQL paper's networks used.
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class QNetwork(nn.Sequential):
    """``Q(s, a)``: a ReLU MLP over ``[s, a]`` with a scalar output.

    It *is* an ``nn.Sequential`` of Linear and ReLU layers, so ``solvers.ReLUNet.from_torch(q, obs_dim)``
    reads it directly and every max-Q solver can maximise it over actions.
    """

    def __init__(self, obs_dim: int, action_dim: int, hidden_sizes: Sequence[int] = (32, 16)) -> None:
        super().__init__(*mlp(obs_dim + action_dim, hidden_sizes, 1))
        self.obs_dim, self.action_dim = obs_dim, action_dim

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(torch.cat([obs, actions], dim=-1)).squeeze(-1)


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
