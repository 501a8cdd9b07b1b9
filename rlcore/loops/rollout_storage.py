"""Rollout storage for the on-policy loop: ``T`` steps of ``N`` environments, preallocated on the device.

Observations may be tensors or dicts of tensors, actions real vectors or indices; each field's storage is
allocated at the first step with the shape and dtype it receives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from rlcore.envs.structured import map_obs


@dataclass
class Rollout:
    """``T = num_steps`` steps of ``N = num_envs`` environments, on the env's device.

    ``obs[t]`` is the observation acted on at step t, ``final_obs[t]`` the true next observation (the last
    observation of the episode where it ended at t, ``info["final_obs"]``), so ``next_values`` for
    `rlcore.objectives.gae` are the values of ``final_obs``.
    """

    obs: Any
    """[T, N, *obs_shape] raw observations (a dict of such tensors for dict observations)."""
    actions: torch.Tensor
    """[T, N, *action_shape] actions as sampled by the agent (before the env projects them onto its set)."""
    rewards: torch.Tensor
    """[T, N]"""
    terminated: torch.Tensor
    """[T, N] bool"""
    truncated: torch.Tensor
    """[T, N] bool"""
    final_obs: Any
    """[T, N, *obs_shape] true next observations."""
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    """[T, N, ...] per-step tensors returned by ``explore``."""


_STEP_FIELDS = ("obs", "actions", "rewards", "terminated", "truncated", "final_obs")


class RolloutStorage:
    """Preallocated rollout tensors on the device, filled step by step.

    Each step is copied in (environments may reuse their output buffers) through per-step views made once, so
    a step costs one ``copy_`` per field and no indexing, which is most of the storage's cost with small batches.
    """

    def __init__(self, num_steps: int, num_envs: int, device: torch.device | str) -> None:
        self.num_steps, self.num_envs, self.device = num_steps, num_envs, torch.device(device)
        self.rollout: Rollout | None = None
        self._views: list[tuple[Any, ...]] = []
        self._extra_views: dict[str, list[torch.Tensor]] = {}

    def _storage(self, value: torch.Tensor) -> torch.Tensor:
        return torch.zeros((self.num_steps, *value.shape), dtype=value.dtype, device=self.device)

    def _allocate(self, step: dict[str, Any]) -> None:
        fields = {name: map_obs(self._storage, step[name]) for name in _STEP_FIELDS}
        self.rollout = Rollout(**fields)
        per_field = [_step_views(fields[name], self.num_steps) for name in _STEP_FIELDS]
        self._views = list(zip(*per_field, strict=True))
        # Tensor observations (the common case) take the direct path: six copies, nothing else per step.
        self._flat = not any(isinstance(fields[name], dict) for name in _STEP_FIELDS)

    def add(self, t: int, obs: Any, actions: torch.Tensor, reward: torch.Tensor, terminated: torch.Tensor,
            truncated: torch.Tensor, final_obs: Any, extras: dict[str, torch.Tensor]) -> None:
        if self.rollout is None:
            self._allocate(_as_step(obs, actions, reward, terminated, truncated, final_obs))
        if self._flat:
            obs_view, actions_view, reward_view, terminated_view, truncated_view, final_obs_view = self._views[t]
            obs_view.copy_(obs)
            actions_view.copy_(actions)
            reward_view.copy_(reward)
            terminated_view.copy_(terminated)
            truncated_view.copy_(truncated)
            final_obs_view.copy_(final_obs)
        else:
            self._copy_structured(t, _as_step(obs, actions, reward, terminated, truncated, final_obs))
        for key, value in extras.items():
            if key not in self._extra_views:
                storage = self._storage(value)
                self.rollout.extras[key] = storage
                self._extra_views[key] = list(storage)
            self._extra_views[key][t].copy_(value)

    def _copy_structured(self, t: int, step: dict[str, Any]) -> None:
        for view, name in zip(self._views[t], _STEP_FIELDS, strict=True):
            value = step[name]
            if isinstance(view, dict):
                for key, sub in view.items():
                    sub.copy_(value[key])
            else:
                view.copy_(value)


def _as_step(obs: Any, actions: torch.Tensor, reward: torch.Tensor, terminated: torch.Tensor,
             truncated: torch.Tensor, final_obs: Any) -> dict[str, Any]:
    return {"obs": obs, "actions": actions, "rewards": reward, "terminated": terminated, "truncated": truncated,
            "final_obs": final_obs}


def _step_views(storage: Any, steps: int) -> list[Any]:
    """``storage[t]`` for every t, made once (for a dict, a dict of the entries' views per step)."""
    if isinstance(storage, dict):
        per_key = {key: list(value) for key, value in storage.items()}
        return [{key: views[t] for key, views in per_key.items()} for t in range(steps)]
    return list(storage)


def episode_statistics(rewards: torch.Tensor, done: torch.Tensor, episode_return: torch.Tensor,
                       episode_length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                              torch.Tensor, torch.Tensor]:
    """Returns and lengths of the episodes that ended in a rollout, without a loop over its steps.

    Step ``t`` of env ``n`` belongs to that env's episode number ``k = (done[:t, n]).sum()`` within the rollout;
    episode 0 continues the one in progress (``episode_return``, ``episode_length`` carried in), and those with
    ``k < done[:, n].sum()`` ended. The sums add the rewards in time order, as a step-by-step running sum would.

    Args:
        rewards: ``[T, N]``.
        done: ``[T, N]`` bool, terminated or truncated.
        episode_return: ``[N]`` return so far of the episodes in progress at the rollout's start.
        episode_length: ``[N]`` integer length so far of those episodes.

    Returns:
        (ended_count, ended_return_sum, ended_length_sum, episode_return, episode_length): the number of ended
        episodes and the sums of their returns and lengths (0-dim tensors), and the running return and length
        of the episodes in progress at the rollout's end (``[N]``).
    """
    steps, n = rewards.shape
    ends = done.long()
    episode = ends.cumsum(0) - ends  # episode index of each step within the rollout
    ended = ends.sum(0)  # [N]: episodes 0 .. ended - 1 of env n ended in this rollout
    totals = torch.zeros(steps + 1, n, dtype=rewards.dtype, device=rewards.device)
    totals[0] = episode_return
    totals.scatter_add_(0, episode, rewards)
    lengths = torch.zeros(steps + 1, n, dtype=episode_length.dtype, device=rewards.device)
    lengths[0] = episode_length
    lengths.scatter_add_(0, episode, torch.ones_like(episode, dtype=episode_length.dtype))
    finished = torch.arange(steps + 1, device=rewards.device)[:, None] < ended
    ended_return = (totals * finished).sum()
    ended_length = (lengths * finished).sum()
    index = ended[None]
    return (ended.sum(), ended_return, ended_length, totals.gather(0, index)[0], lengths.gather(0, index)[0])

