"""Batched environments: torch tensors in and out, a batch dimension, a device.

See :mod:`rlcore.envs.base` for the contract (auto-reset, ``final_obs``, termination versus
truncation, action sets) and :func:`make` to build one. Three backends implement it:

* ``"gymnasium"`` (:mod:`rlcore.envs.gymnasium_backend`): gymnasium's vector envs on the CPU, any id;
* ``"torch"`` (:mod:`rlcore.envs.torch_envs`): Pendulum-v1, MountainCarContinuous-v0, PointMass-v0 and
  the candidate-set task CandidateChoice-v0 (:mod:`rlcore.envs.candidate_choice`) as batched tensor code on
  any device;
* ``"mjwarp"`` (:mod:`rlcore.envs.mjwarp`): gymnasium's v5 MuJoCo tasks on MuJoCo Warp (extra ``gpu``).
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from rlcore.envs import spaces, structured
from rlcore.envs.base import BatchedEnv
from rlcore.envs.candidate_choice import CandidateChoiceEnv
from rlcore.envs.gymnasium_backend import GymnasiumBatchedEnv
from rlcore.envs.spaces import CandidateSet, check_actions
from rlcore.envs.torch_envs import TORCH_ENVS, TensorBatchedEnv, make_torch_env
from solvers import ActionSet

BACKENDS = ("auto", "gymnasium", "torch", "mjwarp")
"""Values of :func:`make`'s ``backend`` argument."""


def make(
    env_id: str,
    num_envs: int = 1,
    seed: int | None = None,
    device: str | torch.device = "cpu",
    action_set: ActionSet | None = None,
    action_bound: float | None = None,
    vectorization: Literal["sync", "async"] = "sync",
    backend: Literal["auto", "gymnasium", "torch", "mjwarp"] = "auto",
    **env_kwargs: Any,
) -> BatchedEnv:
    """Build a :class:`BatchedEnv` of ``num_envs`` copies of the task ``env_id``.

    Args:
        env_id: any registered gymnasium id with a Box or Discrete action space (``"Pendulum-v1"``,
            ``"Hopper-v5"``, ``"CartPole-v1"``...), or a torch-backend id (``"CandidateChoice-v0"``).
        num_envs: number of sub-environments stepped together.
        seed: if given, the environment is reset once with this seed (sub-environment ``i`` gets
            ``seed + i``) so that its first ``reset()`` without a seed continues deterministically.
        device: where observations, rewards and flags are returned.
        action_set: the feasible actions (a box or a ball); defaults to the task's native box.
            CAQL's "Hopper with actions in [-0.25, 0.25]^3" is ``ActionSet.box(-0.25, 0.25)``.
        action_bound: shorthand for ``action_set=ActionSet.box(-action_bound, action_bound)``.
        vectorization: ``"sync"`` (one process, exact checkpoints) or ``"async"`` (one process per env);
            gymnasium backend only.
        backend: ``"gymnasium"``, ``"torch"``, ``"mjwarp"``, or ``"auto"``: on the CPU, gymnasium for
            every id it registers (so seeds give gymnasium's exact initial states, as before) and torch
            for torch-only ids (``PointMass-v0``); on an accelerator, torch for the ids it implements,
            on CUDA mjwarp for the MuJoCo ids it implements when ``mujoco_warp`` is installed, else gymnasium.
        env_kwargs: passed to ``gymnasium.make`` (gymnasium backend) or to the task's constructor.
    """
    if action_bound is not None:
        if action_set is not None:
            raise ValueError("give either action_set or action_bound, not both.")
        if not action_bound > 0:
            raise ValueError(f"action_bound must be > 0, got {action_bound}.")
        action_set = ActionSet.box(-float(action_bound), float(action_bound))
    backend = _pick_backend(env_id, torch.device(device), backend)
    if backend != "gymnasium" and vectorization != "sync":
        raise ValueError(f"vectorization={vectorization!r} applies to the gymnasium backend only; the "
                         f"{backend} backend steps all environments in one batch. Leave vectorization='sync'.")
    if backend == "gymnasium":
        env = GymnasiumBatchedEnv(env_id, num_envs, device, action_set, vectorization, env_kwargs)
    elif backend == "torch":
        env = make_torch_env(env_id, num_envs, device, action_set, **env_kwargs)
    else:
        from rlcore.envs.mjwarp import make_mjwarp_env

        env = make_mjwarp_env(env_id, num_envs, device, action_set, **env_kwargs)
    if seed is not None:
        env.reset(seed=seed)
    return env


def _pick_backend(env_id: str, device: torch.device, backend: str) -> str:
    """Resolve ``backend="auto"`` (see :func:`make`) and check the name."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}.")
    if backend != "auto":
        return backend
    if env_id in TORCH_ENVS and (device.type != "cpu" or env_id not in _gymnasium_ids()):
        return "torch"
    if device.type == "cuda":  # warp's devices are the CPU and CUDA GPUs
        from rlcore.envs.mjwarp import MJWARP_ENVS, mujoco_warp_available

        if env_id in MJWARP_ENVS and mujoco_warp_available():
            return "mjwarp"
    return "gymnasium"


def _gymnasium_ids() -> set[str]:
    import gymnasium as gym

    return set(gym.registry)


__all__ = ["BACKENDS", "TORCH_ENVS", "ActionSet", "BatchedEnv", "CandidateChoiceEnv", "CandidateSet",
           "GymnasiumBatchedEnv", "TensorBatchedEnv", "check_actions", "make", "spaces", "structured"]
