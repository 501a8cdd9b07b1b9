"""``CandidateChoice-v0``: a torch-native task whose action set changes every step (a candidate set).

Each episode has a hidden-in-plain-sight user vector ``u`` (unit norm, ``embedding_dim``); each step offers
between ``min_candidates`` and ``max_candidates`` random unit candidate embeddings (the rest of the
``max_candidates`` slots are padding, masked out) and the agent picks one by index. The reward is the
chosen candidate's affinity ``<u, c>``; an episode is cut after ``episode_length`` steps (truncation, never
termination). The observation is a dict::

    {"user": [N, D], "candidates": [N, K_max, D], "candidate_mask": [N, K_max] bool}

At the end of an episode ``info["episode_metrics"]["hit_rate"]`` is the fraction of its steps where the best
candidate on offer was picked. The best policy (argmax of ``<u, c>`` over the offered candidates) scores a
hit rate of 1; a uniform policy ``E[1 / k]``. It is the smallest environment that exercises the whole
structured part of the :mod:`rlcore.envs.base` contract: dict observations through auto-reset and
``final_obs``, masked candidate actions, per-episode metrics and exact resume.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlcore.envs.spaces import CandidateSet, check_actions
from rlcore.envs.structured import where_rows


class CandidateChoiceEnv:
    """``num_envs`` copies of ``CandidateChoice-v0`` stepped as tensors on ``device`` (see the module docstring)."""

    env_id = "CandidateChoice-v0"

    def __init__(self, num_envs: int = 1, device: str | torch.device = "cpu", action_set: Any = None,
                 max_candidates: int = 8, min_candidates: int = 2, embedding_dim: int = 4,
                 episode_length: int = 10) -> None:
        if action_set is not None:
            raise ValueError("CandidateChoice-v0 has candidate-set actions; action_set/action_bound constrain "
                             "Box actions only. Leave them unset.")
        if num_envs < 1 or episode_length < 1 or embedding_dim < 1:
            raise ValueError(f"need num_envs, episode_length and embedding_dim >= 1, got {num_envs}, "
                             f"{episode_length}, {embedding_dim}.")
        if not 1 <= min_candidates <= max_candidates:
            raise ValueError(f"need 1 <= min_candidates <= max_candidates, got {min_candidates} and {max_candidates}.")
        self.num_envs, self.device = int(num_envs), torch.device(device)
        self.max_candidates, self.min_candidates = int(max_candidates), int(min_candidates)
        self.embedding_dim, self.episode_length = int(embedding_dim), int(episode_length)
        self.action_set = None
        self.action_space = CandidateSet(self.max_candidates, self.embedding_dim)
        d, k = self.embedding_dim, self.max_candidates
        self.observation_space = gym.spaces.Dict({
            "user": gym.spaces.Box(-1.0, 1.0, (d,), np.float32),
            "candidates": gym.spaces.Box(-1.0, 1.0, (k, d), np.float32),
            "candidate_mask": gym.spaces.Box(0, 1, (k,), np.bool_)})
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))  # follows torch's global seed
        n = self.num_envs
        self._user = torch.zeros(n, d, device=self.device)
        self._candidates = torch.zeros(n, k, d, device=self.device)
        self._mask = torch.ones(n, k, dtype=torch.bool, device=self.device)
        self._elapsed = torch.zeros(n, dtype=torch.long, device=self.device)
        self._hits = torch.zeros(n, device=self.device)

    @property
    def obs_dim(self) -> int:
        return self.embedding_dim * (1 + self.max_candidates) + self.max_candidates

    @property
    def action_dim(self) -> int:
        return self.max_candidates

    # ------------------------------------------------------------------ dynamics
    def _unit(self, *shape: int) -> torch.Tensor:
        x = torch.randn(*shape, self.embedding_dim, generator=self.generator, device=self.device)
        return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-6)

    def _offer(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Fresh candidates and a mask of the first ``k`` slots, ``k`` uniform in [min, max] per row."""
        n, k = self.num_envs, self.max_candidates
        count = torch.randint(self.min_candidates, k + 1, (n,), generator=self.generator, device=self.device)
        mask = torch.arange(k, device=self.device) < count[:, None]
        return self._unit(n, k), mask

    def _obs(self) -> dict[str, torch.Tensor]:
        return {"user": self._user.clone(), "candidates": self._candidates.clone(),
                "candidate_mask": self._mask.clone()}

    def reset(self, seed: int | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        if seed is not None:
            self.generator.manual_seed(int(seed))
        self._user = self._unit(self.num_envs)
        self._candidates, self._mask = self._offer()
        self._elapsed.zero_()
        self._hits.zero_()
        return self._obs(), {}

    def step(self, actions: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor,
                                                   torch.Tensor, dict[str, Any]]:
        check_actions(actions, self.action_space, self.num_envs, {"candidate_mask": self._mask})
        actions = actions.to(self.device).long()
        affinity = (self._candidates @ self._user.unsqueeze(-1)).squeeze(-1)  # [N, K]
        reward = affinity.gather(1, actions[:, None]).squeeze(1)
        best = affinity.masked_fill(~self._mask, -torch.inf).max(dim=1).values
        self._hits += (reward >= best).float()
        self._elapsed += 1
        truncated = self._elapsed >= self.episode_length
        terminated = torch.zeros_like(truncated)
        hit_rate = self._hits / self._elapsed.float()

        self._candidates, self._mask = self._offer()
        final_obs = self._obs()
        # Same-step auto-reset: rows that ended start a new episode with a new user and a new offer.
        new_user = self._unit(self.num_envs)
        new_candidates, new_mask = self._offer()
        self._user = torch.where(truncated[:, None], new_user, self._user)
        self._candidates = torch.where(truncated[:, None, None], new_candidates, self._candidates)
        self._mask = torch.where(truncated[:, None], new_mask, self._mask)
        self._elapsed.masked_fill_(truncated, 0)
        self._hits.masked_fill_(truncated, 0.0)
        obs = where_rows(truncated, self._obs(), final_obs)
        info = {"final_obs": final_obs, "applied_actions": actions, "episode_metrics": {"hit_rate": hit_rate}}
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        """Nothing to release: the state is a few tensors."""

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"env_id": self.env_id, "num_envs": self.num_envs, "user": self._user.clone(),
                "candidates": self._candidates.clone(), "mask": self._mask.clone(),
                "elapsed": self._elapsed.clone(), "hits": self._hits.clone(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("env_id") != self.env_id or state.get("num_envs") != self.num_envs:
            raise ValueError(f"environment state is for {state.get('num_envs')} x {state.get('env_id')}, "
                             f"this environment is {self.num_envs} x {self.env_id}.")
        for name, key in (("_user", "user"), ("_candidates", "candidates"), ("_mask", "mask"),
                          ("_elapsed", "elapsed"), ("_hits", "hits")):
            setattr(self, name, state[key].to(self.device).clone())
        self.generator.set_state(state["generator"])

    def __repr__(self) -> str:
        return (f"CandidateChoiceEnv(num_envs={self.num_envs}, device={self.device}, "
                f"max_candidates={self.max_candidates}, embedding_dim={self.embedding_dim})")
