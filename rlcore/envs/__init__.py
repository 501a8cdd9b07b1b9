"""Batched environments: torch tensors in and out, a batch dimension, a device.

See :mod:`rlcore.envs.base` for the contract (auto-reset, ``final_obs``, termination versus
truncation, action sets) and :func:`make` to build one.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from rlcore.envs.base import BatchedEnv, check_actions
from rlcore.envs.gymnasium_backend import GymnasiumBatchedEnv
from solvers import ActionSet


def make(
    env_id: str,
    num_envs: int = 1,
    seed: int | None = None,
    device: str | torch.device = "cpu",
    action_set: ActionSet | None = None,
    action_bound: float | None = None,
    vectorization: Literal["sync", "async"] = "sync",
    **env_kwargs: Any,
) -> GymnasiumBatchedEnv:
    """Build a :class:`BatchedEnv` of ``num_envs`` copies of the gymnasium task ``env_id``.

    Args:
        env_id: any registered gymnasium id with a Box action space (``"Pendulum-v1"``, ``"Hopper-v5"``...).
        num_envs: number of sub-environments stepped together.
        seed: if given, the environment is reset once with this seed (sub-environment ``i`` gets
            ``seed + i``) so that its first ``reset()`` without a seed continues deterministically.
        device: where observations, rewards and flags are returned.
        action_set: the feasible actions (a box or a ball); defaults to the task's native box.
            CAQL's "Hopper with actions in [-0.25, 0.25]^3" is ``ActionSet.box(-0.25, 0.25)``.
        action_bound: shorthand for ``action_set=ActionSet.box(-action_bound, action_bound)``.
        vectorization: ``"sync"`` (one process, exact checkpoints) or ``"async"`` (one process per env).
        env_kwargs: passed to ``gymnasium.make``.
    """
    if action_bound is not None:
        if action_set is not None:
            raise ValueError("give either action_set or action_bound, not both.")
        if not action_bound > 0:
            raise ValueError(f"action_bound must be > 0, got {action_bound}.")
        action_set = ActionSet.box(-float(action_bound), float(action_bound))
    env = GymnasiumBatchedEnv(env_id, num_envs, device, action_set, vectorization, env_kwargs)
    if seed is not None:
        env.reset(seed=seed)
    return env


__all__ = ["ActionSet", "BatchedEnv", "GymnasiumBatchedEnv", "check_actions", "make"]
