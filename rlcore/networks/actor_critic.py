"""The actor-critics of the on-policy algorithms (PPO, RWR): tanh MLPs with PPO's orthogonal initialisation,
a Gaussian head for continuous actions and a (masked) categorical head for discrete ones."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rlcore.networks.distributions import DiagGaussian, MaskedCategorical
from rlcore.networks.normalizer import ObsNormalizer
from solvers import ActionSet


def layer_init(layer: nn.Linear, std: float = math.sqrt(2), bias: float = 0.0) -> nn.Linear:
    """Orthogonal weights with gain ``std`` and constant bias, the initialisation of the PPO implementations."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


class TanhMLP(nn.Sequential):
    """``Linear, Tanh, ..., Linear`` as an ``nn.Sequential`` (same parameters and state-dict keys), whose
    forward calls the kernels itself: with batches of one observation per step, the module call of each
    layer costs about as much as its matrix product. (Hooks on the individual layers therefore do not run.)
    """

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__(*layers)
        self.linears = [layer for layer in layers if isinstance(layer, nn.Linear)]  # a plain list: no new keys

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *hidden, last = self.linears
        for layer in hidden:
            x = torch.tanh(F.linear(x, layer.weight, layer.bias))
        return F.linear(x, last.weight, last.bias)


def tanh_mlp(in_dim: int, hidden_sizes: tuple[int, ...], out_dim: int, out_std: float) -> TanhMLP:
    """A tanh MLP with PPO's orthogonal initialisation; the output layer's gain is ``out_std``."""
    layers: list[nn.Module] = []
    for size in hidden_sizes:
        layers += [layer_init(nn.Linear(in_dim, size)), nn.Tanh()]
        in_dim = size
    return TanhMLP(*layers, layer_init(nn.Linear(in_dim, out_dim), std=out_std))


class GaussianActorCritic(nn.Module):
    """Policy mean μ(s), a state-independent log σ, and a separate critic V(s), over normalised observations."""

    def __init__(self, obs_dim: int, action_set: ActionSet, hidden_sizes: tuple[int, ...], init_log_std: float,
                 normalize_obs: bool, squash: bool) -> None:
        super().__init__()
        action_dim = action_set.dim
        self.normalizer = ObsNormalizer(obs_dim) if normalize_obs else None
        # Small last-layer gains: the policy starts near μ = 0 and the critic near V = 0 (CleanRL, SB3).
        self.actor_mean = tanh_mlp(obs_dim, hidden_sizes, action_dim, out_std=0.01)
        self.actor_log_std = nn.Parameter(torch.full((action_dim,), float(init_log_std)))
        self.critic = tanh_mlp(obs_dim, hidden_sizes, 1, out_std=1.0)
        self.squash = squash
        self.register_buffer("low", action_set.low.clone().float())
        self.register_buffer("high", action_set.high.clone().float())

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        return obs if self.normalizer is None else self.normalizer(obs)

    def dist(self, norm_obs: torch.Tensor) -> DiagGaussian:
        mean = self.actor_mean(norm_obs)
        if self.squash:
            return DiagGaussian(mean, self.actor_log_std, squash=True, low=self.low, high=self.high)
        return DiagGaussian(mean, self.actor_log_std)

    def value(self, norm_obs: torch.Tensor) -> torch.Tensor:
        return self.critic(norm_obs).squeeze(-1)



class CategoricalActorCritic(nn.Module):
    """Logits over ``n`` discrete actions and a separate critic V(s), over normalised flat observations.

    ``dist(norm_obs, mask)`` is a :class:`MaskedCategorical`: ``mask[B, n]`` (True where an action is allowed)
    comes from the environment when it restricts the actions per state; None allows all of them.
    """

    def __init__(self, obs_dim: int, num_actions: int, hidden_sizes: tuple[int, ...], normalize_obs: bool) -> None:
        super().__init__()
        self.num_actions = int(num_actions)
        self.normalizer = ObsNormalizer(obs_dim) if normalize_obs else None
        # Near-uniform initial policy (small last-layer gain), as for the Gaussian head.
        self.actor_logits = tanh_mlp(obs_dim, hidden_sizes, self.num_actions, out_std=0.01)
        self.critic = tanh_mlp(obs_dim, hidden_sizes, 1, out_std=1.0)

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        return obs if self.normalizer is None else self.normalizer(obs)

    def dist(self, norm_obs: torch.Tensor, mask: torch.Tensor | None = None) -> MaskedCategorical:
        return MaskedCategorical(self.actor_logits(norm_obs), mask)

    def value(self, norm_obs: torch.Tensor) -> torch.Tensor:
        return self.critic(norm_obs).squeeze(-1)
