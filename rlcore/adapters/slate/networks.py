"""Networks over (user state, item) pairs, shared by SlateQ's Q-function and the PPO slate policy.

A slate agent scores every item of the pool for every user at every step (hundreds of items, for target
values too), so the pair network is factorised: a state tower ``s(x)`` and an item tower ``t(i)`` are
computed once each, and one hidden layer combines them with the two interest-match features
``⟨p, e_i⟩`` and ``⟨h, e_i⟩`` (the request's and the history's match with the item):

    f(x, i) = w · relu(s(x) + t(i) + W_m [⟨p, e_i⟩, ⟨h, e_i⟩]) + c

which costs ``O(N · I · H)`` for all pairs instead of an MLP on ``N · I`` concatenated inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from rlcore.networks import mlp


def state_features(obs: dict[str, torch.Tensor]) -> torch.Tensor:
    """``[N, 2d + 2]``: request, history, patience and turn (what a user's state is to an agent)."""
    return torch.cat([obs["prompt"], obs["history"], obs["patience"], obs["turn"]], dim=1)


class PairScorer(nn.Module):
    """``f(x, i)`` for every user state ``x`` and item ``i`` (see the module docstring).

    Args:
        embedding_dim: d.
        hidden_sizes: the towers' hidden layers; the last size is the width of the combining layer.
    """

    def __init__(self, embedding_dim: int, hidden_sizes: Sequence[int] = (64, 64)) -> None:
        super().__init__()
        if not hidden_sizes or min(hidden_sizes) < 1:
            raise ValueError(f"hidden_sizes must be positive, got {tuple(hidden_sizes)}.")
        d, width = embedding_dim, hidden_sizes[-1]
        self.state_tower = nn.Sequential(*mlp(2 * d + 2, hidden_sizes[:-1], width))
        self.item_tower = nn.Sequential(*mlp(d + 2, hidden_sizes[:-1], width))
        self.match = nn.Linear(2, width, bias=False)
        self.out = nn.Linear(width, 1)

    def forward(self, obs: dict[str, torch.Tensor], item_features: torch.Tensor,
                index: torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``[N, I]`` of every item (``item_features [I, d + 2]``), or ``[N, J]`` of items ``index [N, J]``."""
        d = obs["prompt"].shape[1]
        state = self.state_tower(state_features(obs))  # [N, H]
        items = self.item_tower(item_features)  # [I, H]
        embeddings = item_features[:, :d]
        if index is None:
            match = torch.stack([obs["prompt"] @ embeddings.T, obs["history"] @ embeddings.T], -1)  # [N, I, 2]
            item_part = items[None]
        else:
            e = embeddings[index]  # [N, J, d]
            match = torch.stack([(e * obs["prompt"][:, None]).sum(-1), (e * obs["history"][:, None]).sum(-1)], -1)
            item_part = items[index]
        hidden = self.match(match)
        if torch.is_grad_enabled():
            hidden = torch.relu(hidden + state[:, None, :] + item_part)
        else:  # scoring the whole pool (acting, targets): in place, no [N, I, H] temporaries
            hidden.add_(state[:, None, :]).add_(item_part).relu_()
        return (hidden @ self.out.weight[0]) + self.out.bias


class StateValue(nn.Module):
    """``g(x)``: a value of the user state alone (SlateQ's value of no pick, PPO's critic)."""

    def __init__(self, embedding_dim: int, hidden_sizes: Sequence[int] = (64, 64)) -> None:
        super().__init__()
        self.net = nn.Sequential(*mlp(2 * embedding_dim + 2, hidden_sizes, 1))

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net(state_features(obs)).squeeze(-1)


__all__ = ["PairScorer", "StateValue", "state_features"]
