"""The evaluation protocol: a deterministic policy, a separate environment, N whole episodes.

Each episode runs in its own sub-environment of a batched environment reset with a fixed evaluation seed,
and only the first episode of each sub-environment counts, so the estimate is not biased towards short
episodes and is the same for the same policy every time. When more episodes are asked for than the
environment has sub-environments, it is reset again (seed ``seed + k * num_envs`` for round ``k``), so sub-
environment ``i`` of round ``k`` always plays the episode seeded ``seed + k * num_envs + i``.

The reported spread is the **population standard deviation** of the episode returns (``ddof = 0``, as
Stable-Baselines3's ``evaluate_policy``; 0 for one episode): :func:`summarize` is the one definition that
training logs, ``rlcore eval``, the benchmarks and the README use.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from rlcore.envs.base import BatchedEnv


def summarize(returns: torch.Tensor | Sequence[float]) -> tuple[float, float]:
    """``(mean, population std)`` of episode returns: the one spread rlcore reports everywhere."""
    values = torch.as_tensor(returns, dtype=torch.float64).flatten()
    if values.numel() == 0:
        return math.nan, math.nan
    return float(values.mean()), float(values.std(correction=0))


@dataclass
class EvaluationResult:
    """Episode returns and the environment's per-episode metrics, one entry per evaluated episode."""

    returns: torch.Tensor
    """``[episodes]`` undiscounted returns."""
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    """name -> ``[episodes]``, from ``info["episode_metrics"]`` at each episode's end."""
    seeds: list[int] = field(default_factory=list)
    """The reset seed of each round (sub-environment ``i`` of a round reset with seed ``s`` plays seed ``s + i``)."""


@torch.no_grad()
def evaluate_episodes(policy: Callable[[Any], torch.Tensor], env: BatchedEnv, seed: int, episodes: int | None = None,
                      max_steps: int = 100_000) -> EvaluationResult:
    """Play ``episodes`` (default: ``env.num_envs``) whole episodes with ``policy`` (see the module docstring)."""
    n = env.num_envs
    episodes = n if episodes is None else int(episodes)
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}.")
    returns: list[torch.Tensor] = []
    metrics: dict[str, list[torch.Tensor]] = {}
    seeds = []
    for round_index in range(math.ceil(episodes / n)):
        round_seed = seed + round_index * n
        seeds.append(round_seed)
        round_returns, round_metrics = _one_round(policy, env, round_seed, max_steps)
        take = min(n, episodes - round_index * n)
        returns.append(round_returns[:take])
        for key, value in round_metrics.items():
            metrics.setdefault(key, []).append(value[:take])
    return EvaluationResult(torch.cat(returns), {k: torch.cat(v) for k, v in metrics.items()}, seeds)


def _one_round(policy: Callable[[Any], torch.Tensor], env: BatchedEnv, seed: int,
               max_steps: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    obs, _ = env.reset(seed=seed)
    returns = torch.zeros(env.num_envs, device=env.device)
    running = torch.ones(env.num_envs, dtype=torch.bool, device=env.device)
    metrics: dict[str, torch.Tensor] = {}
    for _ in range(max_steps):
        obs, reward, terminated, truncated, info = env.step(policy(obs))
        returns += reward * running
        ended = running & (terminated | truncated)
        for key, value in info.get("episode_metrics", {}).items():
            value = value.to(returns.device, torch.float32)
            metrics[key] = torch.where(ended, value, metrics.get(key, torch.full_like(value, math.nan)))
        running &= ~(terminated | truncated)
        if not running.any():
            break
    return returns, metrics


@torch.no_grad()
def evaluate(policy: Callable[[Any], torch.Tensor], env: BatchedEnv, seed: int,
             max_steps: int = 100_000) -> torch.Tensor:
    """Undiscounted return of one episode per sub-environment of ``env``, as a ``[num_envs]`` tensor.

    ``policy`` maps an observation batch to an action batch (deterministic, e.g. ``agent.act(obs,
    deterministic=True)``). :func:`evaluate_episodes` also returns the environment's per-episode metrics.
    """
    return evaluate_episodes(policy, env, seed, max_steps=max_steps).returns


__all__ = ["EvaluationResult", "evaluate", "evaluate_episodes", "summarize"]
