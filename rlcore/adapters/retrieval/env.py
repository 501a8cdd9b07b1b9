"""``FanOutRetrieval-v0``: sequential fan-out retrieval behind the batched environment interface.

One episode is one broad intent, drawn uniformly from a split of a :class:`~.catalogue.Catalogue`. At step
``j = 0 .. K−1`` the agent emits the next sub-query embedding; the environment normalises it, retrieves its
top-k items from the catalogue's index and adds them to the episode's set (``K·k`` slots). The reward of the
step is the gain of the composite set reward (:mod:`~.rewards`)::

    r_j = R(S_{j+1}) − R(S_j),   R(∅) = 0,   so   Σ_j r_j = R(S_K)

(the final set's reward, exactly; the tests check it). After K steps the set is complete: the episode
**terminates** (nothing to bootstrap). This is the analogue of an autoregressive fan-out generator: K policy
calls and K index round trips per intent.

Observations are a dict (``N`` rows, ``d`` the embedding dimension)::

    intent       [N, d]   the intent's unit embedding
    retrieved    [N, d]   the mean embedding of the distinct items retrieved so far (0 before the first step)
    last_query   [N, d]   the previous (normalised) sub-query, 0 at the first step
    step         [N, 1]   j / K

so a policy sees what its sub-queries have found so far, not the ground truth. Actions are ``[N, d]`` float
sub-query embeddings, projected onto the box ``[−1, 1]^d`` (the ``action_set``) and then normalised; a zero
vector is refused. ``info`` carries the contract's ``final_obs`` and ``applied_actions``, the step's
``retrieved`` ids ``[N, k]`` and, on the rows that ended, ``episode_metrics``: ``set_reward`` and every term of
:data:`~.rewards.TERMS`.

Seeding: the catalogue is the world; intents come from a generator seeded with ``seed`` and by
``reset(seed=...)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlcore.adapters.retrieval.catalogue import Catalogue
from rlcore.adapters.retrieval.rewards import TERMS, SetRewardConfig, distinct_mask, set_reward
from rlcore.envs.spaces import check_actions
from rlcore.envs.structured import where_rows
from solvers import ActionSet


@dataclass(frozen=True)
class FanOutEnvConfig:
    """The fan-out task on a catalogue."""

    num_subqueries: int = 4
    """K: sub-queries (steps) per intent."""
    top_k: int = 10
    """Items each sub-query retrieves."""
    split: str = "train"
    """Which intents episodes draw from: ``"train"``, ``"test"`` or ``"all"``."""
    reward: SetRewardConfig = field(default_factory=SetRewardConfig)
    """Weights of the composite set reward."""

    def validate(self, num_items: int) -> None:
        if not isinstance(self.num_subqueries, int) or self.num_subqueries < 1:
            raise ValueError(f"num_subqueries must be an integer >= 1, got {self.num_subqueries!r}.")
        if not isinstance(self.top_k, int) or not 1 <= self.top_k <= num_items:
            raise ValueError(f"top_k must be an integer in [1, num_items] = [1, {num_items}], got {self.top_k!r}.")
        self.reward.validate()


def unit(x: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` scaled to unit norm (zero rows stay zero)."""
    return x / x.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def fanout_observation(intent: torch.Tensor, ids: torch.Tensor, items: torch.Tensor, last_query: torch.Tensor,
                       step: torch.Tensor, num_subqueries: int) -> dict[str, torch.Tensor]:
    """The observation of the module docstring, from the set so far ``ids [N, M]`` (-1 for empty slots).

    Shared by the environment and by :class:`~.ppo.FanOutPolicy`'s retrieval loop, so that a policy queried
    outside the environment sees exactly what it saw in training.
    """
    keep = distinct_mask(ids)
    total = (items[ids.clamp(min=0)] * keep[..., None]).sum(1)
    retrieved = total / keep.sum(1, keepdim=True).clamp(min=1).to(total.dtype)
    return {"intent": intent.clone(), "retrieved": retrieved, "last_query": last_query.clone(),
            "step": (step.float() / num_subqueries)[:, None]}


class FanOutRetrievalEnv:
    """``num_envs`` intents at a time, each answered by K sequential sub-queries (see the module docstring).

    Args:
        catalogue: the items, intents, ground truth and index.
        num_envs: intents served in parallel.
        num_subqueries: K (see :class:`FanOutEnvConfig` for this and the next three).
        top_k: items per sub-query.
        split: the intents episodes draw from.
        reward: the composite set reward's weights.
        seed: seed of the intent draws.
        group_size: rows per drawn intent: ``num_envs / group_size`` intents are drawn and each is served on
            ``group_size`` consecutive rows (the groups of a group-relative baseline, as in GRPO).
        device: where observations, rewards and flags live (the index searches where it lives).
    """

    env_id = "FanOutRetrieval-v0"

    def __init__(self, catalogue: Catalogue, num_envs: int = 1, num_subqueries: int = 4, top_k: int = 10,
                 split: str = "train", reward: SetRewardConfig | None = None, seed: int = 0,
                 device: str | torch.device = "cpu", group_size: int = 1) -> None:
        if not isinstance(catalogue, Catalogue):
            raise ValueError(f"catalogue must be a retrieval.Catalogue, got {type(catalogue).__name__}; build one "
                             "with retrieval.synthetic_catalogue(...).")
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}.")
        self.catalogue = catalogue
        self.config = FanOutEnvConfig(num_subqueries, top_k, split, reward or SetRewardConfig())
        self.config.validate(catalogue.index.num_items)
        if not isinstance(group_size, int) or group_size < 1 or num_envs % group_size:
            raise ValueError(f"group_size must be an integer >= 1 that divides num_envs ({num_envs}), got "
                             f"{group_size!r}.")
        self.num_envs, self.device, self.seed = int(num_envs), torch.device(device), int(seed)
        self.group_size = group_size
        self.intent_pool = catalogue.split(split).to(self.device)
        self.items = catalogue.items.to(self.device)
        self.item_aspect = catalogue.item_aspect.to(self.device)
        self.intents = catalogue.intents.to(self.device)
        self.intent_aspects = catalogue.intent_aspects.to(self.device)
        d, c = catalogue.dim, self.config
        self.num_slots = c.num_subqueries * c.top_k
        self.action_set = ActionSet.box(-1.0, 1.0, dim=d).to(self.device)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (d,), np.float32)
        self.observation_space = gym.spaces.Dict({
            "intent": gym.spaces.Box(-1.0, 1.0, (d,), np.float32),
            "retrieved": gym.spaces.Box(-1.0, 1.0, (d,), np.float32),
            "last_query": gym.spaces.Box(-1.0, 1.0, (d,), np.float32),
            "step": gym.spaces.Box(0.0, 1.0, (1,), np.float32)})
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed)
        n = self.num_envs
        self._intent = torch.zeros(n, dtype=torch.long, device=self.device)
        self._ids = torch.full((n, self.num_slots), -1, dtype=torch.long, device=self.device)
        self._last = torch.zeros(n, d, device=self.device)
        self._step = torch.zeros(n, dtype=torch.long, device=self.device)
        self._value = torch.zeros(n, device=self.device)
        self._new_intents(torch.ones(n, dtype=torch.bool, device=self.device))

    @property
    def obs_dim(self) -> int:
        return 3 * self.catalogue.dim + 1

    @property
    def action_dim(self) -> int:
        return self.catalogue.dim

    def _new_intents(self, rows: torch.Tensor) -> None:
        """Draw intents for every row (so the generator advances the same way whichever rows end) and start
        the episodes of ``rows``."""
        draw = torch.randint(0, len(self.intent_pool), (self.num_envs // self.group_size,), generator=self.generator,
                             device=self.device).repeat_interleave(self.group_size)
        self._intent = torch.where(rows, self.intent_pool[draw], self._intent)
        self._ids = self._ids.masked_fill(rows[:, None], -1)
        self._last = self._last.masked_fill(rows[:, None], 0.0)
        self._step = self._step.masked_fill(rows, 0)
        self._value = self._value.masked_fill(rows, 0.0)

    def _obs(self) -> dict[str, torch.Tensor]:
        return fanout_observation(self.intents[self._intent], self._ids, self.items, self._last, self._step,
                                  self.config.num_subqueries)

    def reset(self, seed: int | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        if seed is not None:
            self.generator.manual_seed(int(seed))
        self._new_intents(torch.ones(self.num_envs, dtype=torch.bool, device=self.device))
        return self._obs(), {}

    def check_queries(self, actions: Any) -> torch.Tensor:
        """Raise a ``ValueError`` naming the problem for sub-queries that do not fit; return them projected onto
        the action set, on the device."""
        check_actions(actions, self.action_space, self.num_envs)
        projected = self.action_set.project(actions.to(self.device).float())
        zero = projected.norm(dim=1) < 1e-8
        if zero.any():
            raise ValueError(f"sub-queries must be nonzero vectors (they are normalised); rows "
                             f"{zero.nonzero().flatten().tolist()[:10]} are zero.")
        return projected

    def step(self, actions: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor,
                                                   torch.Tensor, dict[str, Any]]:
        c = self.config
        applied = self.check_queries(actions)
        query = unit(applied)
        _, found = self.catalogue.index.search(query, c.top_k)
        found = found.to(self.device)
        slots = self._step[:, None] * c.top_k + torch.arange(c.top_k, device=self.device)
        self._ids = self._ids.scatter(1, slots, found)
        value, terms = set_reward(self._ids, self.items, self.item_aspect, self.intent_aspects[self._intent],
                                  c.reward)
        reward = value - self._value
        self._value = value
        self._last = query
        self._step = self._step + 1
        terminated = self._step >= c.num_subqueries
        truncated = torch.zeros_like(terminated)
        metrics = {"set_reward": value, **{name: terms[name] for name in TERMS}}
        final_obs = self._obs()
        # Same-step auto-reset: rows that completed their set start a new intent; final_obs keeps the last one.
        self._new_intents(terminated)
        obs = where_rows(terminated, self._obs(), final_obs)
        info = {"final_obs": final_obs, "applied_actions": applied, "retrieved": found, "episode_metrics": metrics}
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        """Nothing to release: the index belongs to the catalogue."""

    def _world_key(self) -> list[Any]:
        cat = self.catalogue.config
        return [cat.num_items, cat.num_clusters, cat.num_intents, cat.dim, cat.seed, self.config.num_subqueries,
                self.config.top_k, self.config.split, self.group_size]

    def state_dict(self) -> dict[str, Any]:
        return {"env_id": self.env_id, "num_envs": self.num_envs, "world": self._world_key(),
                "intent": self._intent.clone(), "ids": self._ids.clone(), "last": self._last.clone(),
                "step": self._step.clone(), "value": self._value.clone(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("env_id") != self.env_id or state.get("num_envs") != self.num_envs:
            raise ValueError(f"environment state is for {state.get('num_envs')} x {state.get('env_id')}, this "
                             f"environment is {self.num_envs} x {self.env_id}.")
        if list(state.get("world", [])) != self._world_key():
            raise ValueError("environment state is from another catalogue or task (config differs); build the env "
                             "with the same catalogue, num_subqueries, top_k and split.")
        for name in ("intent", "ids", "last", "step", "value"):
            setattr(self, f"_{name}", state[name].to(self.device).clone())
        self.generator.set_state(state["generator"])

    def __repr__(self) -> str:
        c = self.config
        return (f"FanOutRetrievalEnv(num_envs={self.num_envs}, num_items={self.catalogue.index.num_items}, "
                f"num_subqueries={c.num_subqueries}, top_k={c.top_k}, split={c.split!r}, device={self.device})")


__all__ = ["FanOutEnvConfig", "FanOutRetrievalEnv", "fanout_observation", "unit"]
