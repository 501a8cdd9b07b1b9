"""The (state, candidate-embedding) pair network that scores a dynamic candidate set, and a state-value network.

Dynamic planning (Cohen et al.) scores (state, candidate) pairs because the candidates change every turn:

    f(h, c_k) = w · relu(S h + C c_k + b) + w₀        (one hidden ReLU layer over the sum of two towers)

with deeper towers ``S`` and ``C`` when ``hidden_sizes`` has more than one entry. The PPO manager reads it as
the logits of a :class:`~rlcore.networks.MaskedCategorical`, the Q manager as Q(h, c_k).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from rlcore.networks import mlp


def state_input(obs: dict[str, torch.Tensor]) -> torch.Tensor:
    """``[N, H + 1]``: the history embedding and the turn."""
    return torch.cat([obs["history"], obs["turn"]], dim=1)


class CandidateScorer(nn.Module):
    """``f(h, c_k)`` for every candidate slot ``k`` (see the module docstring): ``[N, K]``.

    Args:
        history_dim: H, the width of ``obs["history"]``.
        embedding_dim: D, the width of a candidate embedding.
        hidden_sizes: the towers' layers; the last is the width of the pair layer.
    """

    def __init__(self, history_dim: int, embedding_dim: int, hidden_sizes: Sequence[int] = (128, 128)) -> None:
        super().__init__()
        if not hidden_sizes or min(hidden_sizes) < 1:
            raise ValueError(f"hidden_sizes must be positive, got {tuple(hidden_sizes)}.")
        width = hidden_sizes[-1]
        self.state_tower = nn.Sequential(*mlp(history_dim + 1, hidden_sizes[:-1], width))
        self.candidate_tower = nn.Sequential(*mlp(embedding_dim, hidden_sizes[:-1], width))
        self.out = nn.Sequential(nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1))

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        state = self.state_tower(state_input(obs))  # [N, W]
        candidates = self.candidate_tower(obs["candidates"])  # [N, K, W]
        return self.out(state[:, None, :] + candidates).squeeze(-1)


class StateValue(nn.Module):
    """``V(h)``: the PPO manager's critic."""

    def __init__(self, history_dim: int, hidden_sizes: Sequence[int] = (128, 128)) -> None:
        super().__init__()
        self.net = nn.Sequential(*mlp(history_dim + 1, hidden_sizes, 1))

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net(state_input(obs)).squeeze(-1)


__all__ = ["CandidateScorer", "StateValue", "state_input"]
