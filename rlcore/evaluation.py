"""The evaluation protocol: a deterministic policy, a separate environment, N whole episodes.

Each of the ``N`` episodes runs in its own sub-environment of a fresh batched environment reset
with a fixed evaluation seed, and only the first episode of each sub-environment counts, so the
estimate is not biased towards short episodes and is the same for the same policy every time.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rlcore.envs.base import BatchedEnv


@torch.no_grad()
def evaluate(policy: Callable[[torch.Tensor], torch.Tensor], env: BatchedEnv, seed: int,
             max_steps: int = 100_000) -> torch.Tensor:
    """Undiscounted return of one episode per sub-environment of ``env``, as a ``[num_envs]`` tensor.

    ``policy`` maps an observation batch to an action batch (deterministic, e.g. ``agent.act(obs,
    deterministic=True)``).
    """
    obs, _ = env.reset(seed=seed)
    returns = torch.zeros(env.num_envs, device=env.device)
    running = torch.ones(env.num_envs, dtype=torch.bool, device=env.device)
    for _ in range(max_steps):
        obs, reward, terminated, truncated, _ = env.step(policy(obs))
        returns += reward * running
        running &= ~(terminated | truncated)
        if not running.any():
            break
    return returns
