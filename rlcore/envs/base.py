"""The batched environment contract that every algorithm and adapter in rlcore consumes.

A :class:`BatchedEnv` steps ``num_envs`` copies of a task at once; everything crossing the
interface is a torch tensor on ``env.device`` with a leading batch dimension:

==================  ============================  =========================================
call                returns                       shapes / dtypes
==================  ============================  =========================================
``reset(seed)``     ``obs, info``                 ``obs[N, *obs_shape]`` float32
``step(actions)``   ``obs, reward, terminated,``  ``actions[N, A]`` float32 in, ``reward[N]``
                    ``truncated, info``           float32, ``terminated[N]``/``truncated[N]`` bool
==================  ============================  =========================================

**Auto-reset (same step).** When sub-environment ``i`` ends at a step (``terminated[i]`` or
``truncated[i]``), the ``obs[i]`` returned by that very step is already the first observation of
its next episode. The true last observation of the finished episode is in ``info["final_obs"][i]``.
``info["final_obs"]`` is always a full ``[N, *obs_shape]`` tensor equal to ``obs`` on rows that did
not end, so ``info["final_obs"]`` is the correct "next observation" to store for every row.

**Termination versus truncation.** ``terminated`` means the MDP reached a terminal state (no
bootstrapping); ``truncated`` means the episode was cut (a time limit): the value of
``info["final_obs"]`` must still be bootstrapped.

**Actions.** ``action_space`` is a gymnasium ``Box``; ``action_set`` (a :class:`solvers.ActionSet`)
is the exact feasible set, a box or a ball inside it. Actions outside ``action_set`` are projected
onto it before they reach the simulator. Actions of the wrong shape or with NaN/inf raise a
``ValueError``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import torch

from solvers import ActionSet


@runtime_checkable
class BatchedEnv(Protocol):
    """``num_envs`` environments stepped together; torch tensors in and out (see the module docstring)."""

    num_envs: int
    device: torch.device
    observation_space: gym.spaces.Box
    """Space of a single observation."""
    action_space: gym.spaces.Box
    """Space of a single action: the bounding box of ``action_set``."""
    action_set: ActionSet
    """The feasible actions; actions are projected onto it before they are applied."""

    def reset(self, seed: int | None = None) -> tuple[torch.Tensor, dict[str, Any]]: ...

    def step(
        self, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]: ...

    def close(self) -> None: ...


def check_actions(actions: torch.Tensor, num_envs: int, action_dim: int) -> None:
    """Raise a ``ValueError`` naming the problem for an action batch of the wrong shape or with NaN/inf."""
    if not isinstance(actions, torch.Tensor):
        raise ValueError(f"actions must be a torch.Tensor of shape [{num_envs}, {action_dim}], "
                         f"got {type(actions).__name__}.")
    if actions.shape != (num_envs, action_dim):
        raise ValueError(f"actions must have shape [num_envs, action_dim] = [{num_envs}, {action_dim}], "
                         f"got {list(actions.shape)}.")
    if not actions.is_floating_point():
        raise ValueError(f"actions must be a floating-point tensor, got dtype {actions.dtype}.")
    if not torch.isfinite(actions).all():
        bad = (~torch.isfinite(actions)).any(dim=1).nonzero().flatten().tolist()
        raise ValueError(f"actions contain NaN or infinite values (rows {bad}).")
