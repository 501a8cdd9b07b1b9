"""Q-networks over ``[s, a]``: one ReLU MLP that the max-Q solvers read (CAQL), and a stacked ensemble (SAC, VMBPO)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from rlcore.networks.ensemble import EnsembleMLP
from rlcore.networks.mlp import mlp


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



class TwinQ(nn.Module):
    """``num_critics`` Q-networks over ``[s, a]``, stacked: ``forward`` returns ``[num_critics, B]``."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_sizes: tuple[int, ...], num_critics: int = 2) -> None:
        super().__init__()
        self.net = EnsembleMLP(num_critics, obs_dim + action_dim, hidden_sizes, 1)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, actions], dim=-1)).squeeze(-1)

