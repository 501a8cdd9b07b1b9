"""The batched environment contract that every algorithm and adapter in rlcore consumes.

A :class:`BatchedEnv` steps ``num_envs`` copies of a task at once; everything crossing the
interface is a torch tensor (or a dict of tensors) on ``env.device`` with a leading batch dimension ``N``:

==================  ============================  =========================================================
call                returns                       shapes / dtypes
==================  ============================  =========================================================
``reset(seed)``     ``obs, info``                 ``obs``: ``[N, *obs_shape]`` float32, or a dict of ``[N, ...]``
``step(actions)``   ``obs, reward, terminated,``  ``actions``: see below; ``reward[N]`` float32,
                    ``truncated, info``           ``terminated[N]`` / ``truncated[N]`` bool
==================  ============================  =========================================================

**Specs.** ``observation_space`` is a ``gym.spaces.Box`` or a ``gym.spaces.Dict`` of Boxes (the space of one
observation, without the batch dimension); ``action_space`` is one of (see :mod:`rlcore.envs.spaces`):

* a ``gym.spaces.Box`` of any shape ``S``: actions ``[N, *S]`` float32. Flat boxes ``[N, A]`` carry an
  ``action_set`` (a :class:`solvers.ActionSet`: a box or a ball inside the native box) and actions outside it
  are projected onto it before they reach the simulator; shaped ones (an image-sized ``[N, C, H, W]`` step of
  a denoising chain) may have ``action_set = None``;
* ``gym.spaces.Discrete(n)``: actions ``[N]`` int64 in ``[0, n)``; ``action_set`` is None;
* :class:`~rlcore.envs.spaces.CandidateSet`: the observation dict carries candidate embeddings
  ``[N, K_max, D]`` and a ``[N, K_max]`` bool mask of those on offer; actions ``[N]`` int64 must index a
  candidate on offer.

Actions of the wrong shape or dtype, with NaN/inf, out of range, or pointing at a candidate not on offer raise
a ``ValueError``. ``obs_dim`` is the flat size of one observation and ``action_dim`` the width of a policy head
(:func:`~rlcore.envs.spaces.obs_dim`, :func:`~rlcore.envs.spaces.action_dim`).

**Auto-reset (same step).** When sub-environment ``i`` ends at a step (``terminated[i]`` or
``truncated[i]``), the ``obs[i]`` returned by that very step is already the first observation of
its next episode. The true last observation of the finished episode is in ``info["final_obs"][i]``
(for dict observations, every entry). ``info["final_obs"]`` is always a full batch equal to ``obs`` on rows
that did not end, so ``info["final_obs"]`` is the correct "next observation" to store for every row.
``info["applied_actions"]`` holds the actions as applied (after projection onto the action set).

**Termination versus truncation.** ``terminated`` means the MDP reached a terminal state (no
bootstrapping); ``truncated`` means the episode was cut (a time limit): the value of
``info["final_obs"]`` must still be bootstrapped.

**Per-episode metrics.** An environment may report metrics of an episode when it ends, in
``info["episode_metrics"]``: a dict of ``[N]`` float tensors read on the rows that ended at that step (for
example coverage or a KL). The run session logs them in training and in every evaluation.

**Exact resume.** ``state_dict()`` returns everything needed to continue exactly (simulator state, step
counters, generator states) and ``load_state_dict(state)`` restores it into an environment built the same way.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import torch

from rlcore.envs.spaces import check_actions
from solvers import ActionSet


@runtime_checkable
class BatchedEnv(Protocol):
    """``num_envs`` environments stepped together; torch tensors in and out (see the module docstring)."""

    num_envs: int
    device: torch.device
    observation_space: gym.Space
    """Space of a single observation: a Box, or a Dict of Boxes."""
    action_space: gym.Space
    """Space of a single action: a Box (for a flat Box, the bounding box of ``action_set``), a Discrete or a
    CandidateSet."""
    action_set: ActionSet | None
    """The feasible actions of a flat Box action space (projected onto before they are applied); else None."""

    @property
    def obs_dim(self) -> int:
        """Flat size of one observation (:func:`rlcore.envs.spaces.obs_dim`)."""
        ...

    @property
    def action_dim(self) -> int:
        """Width of a policy head (:func:`rlcore.envs.spaces.action_dim`)."""
        ...

    def reset(self, seed: int | None = None) -> tuple[Any, dict[str, Any]]: ...

    def step(self, actions: torch.Tensor) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


__all__ = ["BatchedEnv", "check_actions"]
