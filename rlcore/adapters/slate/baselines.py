"""Slate policies that do not learn: random, greedy by immediate expected reward, and a fixed diverse slate.

Every slate policy (these and the trained agents) has the same small interface, which
:func:`rlcore.adapters.slate.evaluate` uses:

* ``env_config``: the :class:`~rlcore.adapters.slate.world.SlateEnvConfig` of the world it belongs to, or
  None for a policy that works in any world (then ``evaluate`` uses the env it is given, or the default world).
  The baselines take it as their first argument (a config or a ``SlateEnv``), optionally;
* ``prepare(env, seed)``: bind to an environment before an evaluation (read its items, its true choice
  model, seed its own randomness);
* ``act(obs, step=0, deterministic=False) -> [N, slate_size]`` item indices.
"""

from __future__ import annotations

from typing import Any

import torch

from rlcore.adapters.common import BoundPolicy
from rlcore.adapters.slate.choice import ChoiceModel
from rlcore.adapters.slate.env import SlateEnv, random_slates
from rlcore.adapters.slate.topk import best_slate
from rlcore.adapters.slate.world import SlateEnvConfig, item_rewards


class _Bound(BoundPolicy):
    """What the slate baselines share: an optional world, and the environment they were prepared for."""

    env_type = SlateEnv

    def __init__(self, env_config: SlateEnvConfig | SlateEnv | None = None) -> None:
        super().__init__()
        if isinstance(env_config, SlateEnv):
            env_config = env_config.config
        if env_config is not None and not isinstance(env_config, SlateEnvConfig):
            raise ValueError(f"env_config must be a SlateEnvConfig, a SlateEnv or None, got "
                             f"{type(env_config).__name__}.")
        self.env_config = env_config


class RandomSlate(_Bound):
    """A uniformly random slate of distinct items on offer, every turn (its own generator, seeded by ``prepare``)."""

    name = "RandomSlate"

    def prepare(self, env: SlateEnv, seed: int = 0) -> None:
        super().prepare(env, seed)
        self.generator = torch.Generator(device=env.device).manual_seed(int(seed) + 17)

    def act(self, obs: dict[str, torch.Tensor], step: int = 0, deterministic: bool = False) -> torch.Tensor:
        env = self._env()
        return random_slates(obs["item_mask"], env.config.slate_size, self.generator)


class GreedySlate(_Bound):
    """The slate with the highest *immediate* expected reward under a choice model (the myopic SlateQ, γ = 0).

    Each item's value is the reward of its pick for the user's most probable type; the slate maximises the
    expected reward of the user's choice, exactly (:func:`~rlcore.adapters.slate.topk.best_slate`). It sees
    what a planning agent sees and ignores only the future: the gap to SlateQ is the value of planning.

    Args:
        env_config: the world, or None (any world).
        choice_model: the user model to be greedy under; None uses the environment's true one.
    """

    name = "GreedySlate"

    def __init__(self, env_config: SlateEnvConfig | SlateEnv | None = None,
                 choice_model: ChoiceModel | None = None) -> None:
        super().__init__(env_config)
        self.choice_model = choice_model

    @torch.no_grad()
    def act(self, obs: dict[str, torch.Tensor], step: int = 0, deterministic: bool = False) -> torch.Tensor:
        env = self._env()
        model = env.choice_model if self.choice_model is None else self.choice_model.to(env.device)
        log_v, log_v0 = model.item_scores(obs, env.items)
        preference = model.preferences[model.map_type(obs["prompt"])]
        rewards = item_rewards(env.config.reward, preference, env.items)
        zero = torch.zeros(rewards.shape[0], device=rewards.device)
        return best_slate(rewards, zero, log_v, log_v0, env.config.slate_size, obs["item_mask"])[0]


class DiverseSlate(_Bound):
    """One fixed slate of mutually distant items, offered to everyone every turn.

    The items are ordered by farthest-point traversal of the embeddings, from the highest-quality item; the
    slate is the first ``slate_size`` of them on offer (all of them when the whole pool is on offer).
    """

    name = "DiverseSlate"

    def prepare(self, env: SlateEnv, seed: int = 0) -> None:
        super().prepare(env, seed)
        e = env.items.embeddings
        order = [int(env.items.quality.argmax())]
        distance = (e - e[order[0]]).norm(dim=1)
        for _ in range(len(env.items) - 1):
            distance[order] = -1.0
            nxt = int(distance.argmax())
            order.append(nxt)
            distance = torch.minimum(distance, (e - e[nxt]).norm(dim=1))
        self.order = torch.tensor(order, device=env.device)

    def act(self, obs: dict[str, torch.Tensor], step: int = 0, deterministic: bool = False) -> torch.Tensor:
        env = self._env()
        mask = obs["item_mask"][:, self.order]  # [N, I] in traversal order
        rank = torch.cumsum(mask.long(), 1)
        first = (mask & (rank <= env.config.slate_size)).float()
        slots = first.topk(env.config.slate_size, dim=1, sorted=False).indices.sort(1).values
        return self.order[slots]


def describe(policy: Any) -> str:
    return getattr(policy, "name", type(policy).__name__)


__all__ = ["DiverseSlate", "GreedySlate", "RandomSlate"]
