"""The slate world: its config, the candidate pool, the true user types, and the one reward definition.

A world is generated from ``SlateEnvConfig.seed`` alone (on the CPU, so that every device sees the same
world): ``num_items`` items, each with a unit embedding ``e_i`` (``embedding_dim``), an *appeal* ``a_i`` (how
eye-catching it is) and a *quality* ``q_i`` that is negatively correlated with appeal (clickbait), and
``num_user_types`` user types, each with a unit preference vector ``θ_k``, a sensitivity ``β_k`` to the match
between its interest and an item, a susceptibility ``γ_k`` to appeal, a no-choice utility ``b_k`` and a
mixture weight ``π_k``. The user model that uses them is :class:`~rlcore.adapters.slate.choice.ChoiceModel`.

Rewards (``reward=``), for the item ``i`` a user of type ``k`` picks (0 when the user picks nothing):

==================  ===================================================
``"satisfaction"``  ``1 + ⟨θ_k, e_i⟩`` (how much the user likes it now)
``"click"``         ``1``
``"quality"``       ``q_i``
==================  ===================================================

Quality is not part of the satisfaction of a pick: it is what keeps a user coming back (its patience, see
:mod:`~rlcore.adapters.slate.env`), so its value only shows over several turns.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import torch

ITEM_SOURCES = ("generated", "text")
"""Accepted values of ``SlateEnvConfig.items``."""
REWARDS = ("satisfaction", "click", "quality")
"""Accepted values of ``SlateEnvConfig.reward``."""
Reward = Literal["satisfaction", "click", "quality"]


@dataclass
class SlateEnvConfig:
    """Everything that defines a slate world and its users (``SlateEnv`` adds ``num_envs`` and ``device``)."""

    num_items: int = 200
    """Items in the candidate pool."""
    slate_size: int = 4
    """Items offered each turn (m); the user picks one of them or none."""
    num_user_types: int = 4
    """Latent user types in the population (the mixture that EM recovers)."""
    seed: int = 0
    """Seed of the world: items and user types. Users (episodes) come from the reset seed."""
    embedding_dim: int = 8
    """Size of item embeddings and user preferences."""
    episode_length: int = 10
    """Turns before an episode is cut (truncation); a user whose patience runs out leaves earlier (termination)."""
    reward: Reward = "satisfaction"
    """Reward of a pick: 'satisfaction' (1 + preference match), 'click' (1) or 'quality' (q_i)."""
    initial_patience: float = 3.0
    """Patience of a new user, in turns: each turn costs 1, a picked item gives back its quality."""
    drift: float = 0.3
    """How far a user's interest moves towards the item it picked (exponential average weight)."""
    prompt_noise: float = 0.3
    """Standard deviation of the user's opening request around its type's preference (per dimension)."""
    candidates_per_turn: int | None = None
    """Items on offer each turn (a random subset, like generated prompt expansions); None: the whole pool."""
    items: Literal["generated", "text"] = "generated"
    """Item embeddings: 'generated' (random unit vectors) or 'text' (all-MiniLM-L6-v2 embeddings of item texts
    projected to embedding_dim, see `text_items`; needs the `text` extra)."""
    item_texts: tuple[str, ...] | None = None
    """With items='text': one text per item (None: num_items prompt expansions composed from the seed)."""

    def __post_init__(self) -> None:
        if isinstance(self.item_texts, list):  # a config read back from JSON, or a user's list
            self.item_texts = tuple(self.item_texts)

    def validate(self) -> None:
        """Raise a ``ValueError`` naming the first bad field, what is accepted, and how to fix it."""
        for name in ("num_items", "slate_size", "num_user_types", "embedding_dim", "episode_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
        if self.slate_size > self.num_items:
            raise ValueError(f"slate_size = {self.slate_size} exceeds num_items = {self.num_items}; a slate holds "
                             "distinct items, so use slate_size <= num_items.")
        if self.reward not in REWARDS:
            raise ValueError(f"reward must be one of {', '.join(map(repr, REWARDS))}; got {self.reward!r}.")
        for name in ("initial_patience", "prompt_noise"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}.")
        if not 0 <= self.drift <= 1:
            raise ValueError(f"drift must be in [0, 1], got {self.drift!r}.")
        if self.items not in ITEM_SOURCES:
            raise ValueError(f"items must be one of {', '.join(map(repr, ITEM_SOURCES))}; got {self.items!r}.")
        if self.item_texts is not None:
            if self.items != "text":
                raise ValueError(f"item_texts is only read with items='text', got items={self.items!r}; set "
                                 "items='text' or drop item_texts.")
            texts = self.item_texts
            if isinstance(texts, str) or not all(isinstance(t, str) and t.strip() for t in texts):
                raise ValueError("item_texts must be a sequence of non-empty strings (one per item).")
            if len(texts) != self.num_items:
                raise ValueError(f"item_texts holds {len(texts)} texts but num_items = {self.num_items}; give one "
                                 f"text per item (or set num_items={len(texts)}).")
            if len(set(texts)) != len(texts):
                raise ValueError("item_texts has repeated texts; every item needs its own text.")
        k = self.candidates_per_turn
        if k is not None and not self.slate_size <= k <= self.num_items:
            raise ValueError(f"candidates_per_turn must be None or in [slate_size, num_items] = [{self.slate_size}, "
                             f"{self.num_items}], got {k!r}.")

    def world_key(self) -> tuple:
        """The fields that fix the world an agent was trained in (items, types, reward, dynamics)."""
        texts = None
        if self.item_texts is not None:  # a digest, so that the key stays short in checkpoints
            texts = hashlib.sha256("\n".join(self.item_texts).encode()).hexdigest()[:16]
        return (self.num_items, self.slate_size, self.num_user_types, self.seed, self.embedding_dim,
                self.episode_length, self.reward, self.initial_patience, self.drift, self.prompt_noise,
                self.candidates_per_turn, self.items, texts)

    def texts(self) -> tuple[str, ...] | None:
        """The item texts of a text pool (given or composed), None for a generated pool."""
        if self.items != "text":
            return None
        from rlcore.adapters.slate.text_items import prompt_expansions

        return tuple(self.item_texts) if self.item_texts is not None else prompt_expansions(self.num_items, self.seed)


@dataclass(frozen=True)
class ItemPool:
    """The candidate pool: ``embeddings [I, d]`` (unit), ``appeal [I]``, ``quality [I]`` and, for a text pool,
    the item ``texts``."""

    embeddings: torch.Tensor
    appeal: torch.Tensor
    quality: torch.Tensor
    texts: tuple[str, ...] | None = None

    @property
    def features(self) -> torch.Tensor:
        """``[I, d + 2]``: what an agent sees of each item (embedding, appeal, quality)."""
        return torch.cat([self.embeddings, self.appeal[:, None], self.quality[:, None]], dim=1)

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    def to(self, device: torch.device | str) -> ItemPool:
        return ItemPool(self.embeddings.to(device), self.appeal.to(device), self.quality.to(device), self.texts)


@dataclass(frozen=True)
class UserTypes:
    """The true parameters of the user population (one row per type)."""

    preferences: torch.Tensor
    """θ ``[K, d]``, unit vectors."""
    sensitivity: torch.Tensor
    """β ``[K]`` > 0: weight of the interest-item match in the choice utility."""
    appeal: torch.Tensor
    """γ ``[K]``: weight of an item's appeal in the choice utility."""
    no_choice: torch.Tensor
    """b ``[K]``: utility of picking nothing."""
    weights: torch.Tensor
    """π ``[K]``: share of each type in the population."""


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-6)


def make_world(config: SlateEnvConfig) -> tuple[ItemPool, UserTypes]:
    """The items and user types of ``config``'s world, on the CPU, from ``config.seed`` only."""
    config.validate()
    g = torch.Generator().manual_seed(int(config.seed))
    n, d, k = config.num_items, config.embedding_dim, config.num_user_types
    embeddings = _unit(torch.randn(n, d, generator=g))
    texts = config.texts()
    if texts is not None:  # the same draws either way, so a text world differs from its generated twin only here
        from rlcore.adapters.slate.text_items import text_item_embeddings

        embeddings = text_item_embeddings(texts, d)
    appeal = torch.randn(n, generator=g)
    # Quality falls with appeal: the items that get picked most easily are not the ones that keep users.
    quality = 0.7 * (-0.6 * appeal + 0.8 * torch.randn(n, generator=g))
    preferences = _unit(torch.randn(k, d, generator=g))
    sensitivity = 3.0 + 3.0 * torch.rand(k, generator=g)
    appeal_weight = 0.5 + torch.rand(k, generator=g)
    no_choice = 1.0 + 1.5 * torch.rand(k, generator=g)
    weights = torch.softmax(0.3 * torch.randn(k, generator=g), 0)
    types = UserTypes(preferences, sensitivity, appeal_weight, no_choice, weights)
    return ItemPool(embeddings, appeal, quality, texts), types


def item_rewards(kind: str, preference: torch.Tensor, items: ItemPool,
                 index: torch.Tensor | None = None) -> torch.Tensor:
    """The reward of picking each item, for users with ``preference [..., d]`` (see the module docstring).

    With ``index [..., J]`` (item indices) the rewards of those items, ``[..., J]``; else of every item,
    ``[..., I]``. The environment pays it and the greedy baseline maximises its expectation: one definition.
    """
    if kind not in REWARDS:
        raise ValueError(f"reward must be one of {', '.join(map(repr, REWARDS))}; got {kind!r}.")
    if index is None:
        embeddings, quality = items.embeddings, items.quality
        match = preference @ embeddings.T
    else:
        embeddings, quality = items.embeddings[index], items.quality[index]
        match = (embeddings * preference.unsqueeze(-2)).sum(-1)
    if kind == "satisfaction":
        return 1.0 + match
    if kind == "click":
        return torch.ones_like(match)
    return quality.expand_as(match).clone()


__all__ = ["ITEM_SOURCES", "REWARDS", "ItemPool", "Reward", "SlateEnvConfig", "UserTypes", "item_rewards", "make_world"]
