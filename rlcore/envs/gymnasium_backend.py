"""A :class:`~rlcore.envs.base.BatchedEnv` over gymnasium's vector environments (CPU simulators).

Sub-environments run in gymnasium's ``SyncVectorEnv`` (default) or ``AsyncVectorEnv`` with the
same-step auto-reset mode, so the contract of :mod:`rlcore.envs.base` holds as is; this class only
converts between numpy and torch, validates and projects actions, and carries the action set.

With sync vectorization, :meth:`GymnasiumBatchedEnv.step` steps the sub-environments itself (the same
step/auto-reset sequence as ``SyncVectorEnv`` in same-step mode) instead of calling
``SyncVectorEnv.step``: that call merges every sub-environment's info dict and deep-copies the batch on
each step, work that rlcore never reads and that costs as much as the wrapper around it (~15 µs of
~100 µs for one MuJoCo step). Resets still go through the vector env, so seeding is unchanged.
"""

from __future__ import annotations

from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

from rlcore.envs import snapshot, spaces
from rlcore.envs.spaces import check_actions
from solvers import ActionSet


def _make_single(env_id: str, env_kwargs: dict[str, Any]) -> gym.Env:
    return gym.make(env_id, **env_kwargs)


class GymnasiumBatchedEnv:
    """``num_envs`` copies of a gymnasium task behind the batched torch interface."""

    def __init__(
        self,
        env_id: str,
        num_envs: int = 1,
        device: str | torch.device = "cpu",
        action_set: ActionSet | None = None,
        vectorization: Literal["sync", "async"] = "sync",
        env_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}.")
        if vectorization not in ("sync", "async"):
            raise ValueError(f"vectorization must be 'sync' or 'async', got {vectorization!r}.")
        env_kwargs = dict(env_kwargs or {})
        probe = _probe(env_id, env_kwargs)
        self.env_id = env_id
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.observation_space: gym.spaces.Box = probe.observation_space
        native = probe.action_space
        probe.close()

        if isinstance(native, gym.spaces.Discrete):
            # Discrete tasks (CartPole-v1, ...): index actions, nothing to project.
            if action_set is not None:
                raise ValueError(f"{env_id} has a Discrete action space; action_set/action_bound constrain Box "
                                 "actions only. Leave them unset.")
            self.action_set = None
            self.action_space = native
        else:
            native_low = torch.as_tensor(native.low, dtype=torch.float32)
            native_high = torch.as_tensor(native.high, dtype=torch.float32)
            if action_set is None:
                action_set = ActionSet.box(native_low, native_high)
            action_set = action_set.with_dim(native.shape[0]).intersect_box(native_low, native_high)
            self.action_set = action_set.to(self.device)
            self.action_space = gym.spaces.Box(
                low=np.maximum(action_set.low.numpy(), native.low).astype(np.float32),
                high=np.minimum(action_set.high.numpy(), native.high).astype(np.float32),
                dtype=np.float32,
            )
            self._native_low = native_low.numpy()
            self._native_high = native_high.numpy()
            self._set_low = self.action_set.low.to(torch.float32)
            self._set_high = self.action_set.high.to(torch.float32)

        factories = [lambda: _make_single(env_id, env_kwargs) for _ in range(num_envs)]
        vector_cls = SyncVectorEnv if vectorization == "sync" else AsyncVectorEnv
        self.vectorization = vectorization
        self._vector = vector_cls(factories, autoreset_mode=AutoresetMode.SAME_STEP)

    @property
    def action_dim(self) -> int:
        return spaces.action_dim(self.action_space)

    @property
    def obs_dim(self) -> int:
        return spaces.obs_dim(self.observation_space)

    def _to_torch(self, array: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        # ``from_numpy`` shares memory, which is safe: every array converted here is a fresh copy (gymnasium
        # returns copies, the sync path below fills new arrays), or the cast to ``dtype`` copies it anyway.
        tensor = torch.from_numpy(np.asarray(array))
        if tensor.dtype != dtype:
            tensor = tensor.to(dtype)
        return tensor if self.device.type == "cpu" else tensor.to(self.device)

    def reset(self, seed: int | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        """Reset every sub-environment; sub-environment ``i`` is seeded with ``seed + i``."""
        obs, _ = self._vector.reset(seed=seed)
        return self._to_torch(obs), {}

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                   dict[str, Any]]:
        check_actions(actions, self.action_space, self.num_envs)
        if self.action_set is None:  # discrete
            applied = actions
            applied_np = actions.cpu().numpy()
        elif self.action_set.kind == "box":
            actions = actions.to(self.device, torch.float32)
            # One clamp to the box, which already lies in the native box (its float32 corners are the
            # intersection), so no further clip is needed.
            applied = torch.clamp(actions, self._set_low, self._set_high)
            applied_np = applied.cpu().numpy()
        else:
            applied = self.action_set.project(actions.to(self.device, torch.float32))
            # The ball lies in the native box; the clip only removes float round-off at its edges.
            applied_np = np.clip(applied.cpu().numpy(), self._native_low, self._native_high)
        if self.vectorization == "sync":
            obs, reward, terminated, truncated, final_rows, final_list = self._step_sync(applied_np)
        else:
            obs, reward, terminated, truncated, info = self._vector.step(applied_np)
            final_rows = np.flatnonzero(info["_final_obs"]) if "final_obs" in info else ()
            final_list = [info["final_obs"][index] for index in final_rows]
        obs_t = self._to_torch(obs)
        if len(final_rows):
            final_obs = obs_t.clone()
            for index, last in zip(final_rows, final_list, strict=True):
                final_obs[index] = self._to_torch(last)
        else:
            # No episode ended: final_obs equals obs, and nothing below writes to either, so share it.
            final_obs = obs_t
        return (
            obs_t,
            self._to_torch(reward),
            self._to_torch(terminated, torch.bool),
            self._to_torch(truncated, torch.bool),
            {"final_obs": final_obs, "applied_actions": applied},
        )

    def _step_sync(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                      list[int], list[np.ndarray]]:
        """``SyncVectorEnv.step`` in same-step auto-reset mode, without merging the sub-envs' info dicts.

        Returns new arrays (float32 observations and rewards, bool terminations and truncations), the rows
        whose episode ended and the last observation of each of those episodes.
        """
        n = self.num_envs
        # float32 buffers: the assignments below round exactly as the cast to torch.float32 would.
        obs = np.empty((n, *self.observation_space.shape), dtype=np.float32)
        reward = np.empty(n, dtype=np.float32)
        terminated = np.empty(n, dtype=np.bool_)
        truncated = np.empty(n, dtype=np.bool_)
        final_rows: list[int] = []
        final_list: list[np.ndarray] = []
        for index, env in enumerate(self._vector.envs):
            env_obs, reward[index], terminated[index], truncated[index], _ = env.step(actions[index])
            if terminated[index] or truncated[index]:
                final_rows.append(index)
                final_list.append(np.array(env_obs))  # a copy, in case reset() reuses the env's array
                env_obs, _ = env.reset()
            obs[index] = env_obs
        return obs, reward, terminated, truncated, final_rows, final_list

    def close(self) -> None:
        self._vector.close()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The simulator state of every sub-environment (sync vectorization only)."""
        if self.vectorization != "sync":
            raise ValueError("only vectorization='sync' environments can be checkpointed exactly.")
        return {"env_id": self.env_id, "envs": [snapshot.capture(env) for env in self._vector.envs]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["env_id"] != self.env_id or len(state["envs"]) != self.num_envs:
            raise ValueError(f"environment state is for {len(state['envs'])} x {state['env_id']}, "
                             f"this environment is {self.num_envs} x {self.env_id}.")
        for env, env_state in zip(self._vector.envs, state["envs"], strict=True):
            snapshot.restore(env, env_state)

    def __repr__(self) -> str:
        return (f"GymnasiumBatchedEnv({self.env_id!r}, num_envs={self.num_envs}, device={self.device}, "
                f"action_set={self.action_set}, vectorization={self.vectorization!r})")


def _probe(env_id: str, env_kwargs: dict[str, Any]) -> gym.Env:
    """Build one environment to read its spaces, turning gymnasium's errors into clear ValueErrors."""
    try:
        env = gym.make(env_id, **env_kwargs)
    except gym.error.Error as error:
        from rlcore.envs.torch_envs import TORCH_ENVS

        if env_id in TORCH_ENVS:
            raise ValueError(f"{env_id!r} is a task of the torch backend, not a gymnasium id: use backend='torch' "
                             "or 'auto' (`--backend torch`).") from error
        known = sorted(gym.registry)
        close = [name for name in known if env_id.split("-")[0].lower() in name.lower()][:8]
        hint = f" Similar ids: {', '.join(close)}." if close else ""
        reason = str(error).strip()
        reason += "" if reason.endswith((".", "?", "!")) else "."
        raise ValueError(f"unknown or unavailable environment id {env_id!r}: {reason}{hint}") from error
    if not isinstance(env.action_space, (gym.spaces.Box, gym.spaces.Discrete)):
        env.close()
        raise ValueError(f"{env_id} has a {type(env.action_space).__name__} action space; the gymnasium backend "
                         "takes Box and Discrete action spaces.")
    if not isinstance(env.observation_space, gym.spaces.Box):
        env.close()
        raise ValueError(f"{env_id} has a {type(env.observation_space).__name__} observation space; rlcore "
                         "environments need a Box observation space.")
    return env
